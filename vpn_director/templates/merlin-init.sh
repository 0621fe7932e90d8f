#!/bin/sh
# Entware init script for vpn-director, written by `vpn-director install` (an upgrade rewrites it).
# start: the cron jobs (drift watchdog every minute, country lists daily, Xray subscriptions
# hourly when due), apply, then the watch daemon (Xray health checks and failover; it also runs
# the drift check and the due refreshes, serialised with cron's runs by the run lock);
# stop: the daemon, the cron jobs out, then remove everything vpn-director owns.
PROG=@LAUNCHER@
PIDDIR=@PID_DIR@

cron_jobs() {
    command -v cru >/dev/null 2>&1 || return 0
    if [ "$1" = add ]; then
        cru a vpn-director-watch "@WATCH_CRON@"
        cru a vpn-director-update "@UPDATE_CRON@"
        cru a vpn-director-subs "@SUBS_CRON@"
    else
        cru d vpn-director-watch
        cru d vpn-director-update
        cru d vpn-director-subs
    fi
}

# The daemons, each `$PROG NAME` with its PID in $PIDDIR/vpn-director-NAMEd.pid: watch (health
# checks, failover, drift) and web (the web UI). One that is turned off in the config exits at once by itself.
DAEMONS="@DAEMONS@"

pidfile() {
    echo "$PIDDIR/vpn-director-$1d.pid"
}

# A daemon's PID if it runs: the recorded process must still be our program's `NAME`.
daemon_pid() {
    f=$(pidfile "$1")
    [ -f "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null)
    case "$pid" in ''|*[!0-9]*) return 0 ;; esac
    if grep -qF "@PROGRAM@" "/proc/$pid/cmdline" 2>/dev/null && grep -q "$1" "/proc/$pid/cmdline" 2>/dev/null; then
        echo "$pid"
    fi
}

daemon_start() {
    for d in $DAEMONS; do
        [ -n "$(daemon_pid "$d")" ] && continue
        # the launcher execs python, so $! is the daemon itself
        "$PROG" "$d" </dev/null >/dev/null 2>&1 &
        echo $! > "$(pidfile "$d")"
    done
}

daemon_stop() {
    for d in $DAEMONS; do
        pid=$(daemon_pid "$d")
        rm -f "$(pidfile "$d")"
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null
        # the watch daemon ends after its current round, so a switch in progress finishes first
        i=0
        while [ $i -lt 120 ] && kill -0 "$pid" 2>/dev/null; do
            sleep 1
            i=$((i + 1))
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    done
    return 0
}

case "$1" in
    start)
        cron_jobs add
        if [ -t 1 ]; then
            "$PROG" apply
        else
            # at boot: the configured boot wait must not hold up the services started after us
            "$PROG" apply </dev/null >/dev/null 2>&1 &
        fi
        daemon_start
        ;;
    stop)
        daemon_stop
        cron_jobs del
        "$PROG" stop
        ;;
    restart)
        daemon_stop
        cron_jobs add
        "$PROG" restart
        daemon_start
        ;;
    status)
        for d in $DAEMONS; do
            pid=$(daemon_pid "$d")
            if [ -n "$pid" ]; then echo "$d daemon: running (PID $pid)"; else echo "$d daemon: not running"; fi
        done
        "$PROG" status
        ;;
    *)
        echo "usage: $0 {start|stop|restart|status}" >&2
        exit 2
        ;;
esac

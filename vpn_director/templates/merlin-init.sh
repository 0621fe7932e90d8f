#!/bin/sh
# Entware init script for vpn-director, written by `vpn-director install` (an upgrade rewrites it).
# start: the cron jobs (drift watchdog every minute, country lists daily, Xray subscriptions
# hourly when due), then apply;
# stop: the cron jobs out, then remove everything vpn-director owns.
PROG=@LAUNCHER@

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

case "$1" in
    start)
        cron_jobs add
        if [ -t 1 ]; then
            "$PROG" apply
        else
            # at boot: the configured boot wait must not hold up the services started after us
            "$PROG" apply </dev/null >/dev/null 2>&1 &
        fi
        ;;
    stop)
        cron_jobs del
        "$PROG" stop
        ;;
    restart)
        cron_jobs add
        "$PROG" restart
        ;;
    status)
        "$PROG" status
        ;;
    *)
        echo "usage: $0 {start|stop|restart|status}" >&2
        exit 2
        ;;
esac

#!/bin/sh
# vpn-director, as installed by `vpn-director install` (an upgrade rewrites this file).
# Hooks and cron run with a short PATH; the firmware's own ip, iptables and ipset come first.
PATH=/sbin:/usr/sbin:/bin:/usr/bin:/opt/sbin:/opt/bin${PATH:+:$PATH}
VPD_CONFIG=${VPD_CONFIG:-@CONFIG@}
export PATH VPD_CONFIG
# -I -S: only the archive and the standard library are imported, whatever the environment or
# site-packages hold (and start-up skips reading them: hooks and cron run this every minute).
exec @PYTHON@ -I -S @PROGRAM@ "$@"

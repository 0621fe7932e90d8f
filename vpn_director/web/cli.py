"""The `web` command: run the web UI (the daemon the init script and systemd start), or print
its addresses and certificate fingerprint. Loads nothing heavy until it runs."""

import os
import sys

from ..errors import EXIT_OK


def register(sub, common):
    p = sub.add_parser("web", help="the web UI: an HTTPS server on the LAN address and 127.0.0.1 (config: webui)",
                       description="Serves the web UI on https://LAN-ADDRESS:8444/ (webui.port, webui.listen). Log in "
                                   "with the router's admin user and password (webui.shadow_file). A self-signed "
                                   "certificate is made with openssl on first start unless webui.cert_file and "
                                   "webui.key_file name one. With webui.enabled false it exits at once. SIGTERM "
                                   "stops it.")
    p.add_argument("--print-fingerprint", action="store_true",
                   help="print the addresses and the certificate's SHA-256 fingerprint (making the certificate "
                        "if there is none yet), then exit")
    p.set_defaults(ops=cmd_web)


def cmd_web(args, out):
    from .. import log
    from ..ops import txn
    cfg = txn.load(args.config, warn=out.warn)
    if not cfg.webui.enabled:
        out.info("web UI is off (webui.enabled is false in %s)" % cfg.path)
        return EXIT_OK
    from . import cert, server
    if args.print_fingerprint:
        addresses = server.listen_addresses(cfg)
        names = server.host_names(addresses, cfg.webui.hosts)
        path = cfg.webui.cert_path(cfg.data_dir)
        cert.ensure(path, cfg.webui.key_path(cfg.data_dir), addresses, sorted(n for n in names if not server._is_ip(n)))
        for a in addresses:
            out.info("https://%s:%d/" % (a, cfg.webui.port))
        out.info("certificate %s\nSHA-256 fingerprint %s" % (path, cert.fingerprint(path)))
        return EXIT_OK
    log.setup(args.verbose)
    problem = log.configure(cfg.log_syslog, cfg.log_file, cfg.log_max_bytes)
    if problem:
        out.warn(problem)
    if os.geteuid() != 0:
        out.warn("web: not running as root: status, edits and live traces will be refused")
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # under systemd each line reaches the journal at once
    return server.run(cfg, out)

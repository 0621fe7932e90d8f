"""Byte relays for the tests' stand-in proxies (the fake SOCKS5 server, the port forward into a
router namespace): both directions copied until either side closes."""

import socket
import threading


def splice(a, b):
    """Copy a→b and b→a in two daemon threads."""
    for src, dst in ((a, b), (b, a)):
        threading.Thread(target=pump, args=(src, dst), daemon=True).start()


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

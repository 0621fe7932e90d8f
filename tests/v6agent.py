"""Endpoints for the IPv6 kernel tests, run inside namespaces (python sockets only).

    python v6agent.py serve NAME LOGFILE ADDR PORT...  tcp and udp on every port of ADDR ("::":
                                                   every address, IPv4 too); answers NAME, logs
                                                   "PROTO PEER-ADDRESS PORT"
    python v6agent.py probe JSON                   [[proto, address, port], ...] -> JSON list of
                                                   "answer NAME", "error ENAME" or "timeout"
An address may carry a zone ("fe80::1%eth0").
"""

import errno
import json
import socket
import sys
import threading

_lock = threading.Lock()


def _log(fh, line):
    with _lock:
        fh.write(line + "\n")
        fh.flush()


def serve(name, logfile, addr, ports):
    fh = open(logfile, "a")
    for port in ports:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET6, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind((addr, port))  # a UDP answer leaves from the address asked
            if kind == socket.SOCK_STREAM:
                s.listen(64)
                threading.Thread(target=_tcp, args=(s, name, fh, port), daemon=True).start()
            else:
                threading.Thread(target=_udp, args=(s, name, fh, port), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def _peer(addr):
    return addr[0][7:] if addr[0].startswith("::ffff:") else addr[0].split("%")[0]


def _tcp(sock, name, fh, port):
    while True:
        conn, peer = sock.accept()
        _log(fh, "tcp %s %d" % (_peer(peer), port))
        try:
            conn.sendall(name.encode())
        except OSError:
            pass
        conn.close()


def _udp(sock, name, fh, port):
    while True:
        _, peer = sock.recvfrom(512)
        _log(fh, "udp %s %d" % (_peer(peer), port))
        try:
            sock.sendto(name.encode(), peer)
        except OSError:
            pass


def probe_one(proto, addr, port, timeout=3.0):
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(addr, port, 0, kind)[0]
    except socket.gaierror as e:
        return "error %s" % e
    s = socket.socket(family, kind)
    s.settimeout(timeout)
    try:
        s.connect(sockaddr)
        if proto == "udp":
            s.send(b"probe")
        return "answer " + s.recv(64).decode()
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error %s" % errno.errorcode.get(e.errno, e.errno)
    finally:
        s.close()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], sys.argv[4], [int(p) for p in sys.argv[5:]])
    else:
        print(json.dumps([probe_one(*t) for t in json.loads(sys.argv[2])]))

"""Tiny endpoints run inside the lab's namespaces: answer as who we are, or probe and report who answered.

    python -m vpn_director.lab_agent serve NAME PORT [--transparent] [--bind ADDRESS]
    python -m vpn_director.lab_agent ping DST COUNT          -> JSON {"sent": N, "answered": N}
    python -m vpn_director.lab_agent probe JSON_TARGETS       -> JSON results on stdout
    python -m vpn_director.lab_agent watch JSON_TARGETS OUTFILE STOPFILE
    python -m vpn_director.lab_agent sysctl KEY=VALUE...
    python -m vpn_director.lab_agent http ADDRESS PORT        -> HTTP 204 to every GET (Xray's probe)
"""

import json
import os
import socket
import struct
import sys
import threading
import time

IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20  # also the cmsg type IP_ORIGDSTADDR
SOL_IP = 0


def serve(name, port, transparent, bind="0.0.0.0"):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (tcp, udp):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if transparent:  # TPROXY hands us packets addressed to other hosts
            s.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
        s.bind((bind, port))
    udp.setsockopt(SOL_IP, IP_RECVORIGDSTADDR, 1)
    tcp.listen(128)
    threading.Thread(target=_udp_loop, args=(udp, name), daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, peer = tcp.accept()
        threading.Thread(target=_tcp_reply, args=(conn, name), daemon=True).start()


def _tcp_reply(conn, name):
    try:
        dst = "%s:%d" % conn.getsockname()  # under TPROXY: the original destination
        conn.sendall(("%s %s\n" % (name, dst)).encode())
        # Let the client close first, so TIME_WAIT stays on the client. A TIME_WAIT socket
        # left here by a TPROXY'd connection would catch a later packet with the same
        # 4-tuple through early demux, and the router then drops it instead of forwarding.
        conn.settimeout(2)
        while conn.recv(64):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def _udp_loop(sock, name):
    while True:
        data, anc, _, peer = sock.recvmsg(512, socket.CMSG_SPACE(16))
        dst = "?"
        for level, kind, blob in anc:
            if level == SOL_IP and kind == IP_RECVORIGDSTADDR:
                port, addr = struct.unpack("!2xH4s8x", blob[:16])
                dst = "%s:%d" % (socket.inet_ntoa(addr), port)
        try:
            sock.sendto(("%s %s\n" % (name, dst)).encode(), peer)
        except OSError:
            pass


def echo(dst, timeout=1.0):
    """One ICMP echo: "echo-reply", "unreachable (code N)" when a router refused it, or "timeout".
    The reply does not say who answered: tests count packets where they arrive."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(timeout)
    ident = os.getpid() & 0xFFFF
    body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"vpn-director"
    body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
    deadline = time.time() + timeout
    try:
        s.sendto(body, (dst, 0))
        while True:
            s.settimeout(max(deadline - time.time(), 0.001))
            data, peer = s.recvfrom(1024)
            icmp = data[(data[0] & 0x0F) * 4:]
            if icmp[0] == 0 and peer[0] == dst and struct.unpack("!H", icmp[4:6])[0] == ident:
                return "echo-reply"
            if icmp[0] == 3 and len(icmp) >= 28 and icmp[24:28] == socket.inet_aton(dst):  # quoted header: dst
                return "unreachable (code %d)" % icmp[1]
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error %s" % (e.strerror or e)
    finally:
        s.close()


def _checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data[:len(data) // 2 * 2]))
    if len(data) % 2:
        total += data[-1] << 8
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def probe_one(dst, port, proto, timeout=1.0):
    """Who answered ("xray 8.8.8.8:7000", "wan 8.8.8.8:7000", ...) or why nobody did."""
    if proto == "icmp":
        return echo(dst, timeout)
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    s.settimeout(timeout)
    try:
        if proto == "tcp":
            s.connect((dst, port))
            data = s.recv(256)
        else:
            s.sendto(b"probe", (dst, port))
            data, _ = s.recvfrom(256)
        return data.decode(errors="replace").strip() or "empty"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error %s" % (e.strerror or e)
    finally:
        s.close()


def probe(targets, timeout=1.0):
    return [probe_one(t["dst"], t["port"], t["proto"], timeout) for t in targets]


def watch(targets, outfile, stopfile, timeout=0.5, interval=0.01):
    """Probe the targets round after round until `stopfile` appears; one JSON line per probe."""
    with open(outfile, "a") as out:
        while not os.path.exists(stopfile):
            for t in targets:
                t0 = time.time()
                answer = probe_one(t["dst"], t["port"], t["proto"], timeout)
                out.write(json.dumps({"t": t0, "t1": time.time(), "dst": t["dst"], "proto": t["proto"],
                                      "answer": answer}) + "\n")
            out.flush()
            time.sleep(interval)


def ping(dst, count, timeout=1.0):
    """`count` ICMP echoes (no ping binary needed): {"sent": N, "answered": N}."""
    return {"sent": count, "answered": sum(echo(dst, timeout) == "echo-reply" for _ in range(count))}


def http204(address, port):
    """The probe target of `xray use` (a generate_204 stand-in): 204 to every request."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer((address, port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def sysctl(pairs):
    for pair in pairs:
        key, _, value = pair.partition("=")
        path = "/proc/sys/" + key.replace(".", "/")
        if os.path.exists(path):
            with open(path, "w") as fh:
                fh.write(value)


def main(argv):
    cmd = argv[0]
    if cmd == "serve":
        bind = argv[argv.index("--bind") + 1] if "--bind" in argv else "0.0.0.0"
        serve(argv[1], int(argv[2]), "--transparent" in argv, bind)
    elif cmd == "ping":
        print(json.dumps(ping(argv[1], int(argv[2]))))
    elif cmd == "probe":
        print(json.dumps(probe(json.loads(argv[1]))))
    elif cmd == "watch":
        watch(json.loads(argv[1]), argv[2], argv[3])
    elif cmd == "sysctl":
        sysctl(argv[1:])
    elif cmd == "http":
        http204(argv[1], int(argv[2]))
    else:
        raise SystemExit("unknown command %r" % cmd)


if __name__ == "__main__":
    main(sys.argv[1:])

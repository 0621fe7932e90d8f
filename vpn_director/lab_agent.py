"""Tiny endpoints run inside the lab's namespaces: answer as who we are, or probe and report who answered.

    python -m vpn_director.lab_agent serve NAME PORT [--transparent] [--bind ADDRESS] [--dns ANSWER]
        (--dns: a DNS query TPROXY'd to port 53 is answered with an A record ANSWER)
    python -m vpn_director.lab_agent ping DST COUNT          -> JSON {"sent": N, "answered": N}
    python -m vpn_director.lab_agent probe JSON_TARGETS       -> JSON results on stdout
    python -m vpn_director.lab_agent watch JSON_TARGETS OUTFILE STOPFILE
    python -m vpn_director.lab_agent sysctl KEY=VALUE...
    python -m vpn_director.lab_agent http ADDRESS PORT        -> HTTP 204 to every GET (Xray's probe)
    python -m vpn_director.lab_agent dns NAME LOG ANSWER [--forward UPSTREAM] [--bind ADDRESS]
        a resolver on UDP and TCP port 53 that logs every query (one JSON line: name, qname, qtype,
        proto, src) and answers A queries with ANSWER, or relays them to UPSTREAM (a forwarder,
        like the router's own resolver that re-sends a client's query from the router)
    python -m vpn_director.lab_agent dnsq SERVER QNAME PROTO  -> "A 192.0.2.1", "error ...", "timeout"
"""

import json
import os
import socket
import struct
import sys
import threading
import time

from .xray.socks import recv_exact

IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20  # also the cmsg type IP_ORIGDSTADDR
IP_PKTINFO = 8
IP_RECVERR = 11
WATCH_PORTS = (20000, 30000)  # source ports of the watch's lookups, used in turn (below the ephemeral range)
SOL_IP = 0


def serve(name, port, transparent, bind="0.0.0.0", dns=None):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (tcp, udp):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if transparent:  # TPROXY hands us packets addressed to other hosts
            s.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
        s.bind((bind, port))
    udp.setsockopt(SOL_IP, IP_RECVORIGDSTADDR, 1)
    tcp.listen(128)
    threading.Thread(target=_udp_loop, args=(udp, name, dns), daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, peer = tcp.accept()
        threading.Thread(target=_tcp_reply, args=(conn, name, dns), daemon=True).start()


def _tcp_reply(conn, name, dns=None):
    try:
        if dns and conn.getsockname()[1] == 53:  # a DNS query TPROXY'd to us: answered as DNS
            conn.settimeout(2)
            query = recv_exact(conn, struct.unpack("!H", recv_exact(conn, 2, OSError))[0], OSError)
            reply = dns_answer(query, dns)
            conn.sendall(struct.pack("!H", len(reply)) + reply)
            return
        dst = "%s:%d" % conn.getsockname()  # under TPROXY: the original destination
        conn.sendall(("%s %s\n" % (name, dst)).encode())
        # Let the client close first, so TIME_WAIT stays on the client. A TIME_WAIT socket
        # left here by a TPROXY'd connection would catch a later packet with the same
        # 4-tuple through early demux, and the router then drops it instead of forwarding.
        conn.settimeout(2)
        while conn.recv(64):
            pass
    except (OSError, ValueError, IndexError, struct.error):
        pass
    finally:
        conn.close()


def _udp_loop(sock, name, dns=None):
    while True:
        data, anc, _, peer = sock.recvmsg(512, socket.CMSG_SPACE(16))
        dst, port = "?", None
        for level, kind, blob in anc:
            if level == SOL_IP and kind == IP_RECVORIGDSTADDR:
                port, addr = struct.unpack("!2xH4s8x", blob[:16])
                dst = "%s:%d" % (socket.inet_ntoa(addr), port)
        try:
            if dns and port == 53:  # answered from the original destination, as a resolver there would
                orig = dst.rsplit(":", 1)[0]
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                    out.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the router's resolver has :53
                    out.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
                    out.bind((orig, 53))
                    out.sendto(dns_answer(data, dns), peer)
                continue
            sock.sendto(("%s %s\n" % (name, dst)).encode(), peer)
        except (OSError, ValueError, IndexError, struct.error):
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


def probe_one(dst, port, proto, timeout=1.0, qname=None, sport=0):
    """Who answered ("xray 8.8.8.8:7000", "wan 8.8.8.8:7000", ...) or why nobody did. With a
    qname, a DNS query to dst (port 53) over proto: its answer (dns_probe)."""
    if qname:
        return dns_probe(dst, qname, proto, timeout, sport)
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
    return [probe_one(t["dst"], t.get("port"), t["proto"], timeout, t.get("qname")) for t in targets]


def _qname(t, n):
    """A target's query name for round n: unique per probe when the target names a zone."""
    return "%s-%d-%d.%s" % (t["proto"], os.getpid(), n, t["zone"]) if t.get("zone") else None


def watch(targets, outfile, stopfile, timeout=0.5, interval=0.01):
    """Probe the targets round after round until `stopfile` appears; one JSON line per probe."""
    n = 0
    with open(outfile, "a") as out:
        while not os.path.exists(stopfile):
            for t in targets:
                n += 1
                qname = _qname(t, n)
                t0 = time.time()
                # a lookup's source port is new each time: a reused one would ride an earlier
                # query's conntrack entry (and the NAT chosen for it) instead of today's rules
                sport = WATCH_PORTS[0] + n % (WATCH_PORTS[1] - WATCH_PORTS[0]) if qname else 0
                answer = probe_one(t["dst"], t.get("port"), t["proto"], timeout, qname, sport)
                rec = {"t": t0, "t1": time.time(), "dst": t["dst"], "proto": t["proto"], "answer": answer}
                if qname:
                    rec["qname"] = qname
                out.write(json.dumps(rec) + "\n")
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


# --- DNS: a logging resolver and a query --------------------------------------------------------

def dns_query(qname, ident=0x5650, qtype=1):
    """A DNS query message (recursion desired) for qname."""
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in qname.rstrip(".").split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def dns_question(msg):
    """(qname, qtype, end of the question) of a DNS message."""
    i, labels = 12, []
    while msg[i]:
        labels.append(msg[i + 1:i + 1 + msg[i]].decode("ascii", "replace"))
        i += 1 + msg[i]
    qtype = struct.unpack("!H", msg[i + 1:i + 3])[0]
    return ".".join(labels), qtype, i + 5


def dns_answer(query, address):
    """The response to `query`: one A record with `address` for an A question, none otherwise."""
    _, qtype, end = dns_question(query)
    ident = struct.unpack("!H", query[:2])[0]
    answers = b""
    if qtype == 1:
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(address)
    return struct.pack("!HHHHHH", ident, 0x8180, 1, 1 if answers else 0, 0, 0) + query[12:end] + answers


def dns_first_a(msg):
    """The first A record's address in a response, or None."""
    _, _, i = dns_question(msg)
    for _ in range(struct.unpack("!H", msg[6:8])[0]):
        if msg[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while msg[i]:
                i += 1 + msg[i]
            i += 1
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[i:i + 10])
        if rtype == 1 and rdlen == 4:
            return socket.inet_ntoa(msg[i + 10:i + 14])
        i += 10 + rdlen
    return None


def dns_serve(name, log, answer, forward=None, bind="0.0.0.0"):
    """A resolver on UDP and TCP 53: every query is logged, then answered (or relayed to `forward`)."""
    lock = threading.Lock()

    def respond(query, proto, src):
        qname, qtype, _ = dns_question(query)
        with lock, open(log, "a") as fh:
            fh.write(json.dumps({"name": name, "qname": qname, "qtype": qtype, "proto": proto, "src": src}) + "\n")
        if not forward:
            return dns_answer(query, answer)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(2)
            up.connect((forward, 53))
            up.send(query)
            return up.recv(4096)

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for s in (udp, tcp):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((bind, 53))
    tcp.listen(64)

    udp.setsockopt(SOL_IP, IP_PKTINFO, 1)

    def udp_one(data, peer, local):
        try:  # answered from the address the query was sent to (a namespace has several)
            udp.sendmsg([respond(data, "udp", peer[0])], [(SOL_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, local, local))],
                          0, peer)
        except (OSError, ValueError, IndexError, struct.error):
            pass

    def udp_loop():
        while True:
            data, anc, _, peer = udp.recvmsg(4096, socket.CMSG_SPACE(12))
            local = next((blob[8:12] for level, kind, blob in anc if level == SOL_IP and kind == IP_PKTINFO),
                         b"\0" * 4)
            threading.Thread(target=udp_one, args=(data, peer, local), daemon=True).start()

    def tcp_one(conn, peer):
        try:
            conn.settimeout(5)
            n = struct.unpack("!H", recv_exact(conn, 2, OSError))[0]
            reply = respond(recv_exact(conn, n, OSError), "tcp", peer[0])
            conn.sendall(struct.pack("!H", len(reply)) + reply)
        except (OSError, ValueError, IndexError, struct.error):
            pass
        finally:
            conn.close()

    threading.Thread(target=udp_loop, daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, peer = tcp.accept()
        threading.Thread(target=tcp_one, args=(conn, peer), daemon=True).start()


def dns_probe(server, qname, proto="udp", timeout=1.0, sport=0):
    """Ask `server` for qname's A record: "A ADDRESS", "no answer", "error ..." or "timeout". The
    UDP socket is connected and asks for every ICMP error, so a kill switch's refusal is reported
    at once, as a resolver library would see it. `sport`: the source port (0: any)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    query = dns_query(qname)
    try:
        with socket.socket(socket.AF_INET, kind) as s:
            s.settimeout(timeout)
            if proto == "udp":  # report "network unreachable" too, which UDP otherwise takes as soft
                s.setsockopt(SOL_IP, IP_RECVERR, 1)
            if sport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", sport))
            s.connect((server, 53))
            if proto == "tcp":
                s.sendall(struct.pack("!H", len(query)) + query)
                msg = recv_exact(s, struct.unpack("!H", recv_exact(s, 2, OSError))[0], OSError)
            else:
                s.send(query)
                msg = s.recv(4096)
        addr = dns_first_a(msg)
        return "A %s" % addr if addr else "no answer"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error %s" % (e.strerror or e)
    except (ValueError, IndexError, struct.error):
        return "error malformed answer"


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
        dns = argv[argv.index("--dns") + 1] if "--dns" in argv else None
        serve(argv[1], int(argv[2]), "--transparent" in argv, bind, dns)
    elif cmd == "ping":
        print(json.dumps(ping(argv[1], int(argv[2]))))
    elif cmd == "probe":
        print(json.dumps(probe(json.loads(argv[1]), float(argv[2]) if len(argv) > 2 else 1.0)))
    elif cmd == "watch":
        watch(json.loads(argv[1]), argv[2], argv[3])
    elif cmd == "sysctl":
        sysctl(argv[1:])
    elif cmd == "http":
        http204(argv[1], int(argv[2]))
    elif cmd == "dns":
        opt = lambda key, default=None: argv[argv.index(key) + 1] if key in argv else default  # noqa: E731
        dns_serve(argv[1], argv[2], argv[3], forward=opt("--forward"), bind=opt("--bind", "0.0.0.0"))
    elif cmd == "dnsq":
        print(dns_probe(argv[1], argv[2], argv[3] if len(argv) > 3 else "udp"))
    else:
        raise SystemExit("unknown command %r" % cmd)


if __name__ == "__main__":
    main(sys.argv[1:])

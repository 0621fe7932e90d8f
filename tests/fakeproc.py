"""A fake /proc with net/tcp, net/tcp6, net/udp and net/udp6 written the way the kernel prints them."""

import ipaddress
import struct

HEAD = {"tcp": "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
        "udp": "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref "
               "pointer drops"}
LISTEN, ESTABLISHED, CLOSE = "0A", "01", "07"


def hexaddr(addr):
    """The kernel's text: each 32-bit word of the address in network order, printed as a host integer."""
    packed = ipaddress.ip_address(addr).packed
    return "".join("%08X" % struct.unpack("=I", packed[i:i + 4])[0] for i in range(0, len(packed), 4))


def line(n, local, port, remote=None, rport=0, state=LISTEN):
    remote = remote or ("::" if ":" in local else "0.0.0.0")
    return "%4d: %s:%04X %s:%04X %s 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 0" % (
        n, hexaddr(local), port, hexaddr(remote), rport, state, 1000 + n)


def write(root, tcp=(), udp=()):
    """tcp/udp: [(address, port[, state[, remote, remote port]])]; returns the fake proc root."""
    net = root / "net"
    net.mkdir(parents=True, exist_ok=True)
    for proto, socks in (("tcp", tcp), ("udp", udp)):
        lines = {4: [HEAD[proto]], 6: [HEAD[proto]]}
        for i, sock in enumerate(socks):
            addr, port = sock[0], sock[1]
            state = sock[2] if len(sock) > 2 else (LISTEN if proto == "tcp" else CLOSE)
            remote, rport = (sock[3], sock[4]) if len(sock) > 4 else (None, 0)
            lines[ipaddress.ip_address(addr).version].append(line(i, addr, port, remote, rport, state))
        (net / proto).write_text("\n".join(lines[4]) + "\n")
        (net / (proto + "6")).write_text("\n".join(lines[6]) + "\n")
    return str(root)


def listening(root, port=12345):
    """Xray listening on 0.0.0.0:port for TCP and UDP."""
    return write(root, tcp=[("0.0.0.0", port)], udp=[("0.0.0.0", port)])

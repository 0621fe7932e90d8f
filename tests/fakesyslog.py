"""A unix datagram socket standing in for /dev/log (point VPD_SYSLOG at `path`)."""

import socket


class Syslog:
    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0)

    def messages(self):
        """Everything received so far, without the trailing NUL SysLogHandler adds."""
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536).decode().rstrip("\0"))
            except (BlockingIOError, socket.timeout):
                return out

    def close(self):
        self.sock.close()

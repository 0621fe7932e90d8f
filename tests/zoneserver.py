"""A local HTTP server for country-list tests: serves files of a directory, and faults.

GET /<behaviour>/<file> where behaviour is one of FAULTS or "ok". It binds 127.0.0.1 only.
In-process: `ZoneServer(directory)`; inside a namespace: `python zoneserver.py DIR` prints the port.
"""

import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTML = b"<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head><body>busy</body></html>\n"
# behaviour -> words the error for it must contain
FAULTS = {"404": "HTTP 404", "slow": "timed out", "html": "an HTML page, not a list", "empty": "empty answer",
          "truncated": "truncated", "half": "shrank from", "garbage": "not a list of IPv4 CIDRs"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits.append(self.path)
        _, behaviour, name = (self.path.split("/", 2) + ["", ""])[:3]
        path = os.path.join(self.server.directory, os.path.basename(name))
        if behaviour == "404" or not os.path.isfile(path):
            return self._send(404, b"not found\n")
        with open(path, "rb") as fh:
            body = fh.read()
        if behaviour == "ok":
            return self._send(200, body)
        if behaviour == "redirect":
            self.send_response(302)
            self.send_header("Location", "/ok/" + name)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if behaviour == "slow":
            self.server.stopping.wait(5)  # well past the client's timeout
            return self._send(200, body)
        if behaviour == "html":
            return self._send(200, HTML, "text/html; charset=utf-8")
        if behaviour == "empty":
            return self._send(200, b"")
        if behaviour == "half":
            lines = body.splitlines(True)
            return self._send(200, b"".join(lines[:len(lines) // 2]))
        if behaviour == "garbage":
            return self._send(200, bytes(range(256)) * 4, "application/octet-stream")
        if behaviour == "truncated":
            # promise the whole list, send part of it and hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        return self._send(404, b"unknown behaviour\n")

    def _send(self, code, body, ctype="text/plain; charset=utf-8"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return None


class ZoneServer:
    def __init__(self, directory):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.directory = str(directory)
        self.httpd.hits = []
        self.httpd.stopping = threading.Event()
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def hits(self):
        return self.httpd.hits

    def url(self, behaviour, name="{cc}.zone"):
        return "http://127.0.0.1:%d/%s/%s" % (self.port, behaviour, name)

    def close(self):
        self.httpd.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    server = ZoneServer(sys.argv[1])
    print(server.port, flush=True)
    threading.Event().wait()

"""Test doubles for the Telegram bot: a fake Bot API server and a fake SOCKS5 proxy, standard
library only, on 127.0.0.1. No network and no Telegram account.

FakeBotApi records every call (method, params), serves scripted updates with real offset
semantics, answers sendMessage/editMessageText with increasing message ids, and fails a
method on demand: fail("sendMessage", 429, retry_after=3), fail("getUpdates", 409), 401, 502.
"""

import json
import socket
import ssl
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from relay import splice
from vpn_director.xray.socks import recv_exact

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
ADMIN = 1001


class FakeBotApi:
    def __init__(self, token=TOKEN, context=None):
        self.token = token
        self.calls = []  # (method, params) of every request, failed ones too
        self.ok_calls = []  # only those answered ok
        self.failures = {}  # method -> [(status, body)]
        self.queue = []
        self.next_update = 1
        self.next_message = 100
        self.lock = threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = api._answer(self.path, self.headers.get("Content-Type", ""), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # --- scripting -------------------------------------------------------------------------------
    def fail(self, method, status, times=1, retry_after=None, description=None):
        body = {"ok": False, "error_code": status, "description": description or {
            401: "Unauthorized", 409: "Conflict: terminated by other getUpdates request", 429: "Too Many Requests",
            502: "Bad Gateway"}.get(status, "Bad Request")}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        with self.lock:
            self.failures.setdefault(method, []).extend([(status, body)] * times)

    def _push(self, update):
        with self.lock:
            update["update_id"] = self.next_update
            self.next_update += 1
            self.queue.append(update)
            self.lock.notify_all()
        return update

    def user_sends(self, text, user=ADMIN, chat_type="private", username=None, date=None, chat=None, is_bot=False):
        sender = {"id": user, "is_bot": is_bot, "first_name": "Test"}
        if username:
            sender["username"] = username
        return self._push({"message": {"message_id": self._message_id(), "date": int(date or time.time()),
                                       "from": sender, "text": text,
                                       "chat": {"id": chat or user, "type": chat_type}}})

    def user_presses(self, data, message_id, user=ADMIN, chat_type="private", username=None, is_bot=False):
        sender = {"id": user, "is_bot": is_bot, "first_name": "Test"}
        if username:
            sender["username"] = username
        return self._push({"callback_query": {"id": "cb%d" % self.next_update, "from": sender, "data": data,
                                              "message": {"message_id": message_id, "date": int(time.time()),
                                                          "chat": {"id": user, "type": chat_type}}}})

    def _message_id(self):
        self.next_message += 1
        return self.next_message

    # --- reading ---------------------------------------------------------------------------------
    def sent(self, method="sendMessage"):
        return [p for m, p in self.ok_calls if m == method]

    def last_buttons(self):
        """The inline keyboard of the last sendMessage/editMessageText: [(text, data)]."""
        for m, p in reversed(self.ok_calls):
            if m in ("sendMessage", "editMessageText"):
                rows = (p.get("reply_markup") or {}).get("inline_keyboard") or []
                return [(k["text"], k["callback_data"]) for row in rows for k in row]
        return []

    def button(self, label):
        return next(d for t, d in self.last_buttons() if t == label)

    # --- the server side -------------------------------------------------------------------------
    def _answer(self, path, ctype, body):
        parts = path.strip("/").split("/")
        method = parts[-1]
        if ctype.startswith("application/json"):
            params = json.loads(body.decode() or "{}")
        else:
            params = {"_multipart": body}
        with self.lock:
            self.calls.append((method, params))
            if len(parts) != 2 or parts[0] != "bot" + self.token:
                return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            if self.failures.get(method):
                return self.failures[method].pop(0)
            self.ok_calls.append((method, params))
            if method == "getUpdates":
                offset = params.get("offset") or 0
                self.queue = [u for u in self.queue if u["update_id"] >= offset]
                deadline = time.time() + min(float(params.get("timeout") or 0), 5)
                while not self.queue and time.time() < deadline:
                    self.lock.wait(deadline - time.time())
                return 200, {"ok": True, "result": list(self.queue[:100])}
            if method in ("sendMessage", "editMessageText", "sendDocument"):
                mid = params.get("message_id") or self._message_id()
                return 200, {"ok": True, "result": {"message_id": mid, "date": int(time.time()),
                                                    "chat": {"id": params.get("chat_id")}}}
            return 200, {"ok": True, "result": True}


class FakeSocks:
    """A SOCKS5 proxy (no authentication) that records each CONNECT's address type and host, and
    connects every request to `target` (the fake Bot API), whatever name was asked for."""

    def __init__(self, target):
        self.target = target
        self.requests = []  # (atyp, host, port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.sock.close()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        def exact(n):
            return recv_exact(conn, n, OSError)
        try:
            ver, n = exact(2)
            exact(n)
            conn.sendall(b"\x05\x00")
            _, cmd, _, atyp = exact(4)
            if atyp == 3:
                host = exact(exact(1)[0]).decode()
            elif atyp == 1:
                host = socket.inet_ntoa(exact(4))
            else:
                host = socket.inet_ntop(socket.AF_INET6, exact(16))
            port = struct.unpack("!H", exact(2))[0]
            self.requests.append((atyp, host, port))
            up = socket.create_connection(self.target, timeout=5)
            conn.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", 1080))
        except OSError:
            conn.close()
            return
        splice(conn, up)


def tls_files(tmp_path, name="api.telegram.org"):
    """A test CA and a server certificate for `name` signed by it (openssl): (ca, cert, key)."""
    import subprocess
    ca_key, ca, key, csr, cert = (str(tmp_path / n) for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\n" % name)
    run = lambda *a: subprocess.run(["openssl"] + list(a), check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=vpd test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=%s" % name)
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
        "-extfile", str(ext))
    return ca, cert, key


def server_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx

"""A webhook receiver on loopback that checks what Standard Webhooks asks a receiver
to check: the signature over id.timestamp.body, a timestamp within five minutes, and
a webhook-id it has not taken before."""

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, secret: str, *, fail_first: int = 0):
        self.key = base64.b64decode(secret.removeprefix("whsec_"))
        self.fail_first = fail_first
        self.attempts: list[dict] = []  # every request, with what was wrong
        self.taken: dict[str, dict] = {}  # webhook-id -> body, each once
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self):
        self.server.shutdown()

    def verify(self, headers, body: bytes) -> str | None:
        msg_id, ts = headers.get("webhook-id"), headers.get("webhook-timestamp")
        if not msg_id or not ts or not ts.isdigit():
            return "missing headers"
        if abs(time.time() - int(ts)) > 300:
            return "timestamp too old"
        expected = base64.b64encode(
            hmac.new(self.key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        ).decode()
        sent = [s.partition(",")[2] for s in headers.get("webhook-signature", "").split()]
        if not any(hmac.compare_digest(expected, s) for s in sent):
            return "bad signature"
        return None

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                problem = receiver.verify(self.headers, body)
                receiver.attempts.append({"id": self.headers.get("webhook-id"), "problem": problem})
                if problem:
                    status = 401
                elif len(receiver.attempts) <= receiver.fail_first:
                    status = 503
                else:
                    receiver.taken.setdefault(self.headers["webhook-id"], json.loads(body))
                    status = 204
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        return Handler

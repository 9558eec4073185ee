"""A loopback HTTP server for tool tests, and an agent that calls the tools it is told to.

/encoded  the Authorization header in each form echo servers give it (`echoes`)
/padded   the header after padding, so it straddles the cut at the response limit
anything  JSON of the path, the Authorization header and the body; `plan` sets the
          statuses (and headers) a path answers first
"""

import base64
import html
import json
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, quote_plus

from tests.execution.bundles import agent_with_bundle

CALLER = """
def main(ctx, input):
    out = []
    for name, args in input["calls"]:
        try:
            out.append({"ok": ctx.tool(name, **args)})
        except Exception as exc:
            out.append({"error": type(exc).__name__, "message": str(exc)})
    return out
"""
# Quotes and backslashes (JSON escapes them), and what URL and HTML encoding change.
LEAKY = 'Zq9"back\\slash/plus+eq= amp&<lt>-tail'
MAX_RESPONSE = 256 * 1024


def echoes(auth: str) -> list[str]:
    """The ways echo servers hand back a header they were sent."""
    raw, value = auth.encode(), auth.split(" ", 1)[1].encode()
    return [
        json.dumps({"auth": auth}),
        json.dumps({"auth": auth}).replace("/", "\\/"),
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        base64.b64encode(value).decode(),
        base64.urlsafe_b64encode(value).decode().rstrip("="),
        quote(auth, safe=""),
        re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(auth, safe="")),  # lowercase hex
        quote_plus(auth),
        html.escape(auth),
    ]


class Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.hits: dict[str, list[float]] = {}
        self.plan: dict[str, list[tuple[int, dict]]] = {}  # path -> statuses to answer first
        self.seen_headers: list[dict] = []

    @property
    def base(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class EchoHandler(BaseHTTPRequestHandler):
    server: Upstream

    def log_message(self, *args):
        pass

    def _answer(self):
        path = self.path
        self.server.hits.setdefault(path, []).append(time.monotonic())
        self.server.seen_headers.append(dict(self.headers))
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        plan = self.server.plan.get(path) or []
        if plan:
            status, headers = plan.pop(0)
        else:
            status, headers = 200, {}
        auth = self.headers.get("authorization")
        content_type = "application/json"
        if path == "/encoded":
            data, content_type = "\n".join(echoes(auth)).encode(), "text/plain"
        elif path == "/padded":  # the credential straddles the cut at the response limit
            padding = b"x" * (MAX_RESPONSE - len("Bearer ") - 3)
            data, content_type = padding + auth.encode(), "text/plain"
        else:
            data = json.dumps({"path": path, "auth": auth, "got": body.decode() or None}).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


def caller(tenant, tools, **manifest):
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in manifest.items())
    toml = f'entrypoint = "agent:main"\ntools = {json.dumps(tools)}\n{extra}'
    return agent_with_bundle(
        tenant, name=f"caller-{time.monotonic_ns()}", code=CALLER, manifest=toml
    )

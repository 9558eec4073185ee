"""A local server that speaks the Anthropic Messages API, for tests and the demo.

    python manage.py messages_api_server --port 8765 [--latency-ms 50] [--api-key KEY]

POST /v1/messages answers like the real API: content blocks (text, tool_use),
stop_reason, usage; errors in the API's shape ({"type": "error", "error": {...}}). It
accepts the key as `x-api-key` or `Authorization: Bearer`. Its "model" is a small set of
deterministic rules, enough to drive an agent through a tool loop:

- the last user turn holds tool results  -> a text answer quoting them (end_turn);
- the last user text names one of the request's tools -> a tool_use of that tool, whose
  input is the first JSON object in the text (or {}) (stop_reason tool_use);
- otherwise -> "You said: ..." (end_turn).

Tests steer it through POST /_control: {"latency_ms": 200} sets a delay;
{"fail": [{"status": 529, "count": 2, "retry_after": 0.1}]} makes the next requests
fail; GET /_stats counts requests.
"""

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
    return "\n".join(parts)


def _first_json_object(text: str) -> dict:
    start = text.find("{")
    while start != -1:
        depth = 0
        for end in range(start, len(text)):
            if text[end] == "{":
                depth += 1
            elif text[end] == "}":
                depth -= 1
                if depth == 0:
                    try:
                        value = json.loads(text[start : end + 1])
                    except ValueError:
                        break
                    if isinstance(value, dict):
                        return value
                    break
        start = text.find("{", start + 1)
    return {}


def _tokens(value) -> int:
    return max(1, len(json.dumps(value)) // 4)


def respond(body: dict) -> dict:
    """The deterministic 'model'."""
    messages = body["messages"]
    last = messages[-1]
    content = last.get("content")
    results = [
        b for b in (content if isinstance(content, list) else []) if b.get("type") == "tool_result"
    ]
    if results:
        quoted = "; ".join(
            _text_of(r.get("content")) if not isinstance(r.get("content"), str) else r["content"]
            for r in results
        )
        blocks = [{"type": "text", "text": f"The tool returned: {quoted}"}]
        stop = "end_turn"
    else:
        text = _text_of(content)
        tool = next(
            (t for t in body.get("tools") or [] if re.search(rf"\b{re.escape(t['name'])}\b", text)),
            None,
        )
        if tool and last.get("role") == "user":
            blocks = [
                {"type": "text", "text": f"I will use {tool['name']}."},
                {
                    "type": "tool_use",
                    "id": "toolu_" + uuid.uuid4().hex[:24],
                    "name": tool["name"],
                    "input": _first_json_object(text),
                },
            ]
            stop = "tool_use"
        else:
            blocks = [{"type": "text", "text": f"You said: {text[:2000]}"}]
            stop = "end_turn"
    max_tokens = body["max_tokens"]
    for block in blocks:
        if block["type"] == "text" and len(block["text"]) // 4 > max_tokens:
            block["text"] = block["text"][: max_tokens * 4]
            stop = "max_tokens"
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": _tokens([body.get("system"), messages, body.get("tools")]),
            "output_tokens": _tokens(blocks),
        },
    }


class MessagesServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, *, api_key: str | None = None, latency_ms: int = 0):
        super().__init__(address, Handler)
        self.api_key = api_key
        self.latency_ms = latency_ms
        self.failures: list[dict] = []
        self.requests = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def next_failure(self) -> dict | None:
        with self.lock:
            self.requests += 1
            if not self.failures:
                return None
            failure = self.failures[0]
            failure["count"] = failure.get("count", 1) - 1
            if failure["count"] <= 0:
                self.failures.pop(0)
            return failure


class Handler(BaseHTTPRequestHandler):
    server: MessagesServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: tests and the demo read their own logs
        pass

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:16])
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        error = {"type": ERROR_TYPES.get(status, "api_error"), "message": message}
        self._send(status, {"type": "error", "error": error}, headers)

    def _body(self):
        length = int(self.headers.get("content-length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return None

    def do_GET(self):
        if self.path == "/_stats":
            return self._send(200, {"requests": self.server.requests})
        return self._error(404, f"no route {self.path}")

    def do_POST(self):
        body = self._body()
        if self.path == "/_control":
            if not isinstance(body, dict):
                return self._error(400, "control body must be a JSON object")
            with self.server.lock:
                if "latency_ms" in body:
                    self.server.latency_ms = int(body["latency_ms"])
                if "fail" in body:
                    self.server.failures = list(body["fail"])
                if body.get("reset"):
                    self.server.requests = 0
            return self._send(200, {"ok": True})
        if self.path.split("?")[0] != "/v1/messages":
            return self._error(404, f"no route {self.path}")
        key = self.headers.get("x-api-key")
        auth = self.headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if not key or (self.server.api_key and key != self.server.api_key):
            return self._error(401, "invalid x-api-key")
        if self.server.latency_ms:
            time.sleep(self.server.latency_ms / 1000)
        failure = self.server.next_failure()
        if failure:
            headers = {}
            if failure.get("retry_after") is not None:
                headers["retry-after"] = str(failure["retry_after"])
            return self._error(int(failure["status"]), "injected failure", headers)
        problem = _check(body)
        if problem:
            return self._error(400, problem)
        return self._send(200, respond(body))


def _check(body) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            return f"{field}: Field required"
    if body.get("stream"):
        return "stream: this local server does not stream"
    if not isinstance(body["messages"], list) or not body["messages"]:
        return "messages: at least one message is required"
    if body["messages"][0].get("role") != "user":
        return "messages: the first message must use the user role"
    return None


def serve(host: str = "127.0.0.1", port: int = 0, **options) -> MessagesServer:
    """Start in a background thread; returns the server (server.url, server.shutdown())."""
    server = MessagesServer((host, port), **options)
    threading.Thread(target=server.serve_forever, daemon=True, name="messages-api").start()
    return server


def main(argv=None) -> None:
    """`python -m execution.devllm.server --port 8765`: stdlib only, starts in a blink."""
    import argparse

    parser = argparse.ArgumentParser(description="A local server that speaks the Messages API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="accept only this key")
    args = parser.parse_args(argv)
    server = MessagesServer(
        (args.host, args.port), api_key=args.api_key, latency_ms=args.latency_ms
    )
    print(f"Messages API server at {server.url}/v1/messages", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

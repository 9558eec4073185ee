"""The agent-side runtime: runs inside the sandbox with the system Python and only its
standard library (`python3 -S -I`, so start-up stays around 10 ms).

It imports the agent's entrypoint from /fd/bundle and calls `main(ctx, input)`. Every
method of `ctx` is one request to the host-side gateway over the Unix socket
$FD_SOCKET: newline-delimited JSON, `{"op", "args", "thread", "seq"}` -> `{"ok": true, "result"}` or
`{"ok": false, "error": {"type", "message"}}`. Each thread gets its own connection, so
an agent may call tools from several threads at once.

Its start-up is on every run's path, a replay's included, so it imports only what each
call needs: `_socket` without socket.py (its enums and selectors), threading only for an
agent that runs threads, traceback only for an agent that raised.
"""

import _socket
import _thread
import json
import os
import sys

_MAIN_THREAD = _thread.get_ident()


class GatewayError(Exception):
    """A call failed in a way the agent can handle (a tool error, a bad request)."""

    def __init__(self, type_, message):
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.message = message


class ToolError(GatewayError):
    pass


class LLMError(GatewayError):
    pass


class RateLimited(GatewayError):
    pass


class RunStopped(BaseException):
    """The gateway stopped the run (a limit, a cancel). BaseException: agents should not
    catch it, and the host kills the sandbox anyway."""


_ERRORS = {"tool_error": ToolError, "llm_error": LLMError, "rate_limited": RateLimited}


class AttrDict(dict):
    """A dict whose keys read as attributes too: resp.content[0].text or resp["content"]."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _wrap(value):
    if isinstance(value, dict):
        return AttrDict({k: _wrap(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class _Lines:
    """The gateway's answers, a line at a time, from a plain `_socket` socket."""

    def __init__(self, sock):
        self.sock = sock
        self.rest = b""

    def readline(self):
        parts = [self.rest]
        while b"\n" not in parts[-1]:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            parts.append(chunk)
        line, newline, self.rest = b"".join(parts).partition(b"\n")
        return line + newline


class _Gateway:
    def __init__(self, path):
        self.path = path
        self.local = _thread._local()  # threading.local

    def _conn(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.connect(self.path)
            conn = self.local.conn = (sock, _Lines(sock))
        return conn

    def call(self, op, **args):
        sock, reader = self._conn()
        # The thread and its own count of calls name the call for a replay's report;
        # the journal's identity of a step does not depend on them (replay/journal.py).
        seq = self.local.seq = getattr(self.local, "seq", 0) + 1
        if _thread.get_ident() == _MAIN_THREAD:
            name = "main"
        else:  # an agent's thread: the agent has imported threading (or gets a dummy's name)
            import threading

            name = threading.current_thread().name[:64]
        request = {"op": op, "args": args, "thread": name or "thread", "seq": seq}
        sock.sendall(json.dumps(request).encode() + b"\n")
        line = reader.readline()
        if not line:
            raise RunStopped("the gateway closed the connection")
        reply = json.loads(line)
        if reply.get("ok"):
            return reply.get("result")
        error = reply.get("error") or {}
        if error.get("type") == "stopped":
            raise RunStopped(error.get("message", "stopped"))
        cls = _ERRORS.get(error.get("type"), GatewayError)
        raise cls(error.get("type", "error"), error.get("message", ""))


class LLM:
    def __init__(self, gw):
        self._gw = gw

    def messages(self, **params):
        """The Anthropic Messages API: model, system, messages, tools, max_tokens, ...
        Returns the message (content blocks, stop_reason, usage)."""
        return _wrap(self._gw.call("llm.messages", **params))


class State:
    """Per-run key/value kept by the host, so it survives a crash of the worker."""

    def __init__(self, gw):
        self._gw = gw

    def get(self, key, default=None):
        found = self._gw.call("state.get", key=key)
        return found["value"] if found["found"] else default

    def set(self, key, value):
        self._gw.call("state.set", key=key, value=value)

    def __getitem__(self, key):
        found = self._gw.call("state.get", key=key)
        if not found["found"]:
            raise KeyError(key)
        return found["value"]

    def __setitem__(self, key, value):
        self.set(key, value)


class Memory:
    """The agent's long-term memory across runs (per tenant)."""

    def __init__(self, gw):
        self._gw = gw

    def put(self, key, value, text=None):
        self._gw.call("memory.put", key=key, value=value, text=text)

    def get(self, key, default=None):
        found = self._gw.call("memory.get", key=key)
        return found["value"] if found["found"] else default

    def search(self, query, limit=5):
        return _wrap(self._gw.call("memory.search", query=query, limit=limit))


class Context:
    def __init__(self, gw):
        self._gw = gw

    def fit(self, messages, budget_tokens, summarise=True):
        """`messages` pruned (and the dropped part summarised) to fit `budget_tokens`."""
        result = self._gw.call(
            "context.fit", messages=messages, budget_tokens=budget_tokens, summarise=summarise
        )
        return result["messages"]


class Ctx:
    def __init__(self, gw, hello):
        self._gw = gw
        self.run_id = hello["run_id"]
        self.agent = hello["agent"]
        self.model = hello["model"]
        self.llm = LLM(gw)
        self.state = State(gw)
        self.memory = Memory(gw)
        self.context = Context(gw)

    def tool(self, name, **args):
        return _wrap(self._gw.call("tool", name=name, arguments=args))

    def now(self):
        """Seconds since the epoch, from the host (recorded, so replays see the same)."""
        return self._gw.call("now")

    def random(self):
        return self._gw.call("random")


def _finish(gw, **outcome):
    try:  # noqa: SIM105 - contextlib.suppress is one import more on every run's start
        gw.call("finish", **outcome)
    except (OSError, RunStopped, GatewayError):
        pass


def main():
    gw = _Gateway(os.environ["FD_SOCKET"])
    hello = gw.call("hello")
    module_name, _, function_name = hello["entrypoint"].partition(":")
    sys.path.insert(0, os.environ.get("FD_BUNDLE", "/fd/bundle"))
    sys.dont_write_bytecode = True  # the bundle is read-only
    try:
        __import__(module_name)  # importlib's import_module, without importing importlib
        function = getattr(sys.modules[module_name], function_name)
        output = function(Ctx(gw, hello), hello["input"])
        json.dumps(output)
    except RunStopped:
        return 0
    except MemoryError:
        _finish(gw, error="MemoryError: the agent ran out of memory", error_type="MemoryError")
        return 1
    except BaseException as exc:  # noqa: BLE001 - report anything the agent raised
        if isinstance(exc, SystemExit) and not exc.code:
            output = None
        else:
            import traceback

            tb = traceback.format_exc(limit=20)
            _finish(gw, error=tb[-4000:], error_type=type(exc).__name__)
            return 1
    _finish(gw, output=output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

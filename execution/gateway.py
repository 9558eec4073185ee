"""The host-side gateway of one run: the only way out of the sandbox.

The runtime (runtime/fdrt.py) sends one JSON line per ctx call over a Unix socket; a
thread per connection answers. For each call:

    journal has it? -> recorded result (resume)
    else: run limits -> rate limit -> [billing reserve] -> LLM / tool / state / memory
          -> span -> journal insert [+ billing settle of its LLM calls] (one commit)
          -> answer

A tool with effects outside the run has its intent journaled before the call and its
result written after; on resume, an intent with no result is in doubt: called again
with the same idempotency key if the tool is idempotent, else the run waits for a
member (needs_reconciliation).

A stop (a limit, a cancel) is answered with {"type": "stopped"}, which the runtime
raises as RunStopped; the supervisor (runner.py) kills the sandbox.
"""

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
from collections import deque
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection

from controlplane.tenancy import tenant_scope
from execution import contextfit, llm, ratelimit, services
from execution.budget import BudgetRefused, budget_hook
from execution.models import Run, StopReason
from execution.ops import OpError, state_and_memory_ops
from execution.retry import UpstreamError
from execution.spans import RunTracer, as_json, semconv_messages, system_instructions
from execution.tools import ToolCallError, tool_execute, tool_resolve, tool_validate
from replay.journal import Journal, StepIdentity, request_hash

log = logging.getLogger(__name__)
MAX_LINE = 8 * 1024 * 1024
MAX_CONNECTIONS = 64  # per run; each is a host thread
HELD_DB_CONNECTIONS = 2  # agent connections that may keep a pooled database connection
TOKEN_OPS = ("llm.messages", "context.fit")  # results that carry usage
# A replayed chat span's source span, whose stored input is its conversation: the span
# path's name for it (tracing/ingest/pipeline.py SOURCE_SPAN).
SOURCE_SPAN = "flightdeck.replay.source_span"
LEASE_LOST = "lease lost"  # the supervisor then stops the sandbox and writes no outcome


def gateway_listen(socket_path: Path) -> socket.socket:
    """The gateway's listening socket, before the gateway: the runner starts the sandbox
    on it and reads the journals while the sandbox boots, its connection waiting in the
    backlog until Gateway.start accepts it."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(socket_path))
        # The sandbox's own uid connects; the folder around it is private to this run.
        os.chmod(socket_path, 0o666)  # noqa: S103
        server.listen(64)
    except BaseException:
        server.close()
        raise
    return server


class Gateway:
    def __init__(
        self,
        *,
        run: Run,
        manifest: dict,
        limits: dict,
        tracer: RunTracer,
        socket_path: Path,
        budget=None,
    ):
        self.run_id, self.tenant_id, self.agent_id = run.pk, run.tenant_id, run.agent_id
        self.owner = run.lease_owner  # as claimed: each journal write checks it still is
        self.manifest, self.limits, self.tracer = manifest, limits, tracer
        self.socket_path = socket_path
        self.journal = Journal(run=run)
        self.lock = threading.Lock()
        # The run's counters, kept here and written by the supervisor once a second.
        self.steps = 0
        self.tool_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.recent = deque(maxlen=int(limits["loop_repeats"]))
        self.tool_slots = threading.BoundedSemaphore(int(limits["max_parallel_tools"]))
        self.stop_reason = ""
        self.finished: dict | None = None
        # Set when the agent finishes or the run is stopped: the supervisor waits on it
        # (and on the sandbox's exit) instead of polling.
        self.changed = threading.Event()
        self.hello = {
            "run_id": run.pk,
            "agent": run.agent.name,
            "model": manifest["model"],
            "entrypoint": manifest["entrypoint"],
            "input": run.input,
        }
        # Billing's reserve/settle seam (execution/budget.py); the runner's, when it
        # reserved the sandbox's CPU time before this gateway existed.
        self.budget = budget if budget is not None else budget_hook()
        # Per agent thread: the LLM calls of the operation it is running, settled in the
        # commit of that operation's journal step (or alone if it never gets one).
        self._call = threading.local()
        self.ops = {
            "llm.messages": self._llm,
            "tool": self._tool,
            "now": lambda args: (time.time(), {}),
            "random": lambda args: (random.random(), {}),
            "context.fit": self._context_fit,
            **state_and_memory_ops(tenant_id=run.tenant_id, run_id=run.pk, agent_id=run.agent_id),
        }
        self._tool_specs: dict = {}
        self._intents: set[StepIdentity] = set()  # calls whose intent row exists
        # Answers served from a source journal, written in batches (journal_flush).
        self._served: list[list] = []
        # Work an answer leaves for after it is sent (_after_reply), still to be done.
        self._pending = 0
        self._idle = threading.Condition(self.lock)
        self.awaiting: StepIdentity | None = None  # the call in doubt a member must settle
        self.diverged: dict | None = None  # a replay's report of its first unknown call
        self._server: socket.socket | None = None
        self._conns: set[socket.socket] = set()

    # --- serving ---------------------------------------------------------------------

    def start(self, server: socket.socket | None = None) -> "Gateway":
        """Accept the sandbox's connections, on `server` (gateway_listen's) or on a
        socket of its own at socket_path."""
        self._server = server or gateway_listen(self.socket_path)
        threading.Thread(target=self._accept, daemon=True, name=f"gw-{self.run_id}").start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        # What the last answers left to do goes into the final flush of spans and rows.
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0, timeout=5.0)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            with self.lock:
                if len(self._conns) >= MAX_CONNECTIONS:
                    conn.close()  # a thread per connection: the agent may not have many
                    continue
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        close_old_connections()
        pooled = bool(connection.settings_dict.get("OPTIONS", {}).get("pool"))
        try:
            with tenant_scope(self.tenant_id), conn, conn.makefile("rb") as reader:
                while True:
                    line = reader.readline(MAX_LINE + 1)
                    if not line:
                        return
                    if len(line) > MAX_LINE:
                        conn.sendall(self._encode(_error("invalid", "request too large")))
                        return
                    try:
                        request = json.loads(line)
                        op, args = request["op"], request.get("args") or {}
                        thread, seq = request.get("thread", "main"), request.get("seq", 0)
                        if not isinstance(args, dict) or not _thread_ok(thread, seq):
                            raise ValueError
                    except (ValueError, KeyError, TypeError):
                        reply = _error(
                            "invalid", "a request is one JSON object with op, args, thread, seq"
                        )
                    else:
                        reply = self._handle_safely(op, args, thread, seq)
                    if pooled and len(self._conns) > HELD_DB_CONNECTIONS:
                        # A many-threaded agent: back to the pool between calls, so its
                        # idle threads do not hold the worker's few pooled connections.
                        # A plain agent (one or two threads) keeps its own: a pool
                        # round trip costs about half a millisecond a call.
                        connection.close()
                    try:
                        conn.sendall(self._encode(reply))
                    finally:
                        self._after_reply()
        except OSError:
            pass
        finally:
            with self.lock:
                self._conns.discard(conn)
            connection.close()  # this thread's database connection

    def _handle_safely(self, op: str, args: dict, thread: str, seq: int) -> dict:
        # The connection's own thread sends the answer before the bookkeeping an answer
        # from a source journal leaves (its span, its sealed row): done while the agent
        # reads the answer and makes its next call, it is off the replay's path.
        self._call.after = []
        try:
            return self.handle(op, args, thread=thread, thread_seq=seq)
        except services.LeaseLost:  # another worker has the run: not one more step here
            return self._stopped(LEASE_LOST)
        except Exception:  # noqa: BLE001 - the agent gets an answer, the log the details
            log.exception("run %s: the gateway failed on %s", self.run_id, op)
            return _error("internal", f"the platform failed on {op}; the error is logged")

    def _defer(self, work) -> None:
        """Run `work` once the answer is sent (at once when the caller is not a
        connection's thread, like a test calling handle)."""
        after = getattr(self._call, "after", None)
        if after is None:
            work()
            return
        with self.lock:
            self._pending += 1
        after.append(work)

    def _after_reply(self) -> None:
        work, self._call.after = self._call.after, None
        for item in work or ():
            try:
                item()
            except Exception:  # noqa: BLE001 - the agent has its answer, the log the details
                log.exception("run %s: the gateway failed after an answer", self.run_id)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    @staticmethod
    def _encode(reply: dict) -> bytes:
        return json.dumps(reply, default=str).encode() + b"\n"

    # --- one call --------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        with self.lock:
            if not self.stop_reason:
                self.stop_reason = reason
        self.changed.set()

    def _stopped(self, reason: str) -> dict:
        self.stop(reason)
        return _error("stopped", f"the run was stopped: {self.stop_reason}")

    def handle(self, op: str, args: dict, *, thread: str = "main", thread_seq: int = 0) -> dict:
        if op == "hello":
            return {"ok": True, "result": self.hello}
        if op == "finish":
            self.finished = args
            self.changed.set()
            return {"ok": True, "result": None}
        if self.stop_reason:
            return self._stopped(self.stop_reason)
        handler = self.ops.get(op)
        if handler is None:
            return _error("invalid", f"unknown operation {op!r}")
        digest = request_hash(op, args)
        stop = self._admit(op, digest)
        if stop:
            return self._stopped(stop)
        step = self.journal.identify(digest, thread=thread, thread_seq=thread_seq)
        if step.step > self.limits["max_steps"]:
            return self._stopped(StopReason.STEPS)
        recorded = self.journal.recorded_step(step)
        edited = False  # the request run is not the agent's (a fork's edited step)
        if recorded is not None and recorded.done:
            self._count(op, recorded.result if not recorded.is_error else None)
            with self.lock:
                self.steps += 1
            if recorded.is_error:
                return {"ok": False, "error": recorded.result}
            return {"ok": True, "result": journal_answer(op, args, recorded.result)}
        if recorded is not None:  # an intent without a result: the call is in doubt
            with self.lock:
                self._intents.add(step)
        if self.journal.source is not None:
            answer = self.journal.source.answer(step, op, args)
            if answer.kind == "diverged":
                return self._diverged(answer.report)
            if answer.kind in ("serve", "result"):
                return self._from_source(step, op, args, answer)
            if answer.kind == "request":  # a fork's step run live with its edited request
                args = {**args, **answer.value}
                edited = True
        self._call.settlements = []
        try:
            return self._live(step, op, args, handler, edited=edited)
        finally:
            left, self._call.settlements = self._call.settlements, None
            for reservation, usage in left:  # stopped before its step was journaled
                self.budget.settle(reservation=reservation, usage=usage)

    def _live(self, step: StepIdentity, op: str, args: dict, handler, *, edited: bool) -> dict:
        limited = self._rate_limit(op, args)
        if limited:
            # Journaled like any answer: the same call of a resumed run gets the same one.
            result = {"type": "rate_limited", "message": limited}
            self._journal(step, op, args, result, is_error=True, started=time.perf_counter())
            return {"ok": False, "error": result}
        started_ns, started = time.time_ns(), time.perf_counter()
        span = {}
        try:
            result, span = self._tool(args, step) if op == "tool" else handler(args)
            is_error, reply = False, {"ok": True, "result": result}
        except InDoubt:
            return self._stopped("needs_reconciliation")
        except OpError as exc:
            result = {"type": exc.type, "message": exc.message}
            span = exc.span
            is_error, reply = True, {"ok": False, "error": result}
        if self.stop_reason:  # stopped while the call ran: the agent gets no answer
            return self._stopped(self.stop_reason)
        self._count(op, None if is_error else result)
        # The span first: the journal refers to its conversation instead of copying it.
        span_id = ""
        if span:
            span_id = self.tracer.record(
                span.pop("name"),
                start_ns=started_ns,
                end_ns=time.time_ns(),
                attributes=span,
                error=result["message"] if is_error else "",
            )
        # An edited request's result is kept whole: a resumed fork rebuilds from the
        # agent's request, not the edited one.
        journaled = result if is_error or edited else journal_result(op, args, result)
        self._journal(
            step, op, args, journaled, is_error=is_error, started=started, span_id=span_id
        )
        return reply

    def _diverged(self, report: dict) -> dict:
        from replay.services import run_divergence_record

        with self.lock:
            first = self.diverged is None
            if first:
                self.diverged = report
        if first:
            run_divergence_record(run_id=self.run_id, report=report)
        return self._stopped("diverged")

    def _from_source(self, step: StepIdentity, op: str, args: dict, answer) -> dict:
        """Answer from the source's journal (nothing upstream is called), journaled in
        this run too, with the span a live call would have left."""
        started_ns, started = time.time_ns(), time.perf_counter()
        if answer.kind == "serve":  # the source's journal form, kept as it is here
            journaled, is_error = answer.row.result, answer.row.is_error
            stored = answer.row.sealed_result  # and its sealed bytes, for this run's row
            result = journaled if is_error else journal_answer(op, args, journaled)
        else:  # a fork's step answered with the result its author gave
            result, is_error = answer.value, False
            stored = journaled = journal_result(op, args, result)
        self._count(op, None if is_error else result)
        ended_ns = time.time_ns()
        if step in self._intents:
            self._served_span(op, args, answer, result, is_error, started_ns, ended_ns)
            self._journal(step, op, args, journaled, is_error=is_error, started=started)
        else:
            # Not committed before the answer, unlike a live call's row: a replay taken up
            # after a crash is served the same answer from the same source, so a row lost
            # here changes nothing, and 100 commits cost more than the rest of the replay.
            # Its span and sealed row are made once the answer is sent.
            duration_ms = (time.perf_counter() - started) * 1000
            with self.lock:
                self.steps += 1

            def record():
                span_id = self._served_span(
                    op, args, answer, result, is_error, started_ns, ended_ns
                )
                self._served_row(step, op, args, answer, stored, is_error, span_id, duration_ms)

            self._defer(record)
        return {"ok": False, "error": result} if is_error else {"ok": True, "result": result}

    def _served_span(self, op, args, answer, result, is_error, started_ns, ended_ns) -> str:
        """The span of an answer from the source; its id, or '' for an operation
        without one."""
        recorded = self._source_request(answer)
        conversation = self._source_conversation(recorded, args) if op == "llm.messages" else ""
        params = {"model": self.manifest["model"], **args}
        if conversation:
            params["messages"] = None  # the span path takes it from the source's span
        span = served_span(op, params, result, is_error)
        if not span:
            return ""
        if answer.row is not None:
            span["flightdeck.replay.source_step"] = answer.row.step
        if conversation:
            span["gen_ai.input.messages"] = None
            span[SOURCE_SPAN] = conversation
        return self.tracer.record(
            span.pop("name"),
            start_ns=started_ns,
            end_ns=ended_ns,
            attributes=span,
            error=result.get("message", "") if is_error and isinstance(result, dict) else "",
        )

    @staticmethod
    def _source_request(answer):
        """The source step's journaled request (LLM calls'), or None."""
        return answer.row.llm_request() if answer.row is not None else None

    def _served_row(self, step, op, args, answer, journaled, is_error, span_id, duration_ms):
        """Buffer this run's journal row of an answer from the source."""
        recorded = self._source_request(answer)
        if isinstance(recorded, dict) and isinstance(recorded.get("messages"), dict):
            # The same request (its hash says so): the source's form of it, naming
            # this run's span, instead of hashing the whole conversation again.
            request = {**recorded, "messages": {**recorded["messages"], "span": span_id}}
        else:
            request = journal_request(op, args, span_id=span_id)
        row = services.journal_step_values(
            tenant_id=self.tenant_id,
            run_id=self.run_id,
            step=step,
            kind=op,
            request=request,
            result=journaled,
            is_error=is_error,
            duration_ms=duration_ms,
        )
        with self.lock:
            self._served.append(row)

    def _source_conversation(self, recorded, args: dict) -> str:
        """The source's chat span whose input is this call's conversation (16 hex), if
        the span path still holds it whole; else '' and the span carries it again."""
        sources = self.tracer.sources
        ref = recorded.get("messages") if isinstance(recorded, dict) else None
        messages = args.get("messages")
        if sources is None or not isinstance(ref, dict) or not isinstance(messages, list):
            return ""
        span = ref.get("span")
        if not isinstance(span, str) or sources.of(span, count=len(messages)) is None:
            return ""
        return span

    def _journal(
        self, step: StepIdentity, op, args, result, *, is_error: bool, started: float, span_id=""
    ) -> None:
        completes = step in self._intents

        def write():
            if completes:
                services.journal_step_complete(
                    owner=self.owner,
                    tenant_id=self.tenant_id,
                    run_id=self.run_id,
                    step=step,
                    result=result,
                    is_error=is_error,
                    duration_ms=(time.perf_counter() - started) * 1000,
                )
            else:
                services.journal_step_insert(
                    owner=self.owner,
                    tenant_id=self.tenant_id,
                    run_id=self.run_id,
                    step=step,
                    kind=op,
                    request=journal_request(op, args, span_id=span_id),
                    result=result,
                    is_error=is_error,
                    duration_ms=(time.perf_counter() - started) * 1000,
                )

        settlements = getattr(self._call, "settlements", None)
        joined = getattr(self.budget, "settle_journaled", None)
        if settlements:
            self._call.settlements = []
        if settlements and joined is not None:
            joined(settlements=settlements, write=write)
        else:
            write()
            for reservation, usage in settlements or ():
                self.budget.settle(reservation=reservation, usage=usage)
        with self.lock:
            if completes:
                self._intents.discard(step)
            self.steps += 1

    def journal_flush(self) -> None:
        """Write the answers served from the source since the last flush, at once (the
        supervisor calls this each tick and once the sandbox has exited)."""
        with self.lock:
            rows, self._served = self._served, []
        if rows:
            try:
                services.journal_steps_write(run_id=self.run_id, owner=self.owner, rows=rows)
            except services.LeaseLost:
                self.stop(LEASE_LOST)

    def _admit(self, op: str, digest: str) -> str:
        """The stop reason if this call may not run."""
        with self.lock:
            if op == "tool":
                if self.tool_calls >= self.limits["max_tool_calls"]:
                    return StopReason.TOOL_CALLS
                self.tool_calls += 1
            if (
                op in ("llm.messages", "context.fit")
                and self.input_tokens + self.output_tokens >= self.limits["budget_tokens"]
            ):
                return StopReason.BUDGET
            if op in ("llm.messages", "tool"):
                self.recent.append(digest)
                if len(self.recent) == self.recent.maxlen and len(set(self.recent)) == 1:
                    return StopReason.LOOP
        return ""

    def _count(self, op: str, result) -> None:
        usage = result.get("usage") if isinstance(result, dict) and op in TOKEN_OPS else None
        if usage:
            with self.lock:
                self.input_tokens += int(usage.get("input_tokens", 0))
                self.output_tokens += int(usage.get("output_tokens", 0))

    def counters(self) -> dict:
        with self.lock:
            return {
                "step_count": self.steps,
                "tool_call_count": self.tool_calls,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
            }

    def _rate_limit(self, op: str, args: dict) -> str:
        """'' once a token is taken, or why not (after waiting up to the maximum)."""
        rates = self.manifest.get("rate_limits", {})
        buckets = []
        if op == "llm.messages" and rates.get("llm_per_minute"):
            buckets.append((f"{self.tenant_id}:agent:{self.agent_id}:llm", rates["llm_per_minute"]))
        if op == "tool":
            if rates.get("tools_per_minute"):
                buckets.append(
                    (f"{self.tenant_id}:agent:{self.agent_id}:tools", rates["tools_per_minute"])
                )
            spec = self._spec_or_none(args.get("name"))
            if spec is not None and spec.rate_per_minute:
                buckets.append((f"{self.tenant_id}:tool:{spec.name}", spec.rate_per_minute))
        deadline = time.monotonic() + settings.EXECUTION_RATE_LIMIT_MAX_WAIT_MS / 1000
        for key, per_minute in buckets:
            while (wait := ratelimit.acquire(key, per_minute)) > 0:
                if time.monotonic() + wait > deadline:
                    return f"rate limit of {per_minute}/minute reached for {key.split(':', 1)[1]}"
                time.sleep(wait)
        return ""

    # --- operations ------------------------------------------------------------------

    def _spec(self, name):
        """The tool, resolved once per run: a definition edited mid-run applies to the
        next run, so one run sees one version of each tool."""
        if not isinstance(name, str):
            raise ToolCallError(f"a tool name is a string, not {name!r}", type_="unknown_tool")
        if name not in self._tool_specs:
            self._tool_specs[name] = tool_resolve(name=name, allowed=self.manifest["tools"])
        return self._tool_specs[name]

    def _spec_or_none(self, name):
        try:
            return self._spec(name)
        except (ToolCallError, TypeError):
            return None

    def _llm(self, args: dict) -> tuple[dict, dict]:
        params = {"model": self.manifest["model"], **args}
        span = chat_span(params)
        problem = llm.check_params(params)
        if problem:
            raise OpError("llm_error", problem, span)
        return self._llm_held(params, span), span

    def _llm_held(self, params: dict, span: dict, *, failed: str = "") -> dict:
        """One LLM call held to the run's budgets: its worst case reserved before (a
        refusal stops the run), its actual cost settled after."""
        reservation = self._reserve("llm", params, span)
        try:
            message, attempts = llm.messages_create(params)
        except UpstreamError as exc:
            self._settle_with_step(reservation, None)
            raise OpError("llm_error", f"{failed}{exc}", span) from None
        self._settle_with_step(reservation, message.get("usage"))
        chat_span_answered(span, message, attempts)
        return message

    def _settle_with_step(self, reservation, usage) -> None:
        """Settled when the operation's step is journaled, in its commit (the answer
        waits for that commit anyway); at once when no step will be."""
        if self.budget is None or reservation is None:
            return
        pending = getattr(self._call, "settlements", None)
        if pending is None:
            self.budget.settle(reservation=reservation, usage=usage)
        else:
            pending.append((reservation, usage))

    def _reserve(self, kind: str, request: dict, span: dict):
        """The budget's reservation for this call; a refusal stops the run."""
        if self.budget is None:
            return None
        try:
            return self.budget.reserve(run_id=self.run_id, kind=kind, request=request)
        except BudgetRefused as exc:
            self.stop(StopReason.BUDGET)
            raise OpError("budget", str(exc), span) from None

    def _intent(self, step: StepIdentity, spec, args: dict) -> None:
        """Journal the call before it is made; a call already in doubt (its intent
        journaled by a worker that died) goes again only if the tool is idempotent."""
        with self.lock:
            in_doubt = step in self._intents
            if not in_doubt:
                self._intents.add(step)
        if not in_doubt:
            services.journal_step_insert(
                owner=self.owner,
                tenant_id=self.tenant_id,
                run_id=self.run_id,
                step=step,
                kind="tool",
                request=journal_request("tool", args),
                result=None,
                is_error=False,
                duration_ms=0,
                done=False,
            )
        elif not spec.idempotent:
            from replay.services import run_in_doubt_record

            self.awaiting = step
            run_in_doubt_record(run_id=self.run_id, step=step, tool=spec.name, args=args)
            raise InDoubt

    def _tool(self, args: dict, step: StepIdentity) -> tuple[object, dict]:
        name, arguments = args.get("name"), args.get("arguments", {})
        span = {
            "name": f"execute_tool {name}",
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": str(name),
            "gen_ai.tool.call.id": f"{self.run_id}-{time.monotonic_ns()}",
            "gen_ai.tool.call.arguments": as_json(arguments),
        }
        try:
            spec = self._spec(name)
            problem = tool_validate(spec, arguments)
            if problem:
                raise ToolCallError(problem, type_="invalid_arguments")
            if spec.has_effects:
                self._intent(step, spec, args)
            key = step.idempotency_key(self.run_id)
            span["flightdeck.tool.idempotency_key"] = key
            reservation = self._reserve("tool", {"name": spec.name}, span)
            called = False
            try:
                with self.tool_slots:  # the bound on parallel tool calls within this run
                    called = True
                    if spec.slow:
                        from execution.slowtools import slow_tool_call

                        result, attempts, used = slow_tool_call(
                            gateway=self, spec=spec, arguments=arguments, idempotency_key=key
                        )
                    else:
                        result, attempts, used = tool_execute(
                            spec=spec, arguments=arguments, idempotency_key=key
                        )
            finally:
                if self.budget:
                    self.budget.settle(reservation=reservation, usage={"called": called})
        except ToolCallError as exc:
            span["flightdeck.tool.error"] = exc.type
            raise OpError("tool_error", str(exc), span) from None
        span.update(
            {
                "gen_ai.tool.call.result": as_json(result),
                "flightdeck.attempts": attempts,
                "flightdeck.tool.answered_by": used,
            }
        )
        return result, span

    def _context_fit(self, args: dict) -> tuple[dict, dict]:
        messages, budget = args.get("messages"), args.get("budget_tokens")
        if not isinstance(messages, list) or not isinstance(budget, int) or budget <= 0:
            raise OpError(
                "invalid", "fit needs messages (a list) and budget_tokens (a positive int)"
            )

        def summarise(dropped: list) -> str:
            prompt = (
                "Summarise this conversation in a few sentences, keeping facts, decisions "
                "and tool results:\n" + json.dumps(dropped, default=str)[:200_000]
            )
            params = {
                "model": self.manifest["model"],
                "max_tokens": contextfit.SUMMARY_MAX_TOKENS,
                "messages": [{"role": "user", "content": prompt}],
            }
            # The summary is an LLM call like any other: held to the budgets, and on
            # the trace as a chat span of its own, so reports count and price it.
            span, started_ns = chat_span(params), time.time_ns()
            message = self._llm_held(params, span, failed="summarising failed: ")
            self.tracer.record(
                span.pop("name"), start_ns=started_ns, end_ns=time.time_ns(), attributes=span
            )
            for key in ("input_tokens", "output_tokens"):
                spent[key] += message.get("usage", {}).get(key, 0)
            return " ".join(
                b.get("text", "") for b in message["content"] if b.get("type") == "text"
            )

        spent = {"input_tokens": 0, "output_tokens": 0}
        result = contextfit.fit(
            messages, budget, summarise=bool(args.get("summarise", True)), summarise_call=summarise
        )
        result["usage"] = spent  # the summary's tokens count against the budget
        return result, {}


def served_span(op: str, params: dict, result, is_error: bool) -> dict:
    """The span of a call answered from a journal: the shape a live one has."""
    if op == "llm.messages":
        span = chat_span(params)
        if not is_error and isinstance(result, dict):
            chat_span_answered(span, result, 0)
        return span
    if op == "tool":
        return {
            "name": f"execute_tool {params.get('name')}",
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": str(params.get("name")),
            "gen_ai.tool.call.arguments": as_json(params.get("arguments", {})),
            "gen_ai.tool.call.result": None if is_error else as_json(result),
        }
    return {}


def chat_span(params: dict) -> dict:
    """A chat span's request side (semantic conventions for GenAI)."""
    return {
        "name": f"chat {params['model']}",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": params["model"],
        "gen_ai.request.max_tokens": params.get("max_tokens"),
        "gen_ai.input.messages": as_json(semconv_messages(params.get("messages"))),
        "gen_ai.system_instructions": as_json(system_instructions(params.get("system"))),
        # The rest of the request, so the call can be opened in the playground as sent.
        "gen_ai.request.temperature": params.get("temperature"),
        "gen_ai.request.top_p": params.get("top_p"),
        "gen_ai.request.top_k": params.get("top_k"),
        "gen_ai.request.stop_sequences": params.get("stop_sequences"),
        "gen_ai.tool.definitions": as_json(params["tools"]) if params.get("tools") else None,
    }


def chat_span_answered(span: dict, message: dict, attempts: int) -> None:
    usage = message.get("usage", {})
    output = semconv_messages([{"role": "assistant", "content": message.get("content")}])[0]
    span.update(
        {
            "gen_ai.response.model": message.get("model"),
            "gen_ai.response.id": message.get("id"),
            "gen_ai.response.finish_reasons": [message.get("stop_reason") or ""],
            "gen_ai.usage.input_tokens": usage.get("input_tokens"),
            "gen_ai.usage.output_tokens": usage.get("output_tokens"),
            "gen_ai.output.messages": as_json(
                [{**output, "finish_reason": message.get("stop_reason")}]
            ),
            "flightdeck.attempts": attempts,
        }
    )


class InDoubt(Exception):
    """A non-idempotent tool call cut short by a crash: the run waits for a member."""


def _error(type_: str, message: str) -> dict:
    return {"ok": False, "error": {"type": type_, "message": message}}


def _thread_ok(thread, seq) -> bool:
    return (
        isinstance(thread, str)
        and 0 < len(thread) <= 64
        and isinstance(seq, int)
        and 0 <= seq < 2**31
    )


def journal_request(op: str, args: dict, *, span_id: str = ""):
    """What the journal keeps of a request. The conversation an LLM call resends is in
    the span path already (redacted, stored once as a chain of messages): the journal
    names the call's chat span for it, with the conversation's length and one hash, so
    a step costs the same whatever the length of the conversation (a copy, or a hash
    per message, would grow with its square). A context fit's conversation is the
    agent's to send again: its length and hash. Other requests are small: kept whole."""
    if op == "context.fit":
        messages = args.get("messages")
        if not isinstance(messages, list):
            return args
        return {**args, "messages": {"count": len(messages), "sha256": short_hash(messages)}}
    if op != "llm.messages":
        return args
    kept = {k: v for k, v in args.items() if k not in ("messages", "system", "tools")}
    messages = args.get("messages")
    if isinstance(messages, list):
        kept["messages"] = {"span": span_id, "count": len(messages), "sha256": short_hash(messages)}
    for name in ("system", "tools"):
        if args.get(name) is not None:
            kept[f"{name}_sha256"] = short_hash(args[name])
    return kept


def journal_result(op: str, args: dict, result):
    """What the journal keeps of a call's result: a context fit's without the messages
    it kept (contextfit.journal_form), the rest whole."""
    if op == "context.fit" and isinstance(args.get("messages"), list):
        return contextfit.journal_form(result, args["messages"])
    return result


def journal_answer(op: str, args: dict, journaled):
    """The answer a journaled result stands for, given the same request."""
    if op == "context.fit" and isinstance(args.get("messages"), list):
        return contextfit.from_journal(journaled, args["messages"])
    return journaled


def short_hash(value) -> str:
    return request_hash("", value)[:16]

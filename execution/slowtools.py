"""Slow tools run apart from the run while it waits.

The gateway writes a ToolCall row and sends `execution.tool_call`
(services.tool_call_create), then polls the row: the result comes back through the
database, which every deployment has (the embedded default keeps no Celery results).
services.tool_call_execute runs it: on a tools worker (`EXECUTION_TOOL_QUEUE`), or with
`EXECUTION_TOOL_THREADS` set, on that many threads of the run's own worker process (the
embedded default: one process for runs and tools, each with its own limit, so a run
never waits on a tool for a slot that runs hold).
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connections

from execution import selectors, services, tasks
from execution.tools import ToolCallError, ToolSpec

POLL_SECONDS = 0.05
log = logging.getLogger(__name__)
_threads: ThreadPoolExecutor | None = None
_threads_lock = threading.Lock()


def tool_call_send(*, tenant_id: int, tool_call_id: int) -> None:
    """To the tools queue, or to this process's tool threads when it has some."""
    if not settings.EXECUTION_TOOL_THREADS:
        tasks.tool_call.apply_async(
            kwargs={"tenant_id": tenant_id, "tool_call_id": tool_call_id},
            queue=settings.EXECUTION_TOOL_QUEUE,
        )
        return
    global _threads
    with _threads_lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(
                max_workers=settings.EXECUTION_TOOL_THREADS, thread_name_prefix="tool"
            )
    _threads.submit(_tool_call_here, tenant_id=tenant_id, tool_call_id=tool_call_id)


def _tool_call_here(*, tenant_id: int, tool_call_id: int) -> None:
    try:
        tasks.tool_call(tenant_id=tenant_id, tool_call_id=tool_call_id)
    except Exception:  # the waiting gateway times out; the thread serves the next call
        log.exception("slow tool call %s failed", tool_call_id)
    finally:
        connections.close_all()  # this thread's own; the next call may come much later


def slow_tool_call(
    *, gateway, spec: ToolSpec, arguments: dict, idempotency_key: str = ""
) -> tuple[object, int, str]:
    call = services.tool_call_create(
        tenant_id=gateway.tenant_id,
        run_id=gateway.run_id,
        tool=spec.name,
        arguments=arguments,
        idempotency_key=idempotency_key,
    )
    # Room for the retries and a queue wait; the run's own wall time still bounds it.
    deadline = time.monotonic() + spec.timeout * settings.EXECUTION_RETRY_ATTEMPTS + 30
    while time.monotonic() < deadline and not gateway.stop_reason:
        time.sleep(POLL_SECONDS)
        row = selectors.tool_call_answer(tool_call_id=call.pk)
        if row is None:
            continue
        result = row["result"]
        if row["is_error"]:
            raise ToolCallError(result["message"], attempts=result.get("attempts", 1))
        return result["value"], result["attempts"], result["answered_by"]
    raise ToolCallError(f"{spec.name} did not finish in time on the tools queue")

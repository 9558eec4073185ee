"""Slow tools run on their own Celery queue while the run waits.

The gateway writes a ToolCall row, enqueues `execution.tool_call`, and polls the row:
the result comes back through the database, which every deployment has (the embedded
default keeps no Celery results).
"""

import time

from django.conf import settings
from django.db import transaction

from execution.models import ToolCall
from execution.tools import ToolCallError, ToolSpec, tool_execute, tool_lookup

POLL_SECONDS = 0.05


def slow_tool_call(*, gateway, spec: ToolSpec, arguments: dict) -> tuple[object, int, str]:
    from execution import tasks

    call = ToolCall.objects.create(
        tenant_id=gateway.tenant_id, run_id=gateway.run_id, tool=spec.name, arguments=arguments
    )
    transaction.on_commit(
        lambda: tasks.tool_call.apply_async(
            kwargs={"tenant_id": gateway.tenant_id, "tool_call_id": call.pk},
            queue=settings.EXECUTION_TOOL_QUEUE,
        )
    )
    # Room for the retries and a queue wait; the run's own wall time still bounds it.
    deadline = time.monotonic() + spec.timeout * settings.EXECUTION_RETRY_ATTEMPTS + 30
    while time.monotonic() < deadline and not gateway.stop_reason:
        time.sleep(POLL_SECONDS)
        row = (
            ToolCall.objects.filter(pk=call.pk, status="done").values("result", "is_error").first()
        )
        if row is None:
            continue
        result = row["result"]
        if row["is_error"]:
            raise ToolCallError(result["message"], attempts=result.get("attempts", 1))
        return result["value"], result["attempts"], result["answered_by"]
    raise ToolCallError(f"{spec.name} did not finish in time on the tools queue")


def tool_call_execute(*, tool_call_id: int) -> None:
    """Run one queued slow tool call (the tools worker). Safe to run twice."""
    if ToolCall.objects.filter(pk=tool_call_id, status="queued").update(status="running") != 1:
        return  # done, or another delivery has it
    call = ToolCall.objects.get(pk=tool_call_id)
    spec = tool_lookup(name=call.tool)
    try:
        if spec is None:
            raise ToolCallError(f"unknown tool {call.tool!r}")
        value, attempts, used = tool_execute(spec=spec, arguments=call.arguments)
        result, is_error = {"value": value, "attempts": attempts, "answered_by": used}, False
    except ToolCallError as exc:
        result, is_error = {"message": str(exc), "attempts": exc.attempts}, True
    ToolCall.objects.filter(pk=tool_call_id).update(status="done", result=result, is_error=is_error)

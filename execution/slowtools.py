"""Slow tools run on their own Celery queue while the run waits.

The gateway writes a ToolCall row and enqueues `execution.tool_call`
(services.tool_call_create), then polls the row: the result comes back through the
database, which every deployment has (the embedded default keeps no Celery results).
The tools worker runs it in services.tool_call_execute.
"""

import time

from django.conf import settings

from execution import selectors, services
from execution.tools import ToolCallError, ToolSpec

POLL_SECONDS = 0.05


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

"""Managed execution's reads, for the API, the console and the runner. Each runs under
the caller's tenant scope (the managers fail closed without one); a `_get` returns None
when the tenant has no such row, so the caller answers 404."""

from django.db.models import QuerySet

from execution.models import (
    Agent,
    AgentVersion,
    AllowedHost,
    Credential,
    MemoryItem,
    Run,
    RunState,
    ToolCall,
    ToolDefinition,
)
from replay.models import JournalStep

# --- agents ------------------------------------------------------------------------------


def agent_list() -> QuerySet[Agent]:
    """The tenant's agents by name, each with its versions at hand."""
    return Agent.objects.prefetch_related("versions").order_by("name")


def agent_get(*, agent_id: int) -> Agent | None:
    return Agent.objects.filter(pk=agent_id).first()


def agent_find(*, ref: str) -> Agent | None:
    """An agent by its id ("12") or its name ("support-bot")."""
    if ref.isdigit():
        return agent_get(agent_id=int(ref))
    return Agent.objects.filter(name=ref).first()


def agent_version_list(*, agent: Agent) -> QuerySet[AgentVersion]:
    """An agent's versions, newest first."""
    return AgentVersion.objects.filter(agent=agent).order_by("-version")


# --- runs --------------------------------------------------------------------------------


def run_list(*, status: str | None = None, agent: str | None = None) -> QuerySet[Run]:
    """The tenant's runs, newest first; `status` a RunStatus value, `agent` an agent's name."""
    runs = Run.objects.select_related("agent", "version").order_by("-created_at", "-id")
    if status:
        runs = runs.filter(status=status)
    if agent:
        runs = runs.filter(agent__name=agent)
    return runs


def run_get(*, run_id: int) -> Run | None:
    return Run.objects.select_related("agent", "version").filter(pk=run_id).first()


def run_of_trace(*, run_id: str, trace_id: str) -> Run | None:
    """The run a trace's spans name (`flightdeck.run.id`), if it is the tenant's and
    wrote that trace: an external exporter may put anything in the attribute."""
    if not run_id.isdigit():
        return None
    run = run_get(run_id=int(run_id))
    return run if run is not None and run.trace_id == trace_id else None


def run_steps(*, run: Run, after: int = 0) -> QuerySet[JournalStep]:
    """A run's journal, in step order; with `after`, only the steps after that one (what a
    page showing a running run has not seen yet)."""
    return JournalStep.objects.filter(run=run, step__gt=after).order_by("step")


def run_steps_of(*, run_id: int) -> QuerySet[JournalStep]:
    """The journal of a run by id, in step order (a replay reads its source's: the
    worker's scope is the tenant both belong to)."""
    return JournalStep.objects.filter(run_id=run_id).order_by("step")


def run_step_get(*, run: Run, step: int) -> JournalStep | None:
    return JournalStep.objects.filter(run=run, step=step).first()


def run_cancel_requested(*, run_id: int) -> bool:
    return bool(Run.objects.filter(pk=run_id).values_list("cancel_requested", flat=True).first())


def run_stop_wanted(*, run_id: int) -> str:
    """Why the run should stop now ("cancelled", or a reason an alert asked for), or ""."""
    row = Run.objects.filter(pk=run_id).values_list("cancel_requested", "stop_requested").first()
    if row is None:
        return ""
    return "cancelled" if row[0] else row[1]


# --- what the gateway reads while a run is live ------------------------------------------


def run_state_get(*, run_id: int, key: str) -> RunState | None:
    return RunState.objects.filter(run_id=run_id, key=key).first()


def memory_item_get(*, agent_id: int, key: str) -> MemoryItem | None:
    return MemoryItem.objects.filter(agent_id=agent_id, key=key).first()


def memory_item_list(*, agent_id: int) -> QuerySet[MemoryItem]:
    """An agent's memories, with only what search needs."""
    return MemoryItem.objects.filter(agent_id=agent_id).only("key", "value", "text")


def tool_call_answer(*, tool_call_id: int) -> dict | None:
    """A slow tool call's {"result", "is_error"} once the tools worker is done, else None."""
    done = ToolCall.objects.filter(pk=tool_call_id, status="done")
    return done.values("result", "is_error").first()


# --- tools, credentials, allowlist -------------------------------------------------------


def tool_list() -> QuerySet[ToolDefinition]:
    return ToolDefinition.objects.order_by("name")


def tool_definition_find(*, name: str) -> ToolDefinition | None:
    return ToolDefinition.objects.filter(name=name).first()


def credential_list() -> QuerySet[Credential]:
    """The vault's entries by name; the ciphertext stays in the database."""
    return Credential.objects.defer("ciphertext").order_by("name")


def credential_ciphertext(*, name: str) -> bytes | None:
    """The sealed value of the credential `name`; only the vault opens it."""
    return Credential.objects.filter(name=name).values_list("ciphertext", flat=True).first()


def allowed_host_list() -> QuerySet[AllowedHost]:
    return AllowedHost.objects.order_by("host")


def allowed_host_entries() -> list[str]:
    """The allowlist as stored, for the egress check at call time."""
    return list(AllowedHost.objects.values_list("host", flat=True))

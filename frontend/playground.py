"""The playground page: a recorded LLM call (any chat span, an external agent's too) as
a form, run through replay.playground's service as the API runs it.

The form holds what was typed, as text: a message whose content is blocks (tool_use,
tool_result) is edited as their JSON, parameters as numbers, stop sequences one a line.
`body_of` turns it into the API's request body; the service checks the rest and its
refusals land on the field they name. Add and remove re-render the form without a call.
"""

import json
import math
from dataclasses import dataclass

from django.http import Http404
from django.views.decorators.http import require_http_methods

from billing.prices import usd
from controlplane.services import Actor
from execution.budget import BudgetRefused
from frontend import present, roles
from frontend.decorators import found_or_404, tenant_view
from frontend.render import render_page
from replay import playground, selectors
from replay.playground_api import result_payload
from tracing import selectors as tracing_selectors
from tracing.query.filters import FilterError, parse_span_id, parse_trace_id

PARAMETERS = ("max_tokens", "temperature", "top_p", "top_k")
# The fields the form shows an error beside; the service's others go above the Run button.
FIELDS = ("model", "system", "messages", *PARAMETERS, "stop_sequences", "tools")
INTEGERS = ("max_tokens", "top_k")


@dataclass(slots=True)
class MessageField:
    role: str
    text: str  # what the textarea holds
    blocks: bool  # `text` is the content blocks as JSON


def _source_or_404(trace_id: str, span_id: str):
    try:
        tid, sid = parse_trace_id(trace_id), parse_span_id(span_id)
    except FilterError:
        raise Http404("no such span") from None
    return found_or_404(tracing_selectors.span_get(span_id=sid, trace_id=tid), "span")


def _as_text(value) -> str:
    return "" if value is None else str(value)


def form_of(editable: dict) -> dict:
    """The form, filled from the recorded call."""
    messages = [
        MessageField(m["role"], m["content"], False)
        if isinstance(m["content"], str)
        else MessageField(m["role"], json.dumps(m["content"], indent=2), True)
        for m in editable["messages"]
    ]
    return {
        "model": editable["model"],
        "system": editable["system"] or "",
        "messages": messages,
        **{name: _as_text(editable.get(name)) for name in PARAMETERS},
        "stop_sequences": "\n".join(editable.get("stop_sequences") or []),
        "tools": json.dumps(editable["tools"], indent=2) if editable.get("tools") else "",
    }


def form_posted(post) -> dict:
    """The form as it was sent back."""
    roles_, texts, kinds = (post.getlist(k) for k in ("role", "content", "format"))
    messages = [
        MessageField(role, text, kind == "blocks")
        for role, text, kind in zip(roles_, texts, kinds, strict=False)
    ]
    return {
        "model": post.get("model", ""),
        "system": post.get("system", ""),
        "messages": messages,
        **{name: post.get(name, "") for name in PARAMETERS},
        "stop_sequences": post.get("stop_sequences", ""),
        "tools": post.get("tools", ""),
    }


def _number(raw: str, name: str, errors: dict):
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = int(raw) if name in INTEGERS else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        kind = "a whole number" if name in INTEGERS else "a number"
        errors[name] = f"must be {kind}, not {raw[:40]!r}"
        return None
    return value


def body_of(form: dict) -> tuple[dict, dict]:
    """The API's request body, and what could not be read, by field."""
    errors, messages = {}, []
    for i, message in enumerate(form["messages"]):
        content = message.text
        if message.blocks:
            try:
                content = json.loads(message.text)
            except ValueError as exc:
                errors.setdefault("messages", f"[{i}]: the content blocks are not JSON ({exc})")
        messages.append({"role": message.role, "content": content})
    body = {
        "model": form["model"].strip(),
        "system": form["system"] or None,
        "messages": messages,
        **{name: _number(form[name], name, errors) for name in PARAMETERS},
        "stop_sequences": [s for s in form["stop_sequences"].splitlines() if s] or None,
    }
    if form["tools"].strip():
        try:
            body["tools"] = json.loads(form["tools"])
        except ValueError as exc:
            errors["tools"] = f"not JSON ({exc})"
    return {k: v for k, v in body.items() if v is not None}, errors


def _edit(form: dict, action: str) -> None:
    """Add a message (the other role than the last's) or remove one."""
    messages = form["messages"]
    if action == "add":
        last = messages[-1].role if messages else "assistant"
        messages.append(MessageField("assistant" if last == "user" else "user", "", False))
    elif action.startswith("remove-") and action[7:].isdigit():
        index = int(action[7:])
        if index < len(messages):
            del messages[index]


def _shown(content) -> list[dict]:
    """Content as the page shows it: text as text, other blocks as their JSON."""
    if isinstance(content, str):
        return [{"text": content}]
    return [
        {"text": b["text"]} if b.get("type") == "text" else {"json": present.pretty(b)}
        for b in content
    ]


def _answer(result) -> dict:
    shown = result_payload(result)
    shown["blocks"] = _shown(shown["content"])
    return shown


def _runs(source: dict) -> list[dict]:
    return [
        {"run": run, "cost_usd": usd(run.cost_nusd)}
        for run in selectors.playground_runs_of(
            trace_id=source["trace_id"], span_id=source["span_id"], limit=10
        )
    ]


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.RUN)
def playground_page(request, tenant_slug, trace_id, span_id):
    span = _source_or_404(trace_id, span_id)
    try:
        editable = playground.playground_request(span=span)
    except playground.NotAnLLMCall as exc:
        context = {"refused": exc.message, "trace_hex": span.trace_id.hex, "span_hex": span_id}
        return render_page(request, "frontend/playground.html", context, status=400)
    context = {
        "source": editable["source"],
        "notes": editable["notes"],
        "redactions": sorted(editable["redactions"].items()),
        "recorded": [_shown(m["content"]) for m in editable["recorded_output"]],
        "models": playground.known_models(tenant_id=request.tenant.pk),
        "errors": {},
    }
    status = 200
    action = request.POST.get("action", "run")
    if request.method == "GET":
        form = form_of(editable)
    else:
        form = form_posted(request.POST)
        if action != "run":
            _edit(form, action)
        else:
            status = _run(request, span, form, context)
    context["form"] = form
    context["other_errors"] = {k: v for k, v in context["errors"].items() if k not in FIELDS}
    context["runs"] = _runs(editable["source"])
    response = render_page(request, "frontend/playground.html", context, status=status)
    if "retry_after" in context:
        response["Retry-After"] = str(context["retry_after"])
    return response


def _run(request, span, form: dict, context: dict) -> int:
    """Run the form's call; fills the context with the answer or the refusal and
    returns the page's status."""
    body, errors = body_of(form)
    if errors:
        context["errors"] = errors
        return 400
    try:
        result = playground.playground_run(source=span, body=body, actor=Actor(user=request.user))
    except playground.PlaygroundInvalid as exc:
        context["errors"] = {exc.field: exc.message}
        return 400
    except playground.PlaygroundRateLimited as exc:
        context["refusal"] = str(exc)
        context["retry_after"] = max(1, math.ceil(exc.retry_after))
        return 429
    except BudgetRefused as exc:
        context["refusal"] = str(exc)
        return 402
    context["answer"] = _answer(result)
    if result.error:
        context["refusal"] = f"The model API failed: {result.error}"
        return 502
    return 200

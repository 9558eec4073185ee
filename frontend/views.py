"""The web UI: trace list and search, trace view, span detail, sessions, first-trace setup.

Views parse, call tracing's selectors and render; one URL serves a page and, for htmx,
its fragment (`is_partial`). Every tenant page goes through `tenant_view`.
"""

import orjson
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from alerts import selectors as alerts_selectors
from billing import selectors as billing_selectors
from controlplane import services as controlplane_services
from controlplane.auth import session_tenant
from controlplane.models import Scope
from execution import selectors as execution_selectors
from frontend import present, roles
from frontend.decorators import is_partial, tenant_view
from frontend.forms import LoginForm
from frontend.render import render_page
from replay import playground
from replay import selectors as replay_selectors
from tracing import selectors
from tracing.query import export, sessions, traces, users
from tracing.query.filters import (
    FilterError,
    parse_span_id,
    parse_trace_filters,
    parse_trace_id,
    parse_whole,
    span_hex,
)
from tracing.retention import selectors as retention_selectors
from tracing.retention import services as retention_services

PAGE = 50
# Traces with more spans than this open with deep subtrees collapsed, and their rows
# arrive in chunks as the tree is scrolled.
BIG_TRACE = 300
ROW_CHUNK = 400
TIME_RANGES = [
    ("", "All time"),
    ("15m", "Last 15 min"),
    ("1h", "Last hour"),
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
]


class LoginView(auth_views.LoginView):
    template_name = "frontend/login.html"
    redirect_authenticated_user = True
    form_class = LoginForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.throttled:
            response.status_code = 429
            response["Retry-After"] = str(form.throttled.retry_after)
        return response


@require_GET
def home(request):
    if not request.user.is_authenticated:
        return redirect("login")
    tenant, _ = session_tenant(request)
    if tenant is None:
        return render(request, "frontend/no_tenant.html", status=200)
    return redirect("trace-list", tenant_slug=tenant.slug)


@require_GET
@tenant_view
def trace_list(request, tenant_slug):
    error = None
    try:
        filters = parse_trace_filters(request.GET, strict=False)
        rows, next_cursor = traces.trace_page(
            filters=filters, cursor=request.GET.get("cursor", ""), limit=PAGE
        )
    except FilterError as exc:
        error, rows, next_cursor = exc, [], None
        filters = None
    context = {
        "rows": _with_alerts(_with_costs(rows)),
        "next_cursor": next_cursor,
        "error": error,
        "filtering": filters is not None and not filters.is_empty,
        "seen": traces.latest_trace_row(),
    }
    if is_partial(request):
        if request.GET.get("cursor"):
            return render_page(request, "frontend/_trace_rows.html", context)
        response = render_page(
            request, "frontend/_results.html", context, status=400 if error else 200
        )
        # The address bar gets the search without the form's empty fields: short to share.
        response["HX-Push-Url"] = _clean_url(request)
        return response
    has_any = traces.traces_exist()
    context.update(
        {
            "facets": traces.trace_facets(),
            "time_ranges": TIME_RANGES,
            "has_any": has_any,
            "setup": None if has_any else _setup_context(request),
        }
    )
    return render_page(request, "frontend/traces.html", context, status=400 if error else 200)


def _clean_url(request) -> str:
    params = request.GET.copy()
    for key in list(params):
        kept = [v for v in params.getlist(key) if v.strip()]
        if kept and key != "cursor":
            params.setlist(key, kept)
        else:
            del params[key]
    query = params.urlencode()
    return request.path + (f"?{query}" if query else "")


@require_GET
@tenant_view
def trace_counts(request, tenant_slug):
    """Counts of the current search, polled by the list: matches, errors, new ones."""
    try:
        filters = parse_trace_filters(request.GET, strict=False)
    except FilterError:
        return HttpResponse("")  # the list shows the filter's error already
    seen = request.GET.get("seen", "")
    try:
        after_id = parse_whole(seen, "seen") if seen else None
    except FilterError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    counts = traces.trace_counts(filters=filters, after_id=after_id)
    return render_page(request, "frontend/_counts.html", {"counts": counts})


def _trace_or_404(raw: str):
    try:
        trace_id = parse_trace_id(raw)
    except FilterError:
        raise Http404("no such trace") from None
    trace = traces.trace_get(trace_id=trace_id)
    if trace is None:
        raise Http404("no such trace")
    return trace


@require_GET
@tenant_view
def trace_detail(request, tenant_slug, trace_id):
    trace = _trace_or_404(trace_id)
    rows = traces.trace_spans(trace_id=trace.trace_id)
    t0 = min((r["start_ns"] for r in rows), default=trace.start_ns)
    t1 = max((r["end_ns"] for r in rows), default=trace.end_ns)
    collapse_below = 1 if len(rows) > BIG_TRACE else None
    offset = request.GET.get("offset", "")
    if is_partial(request) and offset:
        # The next chunk of tree rows, asked for as the tree scrolls into view.
        try:
            start = parse_whole(offset, "offset")
        except FilterError as exc:
            return HttpResponse(str(exc), status=400, content_type="text/plain")
        html = present.span_rows_html(
            rows,
            t0=t0,
            total_ns=t1 - t0,
            collapse_below=collapse_below,
            start=start,
            stop=start + ROW_CHUNK,
            costs=billing_selectors.span_costs(trace_id=trace.trace_id),
        )
        more = start + ROW_CHUNK < len(rows)
        return render_page(
            request,
            "frontend/_span_rows.html",
            {"rows_html": html, "trace": trace, "next_offset": start + ROW_CHUNK if more else None},
        )
    # Opening with ?span=<id>: that span's detail is in the page, and its rows load with it.
    selected = request.GET.get("span", "")
    first = ROW_CHUNK
    detail = None
    if selected:
        index = next((r["index"] for r in rows if span_hex(r["span_id"]) == selected), None)
        if index is not None:
            first = max(first, index + 1)
            detail = _span_context(trace, selected)
    html = present.span_rows_html(
        rows[:first],
        t0=t0,
        total_ns=t1 - t0,
        collapse_below=collapse_below,
        costs=billing_selectors.span_costs(trace_id=trace.trace_id),
    )
    context = {
        "trace": trace,
        "status": present.STATUS.get(trace.status, "unset"),
        "rows_html": html,
        "span_total": len(rows),
        "next_offset": first if first < len(rows) else None,
        "ticks": present.axis_ticks((t1 - t0) / 1e6),
        "models": sorted(
            {r[k] for r in rows for k in ("request_model", "response_model") if r.get(k)}
        ),
        "root_io": _root_io(trace, rows),
        "selected": selected if detail else "",
        "detail": detail,
        "big": collapse_below is not None,
        "run": execution_selectors.run_of_trace(run_id=trace.run_id, trace_id=trace.trace_id.hex),
        "cost": billing_selectors.totals("trace", [trace.trace_id.hex]).get(trace.trace_id.hex),
        "alerts": alerts_selectors.alerted_traces(trace_ids=[trace.trace_id.hex]).get(
            trace.trace_id.hex, 0
        ),
        "playground_run": replay_selectors.playground_run_of_trace(trace_id=trace.trace_id.hex),
        "mark": retention_selectors.trace_mark_get(trace_hex=trace.trace_id.hex),
        "extended_days": retention_selectors.retention_policy_get()
        .of(trace.agent_name)
        .extended_days,
    }
    return render_page(request, "frontend/trace.html", context)


@require_POST
@tenant_view
@roles.requires(roles.RUN)
def trace_mark(request, tenant_slug, trace_id):
    """Mark the trace to keep (`marked=1`) or take the mark off (`marked=0`)."""
    trace = _trace_or_404(trace_id)
    actor = controlplane_services.Actor(user=request.user)
    hex_id = trace.trace_id.hex
    if request.POST.get("marked") == "0":
        retention_services.trace_mark_clear(tenant=request.tenant, actor=actor, trace_hex=hex_id)
    else:
        retention_services.trace_mark_set(tenant=request.tenant, actor=actor, trace_hex=hex_id)
    return redirect("trace-detail", tenant_slug=request.tenant.slug, trace_id=hex_id)


def _root_io(trace, rows: list) -> dict | None:
    """The Input / Output panel: the root span's input.value and output.value, which
    OpenInference agents, LangGraph and others set."""
    root = next((r for r in rows if r["parent"] is None), None)
    if root is None:
        return None
    span = selectors.span_get(span_id=root["span_id"], trace_id=trace.trace_id)
    attributes = selectors.span_detail(span=span)["attributes"] if span else {}
    shown = {
        "input": present.io_view(attributes.get("input.value")),
        "output": present.io_view(attributes.get("output.value")),
    }
    return shown if shown["input"] or shown["output"] else None


@require_GET
@tenant_view
def trace_download(request, tenant_slug, trace_id):
    """The whole trace as a file: Flightdeck's JSON, or OTLP/JSON (?format=otlp) that
    POST /v1/traces takes back."""
    trace = _trace_or_404(trace_id)
    otlp = request.GET.get("format") == "otlp"
    write = export.trace_export_otlp if otlp else export.trace_export_json
    body = write(trace=trace)
    name = f"trace-{trace.trace_id.hex}{'.otlp' if otlp else ''}.json"
    response = HttpResponse(orjson.dumps(body), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _with_costs(rows: list) -> list:
    """Each trace row with billing's cost (one query for the page); None until costed."""
    costs = billing_selectors.totals("trace", [t.trace_id.hex for t in rows])
    for t in rows:
        t.cost = costs.get(t.trace_id.hex)
    return rows


def _with_alerts(rows: list) -> list:
    """Each trace row with how many alerts it raised (one query for the page)."""
    counts = alerts_selectors.alerted_traces(trace_ids=[t.trace_id.hex for t in rows])
    for t in rows:
        t.alerts = counts.get(t.trace_id.hex, 0)
    return rows


def _span_context(trace, span_hex: str) -> dict | None:
    try:
        sid = parse_span_id(span_hex)
    except FilterError:
        return None
    span = selectors.span_get(span_id=sid, trace_id=trace.trace_id)
    if span is None:
        return None
    detail = selectors.span_detail(span=span)
    labels = selectors.span_labels(span=span)
    conversation = []
    system = present.system_view(detail["system_instructions"])
    if system:
        conversation.append(system)
    conversation += [present.message_view(m) for m in detail["input_messages"] or []]
    output = [present.message_view(m) for m in detail["output_messages"] or []]
    llm_call = labels["operation"] in playground.LLM_OPERATIONS
    return {
        "span": span,
        "cost": billing_selectors.span_costs(trace_id=trace.trace_id).get(span.span_id),
        "span_hex": span_hex,
        "offset_ms": (span.start_ns - trace.start_ns) / 1e6,
        "status": present.STATUS.get(span.status_code, "unset"),
        "name": selectors.span_display_name(span=span),
        "labels": labels,
        "op": present.operation_class(labels["operation"]),
        "conversation": conversation,
        "output": output,
        "tool_arguments": present.with_redactions(present.pretty(detail["tool_call_arguments"]))
        if detail["tool_call_arguments"] is not None
        else None,
        "tool_result": present.with_redactions(present.pretty(detail["tool_call_result"]))
        if detail["tool_call_result"] is not None
        else None,
        "attributes": present.attribute_rows(detail["attributes"]),
        "resource": present.attribute_rows(detail["resource"]),
        "events": [
            {**e, "attribute_rows": present.attribute_rows(e.get("attributes") or {})}
            for e in detail["events"]
        ],
        "links": detail["links"],
        "redactions": sorted((span.redactions or {}).items()),
        "llm_call": llm_call,
        "playground_runs": replay_selectors.playground_runs_of(
            trace_id=trace.trace_id.hex, span_id=span_hex, limit=10
        )
        if llm_call
        else [],
    }


@require_GET
@tenant_view
def span_detail(request, tenant_slug, trace_id, span_id):
    trace = _trace_or_404(trace_id)
    if not is_partial(request):
        url = reverse("trace-detail", args=[tenant_slug, trace.trace_id.hex])
        return redirect(f"{url}?span={span_id}")
    context = _span_context(trace, span_id)
    if context is None:
        raise Http404("no such span")
    return render_page(request, "frontend/_span_detail.html", {"detail": context, "trace": trace})


@require_GET
@tenant_view
def session_list(request, tenant_slug):
    try:
        rows, next_cursor = sessions.session_page(cursor=request.GET.get("cursor", ""), limit=PAGE)
    except FilterError as exc:
        raise Http404(str(exc)) from None
    context = {"rows": rows, "next_cursor": next_cursor}
    if is_partial(request):
        return render_page(request, "frontend/_session_rows.html", context)
    return render_page(request, "frontend/sessions.html", context)


@require_GET
@tenant_view
def session_detail(request, tenant_slug, session_id):
    rows = sessions.session_traces(session_id=session_id)
    if not rows:
        raise Http404("no such session")
    groups = sessions.session_conversation(traces=rows)
    for group in groups:
        group["system_view"] = present.system_view(group["system"])
        group["message_views"] = [present.message_view(m) for m in group["messages"]]
        group["status"] = present.STATUS.get(group["trace"].status, "unset")
    context = {"session": sessions.session_summary(rows), "groups": groups}
    return render_page(request, "frontend/session.html", context)


@require_GET
@tenant_view
def user_list(request, tenant_slug):
    """Who the traces acted for: each user's traces, sessions, tokens and cost."""
    return render_page(request, "frontend/users.html", {"rows": users.user_list()})


def _setup_context(request, key: str = "") -> dict:
    # The gRPC receiver listens on its own port of the host the page was reached by.
    host = request.get_host()
    if ":" in host and not host.endswith("]"):
        host = host.rpartition(":")[0]
    grpc_port = settings.OTLP_GRPC_ADDRESS.rpartition(":")[2]
    return {
        "endpoint": request.build_absolute_uri("/v1/traces"),
        "grpc_endpoint": f"http://{host}:{grpc_port}",
        "key": key,
    }


@require_GET
@tenant_view
def setup(request, tenant_slug):
    return render_page(request, "frontend/setup.html", {"setup": _setup_context(request)})


@require_POST
@tenant_view
def setup_key(request, tenant_slug):
    """Create an ingest key for the exporter settings (admins only), shown once."""
    if Scope.ADMIN not in request.membership.scopes:
        return render_page(
            request,
            "frontend/setup.html",
            {"setup": _setup_context(request), "forbidden": True},
            status=403,
        )
    _, raw = controlplane_services.api_key_create(
        tenant=request.tenant,
        name="exporter (created in the UI)",
        scopes=[Scope.INGEST],
        actor=controlplane_services.Actor(user=request.user),
    )
    response = render_page(request, "frontend/setup.html", {"setup": _setup_context(request, raw)})
    response["Cache-Control"] = "no-store"  # the key is in this page only
    return response

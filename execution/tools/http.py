"""Host-side HTTP tools: `http_request` and tenant webhooks.

Only hosts on the tenant's allowlist are reached, and only at addresses egress.py
lets through (checked at call time and connected to as checked); redirects are not
followed (a redirect could leave the allowlist), and a credential is injected by name from the
vault; its value is scrubbed from whatever comes back, in every form a server
plausibly echoes it (vault.Scrubber), before the answer is cut to size, so an echoing
server cannot hand it to the agent.
"""

import contextlib
import ipaddress
import json
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from execution import selectors
from execution.retry import UpstreamError, parse_retry_after
from execution.tools.egress import BadEntry, egress_client, host_entry_parse
from execution.vault import Scrubber, VaultError, credential_value

HTTP_REQUEST_SCHEMA = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "pattern": "^https?://"},
        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "json": {},
        "body": {"type": "string"},
        "credential": {"type": "string", "description": "name of a vault credential"},
        "credential_header": {"type": "string"},
        "credential_format": {"type": "string"},
    },
    "required": ["url"],
    "additionalProperties": False,
}


def host_allowed(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port out of range or not a number
        return False
    with contextlib.suppress(ValueError):
        host = str(ipaddress.ip_address(host))  # as entries store it: [0::1] is ::1
    for entry in selectors.allowed_host_entries():
        try:
            name, entry_port = host_entry_parse(entry)
        except BadEntry:
            continue  # a malformed entry from before entries were checked matches nothing
        if entry_port is not None and entry_port != port:
            continue
        if name == host or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of the body: the rest is never read into memory."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def _send(*, method: str, url: str, headers: dict, timeout: float, secret: str | None, **body):
    if not host_allowed(url):
        raise UpstreamError(
            f"host of {url!r} is not on the tenant's allowlist", retryable=False, kind="tool_error"
        )
    scrub = Scrubber(secret or "")
    limit = settings.EXECUTION_TOOL_MAX_RESPONSE_BYTES
    try:
        with egress_client().stream(
            method, url, headers=headers, timeout=timeout, follow_redirects=False, **body
        ) as response:
            if response.status_code == 429 or response.status_code >= 500:
                raise UpstreamError(
                    f"{method} {url} answered {response.status_code}",
                    status=response.status_code,
                    retry_after=parse_retry_after(response.headers.get("retry-after")),
                )
            # Read past the limit by the longest form of the secret and scrub before
            # cutting: a secret that straddles the cut is replaced whole, not left as
            # a prefix.
            raw = _read_bounded(response, limit + scrub.reach)
            encoding = response.encoding or "utf-8"
    except httpx.TimeoutException:
        raise UpstreamError(f"{method} {url} timed out") from None
    except httpx.TransportError as exc:
        raise UpstreamError(f"{method} {url} failed: {type(exc).__name__}") from None
    text = scrub(raw.decode(encoding, errors="replace"))
    text = text.encode()[:limit].decode(errors="ignore")
    result = {
        "status": response.status_code,
        "content_type": response.headers.get("content-type", ""),
        "body": text,
    }
    if "json" in result["content_type"]:
        with contextlib.suppress(ValueError):
            result["json"] = json.loads(text)
    return result


def _inject(headers: dict, name: str, header: str, fmt: str) -> str:
    try:
        secret = credential_value(name=name)
    except VaultError as exc:
        raise UpstreamError(str(exc), retryable=False) from None
    headers[header] = fmt.replace("{}", secret)
    return secret


def http_request(arguments: dict, spec, idempotency_key: str = "") -> dict:
    headers = dict(arguments.get("headers") or {})
    secret = None
    if arguments.get("credential"):
        secret = _inject(
            headers,
            arguments["credential"],
            arguments.get("credential_header", "Authorization"),
            arguments.get("credential_format", "Bearer {}"),
        )
    body = {}
    if "json" in arguments:
        body["json"] = arguments["json"]
    elif "body" in arguments:
        body["content"] = arguments["body"].encode()
    return _send(
        method=arguments.get("method", "GET"),
        url=arguments["url"],
        headers=headers,
        timeout=spec.timeout,
        secret=secret,
        **body,
    )


def webhook_call(arguments: dict, spec, idempotency_key: str = "") -> object:
    """POST the arguments as JSON; the answer's JSON (or text) is the result. The
    Idempotency-Key names the call (run + step): the same after a crash, so an endpoint
    that honours it carries out a call sent twice once."""
    options = spec.options
    headers = {"content-type": "application/json", "user-agent": "flightdeck-tools"}
    if idempotency_key:
        headers["idempotency-key"] = idempotency_key
    secret = None
    if options.get("credential"):
        secret = _inject(
            headers,
            options["credential"],
            options["credential_header"],
            options["credential_format"],
        )
    result = _send(
        method="POST",
        url=options["url"],
        headers=headers,
        timeout=spec.timeout,
        secret=secret,
        json=arguments,
    )
    if result["status"] >= 400:
        raise UpstreamError(
            f"webhook {spec.name} answered {result['status']}: {result['body'][:300]}",
            status=result["status"],
            retryable=False,
        )
    return result.get("json", result["body"])

"""The LLM upstream: the Anthropic Messages API through the `anthropic` SDK, host side.

The API key lives in the worker's settings and never enters the sandbox. With no
ANTHROPIC_API_KEY the base URL defaults to the local Messages API server
(`manage.py messages_api_server`), which is what tests and `make run` use.
"""

from functools import lru_cache

import anthropic
from django.conf import settings

from execution.retry import UpstreamError, parse_retry_after, with_retries

# What an agent may pass to ctx.llm.messages(...).
ALLOWED_PARAMS = {
    "model",
    "system",
    "messages",
    "tools",
    "tool_choice",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
}


@lru_cache(maxsize=4)
def _client(base_url: str | None, api_key: str, timeout: float) -> anthropic.Anthropic:
    # Our own retry policy (shared with tools) decides retries, so the SDK's is off.
    return anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)


def client() -> anthropic.Anthropic:
    return _client(
        settings.EXECUTION_LLM_BASE_URL,
        settings.EXECUTION_LLM_API_KEY,
        settings.EXECUTION_LLM_TIMEOUT,
    )


def check_params(params: dict) -> str | None:
    """What is wrong with the agent's parameters, or None."""
    unknown = set(params) - ALLOWED_PARAMS
    if unknown:
        return f"unknown parameters {sorted(unknown)} (allowed: {sorted(ALLOWED_PARAMS)})"
    if not isinstance(params.get("messages"), list) or not params["messages"]:
        return "messages must be a non-empty list"
    if not isinstance(params.get("max_tokens"), int) or params["max_tokens"] <= 0:
        return "max_tokens must be a positive integer"
    return None


# Sampling parameters the SDK's create() has no keyword for (anthropic 2.x): they go in
# the body as sent, and the API answers 400 for a model that does not take them.
BODY_ONLY = ("temperature", "top_p", "top_k")


def _create_kwargs(params: dict) -> dict:
    kwargs = {k: v for k, v in params.items() if k not in BODY_ONLY}
    extra = {k: params[k] for k in BODY_ONLY if k in params}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def _call_once(params: dict) -> dict:
    try:
        message = client().messages.create(**_create_kwargs(params))
    except anthropic.APIStatusError as exc:
        detail = exc.message
        raise UpstreamError(
            f"the model API answered {exc.status_code}: {detail}",
            status=exc.status_code,
            retry_after=parse_retry_after(exc.response.headers.get("retry-after")),
            kind="llm_error",
        ) from None
    except anthropic.APITimeoutError:
        raise UpstreamError("the model API timed out", kind="llm_error") from None
    except anthropic.APIConnectionError as exc:
        raise UpstreamError(
            f"the model API could not be reached: {exc}", kind="llm_error"
        ) from None
    return message.model_dump(mode="json", exclude_none=True)


def messages_create(params: dict) -> tuple[dict, int]:
    """(message as a dict, attempts). Raises UpstreamError once retries are spent."""
    return with_retries(lambda: _call_once(params))

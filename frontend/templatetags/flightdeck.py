from django import template

from frontend import present

register = template.Library()

register.filter("duration", present.duration)
register.filter("count", present.count)
register.filter("redacted", present.with_redactions)
register.filter("pretty_json", present.pretty)


@register.filter
def status_name(code) -> str:
    return present.STATUS.get(code, "unset")


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:
    """The current query string with some parameters replaced (empty: removed)."""
    params = context["request"].GET.copy()
    for key, value in changes.items():
        params.pop(key, None)
        if value not in (None, ""):
            params[key] = value
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"

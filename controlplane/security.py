"""Response headers Django 5.2 does not set itself: the Content-Security-Policy, and
`Secure` on every cookie of a request that came over HTTPS."""

from django.conf import settings

# The UI has no inline script, <style> or style attribute: htmx and app.js are files,
# htmx is told not to insert its indicator <style> (base.html's htmx-config), and the
# trace tree's bars are positioned by app.js through the CSSOM, from data- attributes.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        if request.is_secure():
            # Over HTTPS (directly, or as SECURE_PROXY_SSL_HEADER says) no cookie may
            # later travel over plain HTTP; over plain HTTP (make run) they must.
            for morsel in response.cookies.values():
                morsel["secure"] = True
        return response

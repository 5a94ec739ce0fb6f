"""Response headers a security scanner expects, on every response (a route's own value wins)."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EVERY_RESPONSE = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
# Nothing but the web page (which sets its own policy) is a document: everything else may load nothing.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
# HTML without its own policy (FastAPI's /docs loads Swagger UI from a CDN): framing is still refused.
HTML_POLICY = "frame-ancestors 'none'"


class SecurityHeaders:
    """Adds EVERY_RESPONSE, a Content-Security-Policy and, under /v1/, `Cache-Control: no-store`
    (API keys, stream tokens and private task data must not be kept by caches)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope.get("path", "").startswith("/v1/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in EVERY_RESPONSE.items():
                    headers.setdefault(name, value)
                html = headers.get("content-type", "").startswith("text/html")
                headers.setdefault("content-security-policy", HTML_POLICY if html else API_POLICY)
                if private:
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)

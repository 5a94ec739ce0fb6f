"""Response headers a security scanner expects, on every response (a route's own value wins)."""

from __future__ import annotations

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


def _raw(headers: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())


def _security_headers(*, html: bool, private: bool) -> tuple[tuple[bytes, bytes], ...]:
    policy = HTML_POLICY if html else API_POLICY
    return _raw(
        {**EVERY_RESPONSE, "content-security-policy": policy, **({"cache-control": "no-store"} if private else {})}
    )


# EVERY_RESPONSE, the Content-Security-Policy and, under /v1/, `Cache-Control: no-store` (API keys, stream
# tokens and private task data must not be kept by caches), as raw header tuples: (html, private) → headers.
SECURITY_HEADERS = {
    (html, private): _security_headers(html=html, private=private)
    for html in (False, True)
    for private in (False, True)
}

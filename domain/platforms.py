"""Supported platforms and URL validation (provisional list; the full rules replace it)."""

from __future__ import annotations

from urllib.parse import urlsplit

from domain.errors import InvalidUrl, UnsupportedUrl

PLATFORM_HOSTS = {
    "tiktok": ("tiktok.com",),
    "youtube": ("youtube.com", "youtu.be"),
    "instagram": ("instagram.com",),
    "x": ("x.com", "twitter.com"),
    "vimeo": ("vimeo.com",),
    "facebook": ("facebook.com", "fb.watch"),
    "reddit": ("reddit.com", "redd.it"),
}


def validate_submission_url(url: str) -> tuple[str, str]:
    """Return (platform, normalized url) or raise InvalidUrl / UnsupportedUrl."""
    if not isinstance(url, str) or len(url) > 2048:
        raise InvalidUrl("The link must be an absolute http(s) URL of at most 2048 characters.")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidUrl("The link must be an absolute http(s) URL.", url=url)
    host = parts.hostname.lower().removeprefix("www.").removeprefix("m.")
    for platform, hosts in PLATFORM_HOSTS.items():
        if any(host == h or host.endswith("." + h) for h in hosts):
            return platform, parts._replace(scheme="https", netloc=host).geturl()
    raise UnsupportedUrl(f"Links from {host} are not supported.", host=host)

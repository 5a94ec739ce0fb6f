"""Media providers: adapters of the `MediaProvider` port (HTTP JSON API, yt-dlp).

`media_provider_from_settings` is what the composition root calls with the MEDIATASKS_PROVIDER_* values.
Each provider module is imported only when chosen, so the HTTP provider never loads yt-dlp.
"""

from __future__ import annotations

from application.ports.media_provider import MediaProvider

PROVIDER_KINDS = ("http", "ytdlp")


def media_provider_from_settings(
    kind: str,
    *,
    url: str | None = None,
    key: str | None = None,
    host: str | None = None,
    timeout: float = 15.0,
    ytdlp_allow_generic: bool = False,
) -> MediaProvider:
    """The configured provider: `http` needs url, key and host; `ytdlp` needs nothing."""
    if kind == "http":
        from infrastructure.providers.http_provider import HttpMediaProvider

        missing = [name for name, value in (("URL", url), ("KEY", key), ("HOST", host)) if not value]
        if missing:
            raise ValueError(
                f"MEDIATASKS_PROVIDER=http needs MEDIATASKS_PROVIDER_{', MEDIATASKS_PROVIDER_'.join(missing)}"
            )
        return HttpMediaProvider(str(url), str(key), str(host), timeout=timeout)
    if kind == "ytdlp":
        from infrastructure.providers.ytdlp_provider import YtDlpMediaProvider, YtDlpOptions

        return YtDlpMediaProvider(YtDlpOptions(socket_timeout=timeout, allow_generic=ytdlp_allow_generic))
    raise ValueError(f"unknown MEDIATASKS_PROVIDER {kind!r}; expected one of {PROVIDER_KINDS}")

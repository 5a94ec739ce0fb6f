"""A `MediaProvider` over the RapidAPI-style HTTP JSON contract (docs/providers.md).

`GET {base_url}/v1/media?url=<urlencoded>` with `X-RapidAPI-Key` and `X-RapidAPI-Host`. The base URL is
trusted configuration and is not SSRF-checked here; the video and subtitle URLs the provider returns
are checked later by the fetcher, like any other URL from outside.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from application.ports.errors import PermanentMediaError, TransientMediaError
from application.ports.media_provider import SUBTITLE_FORMATS, MediaFormat, MediaInfo, SubtitleSource, VideoSource
from domain.platforms import identify_platform
from infrastructure.retry_after import retry_after_seconds

MAX_RESPONSE_BYTES = 1024 * 1024

# Error codes a provider may name in a 4xx body ({"error": {"code": ...}}) to be more precise than its status.
_PROVIDER_MEDIA_CODES = frozenset({"media_not_found", "media_private", "unsupported_url", "unsupported_content"})


def _http_url(value: str) -> str:
    if not value.lower().startswith(("http://", "https://")):
        raise ValueError("must be an absolute http(s) URL")
    return value


class _VideoBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str
    size: int | None = Field(default=None, ge=0)
    mime_type: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    _check_url = field_validator("url")(_http_url)


class _FormatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format_id: str = Field(min_length=1, max_length=200)
    protocol: Literal["https", "http", "hls", "dash"]
    url: str
    ext: str | None = Field(default=None, max_length=16)
    vcodec: str | None = Field(default=None, max_length=100)
    acodec: str | None = Field(default=None, max_length=100)
    width: int | None = Field(default=None, ge=1, le=100_000)
    height: int | None = Field(default=None, ge=1, le=100_000)
    fps: float | None = Field(default=None, ge=0)
    bitrate: float | None = Field(default=None, ge=0)
    filesize: int | None = Field(default=None, ge=0)
    language: str | None = Field(default=None, max_length=35)
    stream_id: str | None = Field(default=None, max_length=200)
    headers: dict[str, str] = Field(default_factory=dict)

    _check_url = field_validator("url")(_http_url)

    def to_format(self) -> MediaFormat:
        none = (None, "none", "")
        return MediaFormat(
            format_id=self.format_id,
            protocol="https" if self.protocol == "http" else self.protocol,
            url=self.url,
            ext=self.ext,
            vcodec=None if self.vcodec in none else self.vcodec,
            acodec=None if self.acodec in none else self.acodec,
            width=self.width,
            height=self.height,
            fps=self.fps,
            bitrate=self.bitrate,
            filesize=self.filesize,
            language=self.language,
            stream_id=self.stream_id,
            headers=dict(self.headers),
        )


class _SubtitleBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    lang: str = Field(min_length=1)
    format: str
    url: str
    kind: str = "manual"
    name: str | None = None

    _check_url = field_validator("url")(_http_url)


class _ErrorCode(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: str | None = None


class _ErrorBody(BaseModel):
    """What an error answer may say: `{"error": {"code": C}}`; anything else in it is ignored."""

    model_config = ConfigDict(extra="ignore")
    error: _ErrorCode | None = None


class _MediaBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    platform: str | None = None
    id: str | int
    title: str | None = None
    duration: float | None = Field(default=None, ge=0)
    uploader: str | None = None
    thumbnail_url: str | None = None
    video: _VideoBody | None = None
    subtitles: list[_SubtitleBody] = Field(default_factory=list)
    formats: list[_FormatBody] = Field(default_factory=list, max_length=500)
    items: list[_MediaBody] = Field(default_factory=list, max_length=100)
    is_live: bool = False
    drm: bool = False


class HttpMediaProvider:
    """Asks a RapidAPI-style HTTP service for a link's metadata, video URL and subtitle tracks."""

    name = "http"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_host: str,
        timeout: float = 15.0,
        client: httpx.Client | None = None,
    ) -> None:
        self._endpoint = base_url.rstrip("/") + "/v1/media"
        self._headers = {"X-RapidAPI-Key": api_key, "X-RapidAPI-Host": api_host, "Accept": "application/json"}
        self._timeout = httpx.Timeout(timeout)
        self._client = client or httpx.Client(follow_redirects=False)
        self._owns_client = client is None

    def close(self) -> None:
        """Close the HTTP client if this provider made it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HttpMediaProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fetch_metadata(self, url: str) -> MediaInfo:
        """The media behind `url`, from the provider; raises PermanentMediaError or TransientMediaError."""
        status, headers, body = self._get(url)
        if status != 200:
            raise self._status_error(status, headers, body, url)
        return self._media_info(body, url)

    def _get(self, url: str) -> tuple[int, httpx.Headers, bytes]:
        try:
            with self._client.stream(
                "GET", self._endpoint, params={"url": url}, headers=self._headers, timeout=self._timeout
            ) as response:
                body = self._read_limited(response)
                if body is None and response.status_code == 200:
                    raise _too_big()
                return response.status_code, response.headers, body or b""
        except httpx.TimeoutException as error:
            raise TransientMediaError("timeout", f"the provider did not answer in time: {error!r}") from error
        except httpx.TransportError as error:
            raise TransientMediaError(
                "provider_unavailable", f"the provider could not be reached: {error!r}"
            ) from error

    @staticmethod
    def _read_limited(response: httpx.Response) -> bytes | None:
        """The body, or None when it is larger than MAX_RESPONSE_BYTES (declared or counted)."""
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            return None
        chunks: list[bytes] = []
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > MAX_RESPONSE_BYTES:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _status_error(
        self, status: int, headers: httpx.Headers, body: bytes, url: str
    ) -> PermanentMediaError | TransientMediaError:
        details: dict[str, Any] = {"status": status, "url": url}
        named = _error_code_in(body)
        if named in _PROVIDER_MEDIA_CODES and 400 <= status < 500 and status != 429:
            return PermanentMediaError(named, f"the provider says {named} ({status})", details=details)
        if status in (404, 410):
            return PermanentMediaError("media_not_found", "the provider found no media at this URL", details=details)
        if status in (401, 403):
            return PermanentMediaError(
                "provider_auth", "the provider refused our credentials (check the provider key)", details=details
            )
        if status in (400, 422):
            return PermanentMediaError("unsupported_url", "the provider cannot handle this URL", details=details)
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        if status == 429:
            return TransientMediaError(
                "rate_limited", "the provider is rate limiting us", retry_after=retry_after, details=details
            )
        if status >= 500:
            return TransientMediaError(
                "provider_unavailable", f"the provider failed ({status})", retry_after=retry_after, details=details
            )
        return TransientMediaError("provider_bad_response", f"unexpected provider status {status}", details=details)

    def _media_info(self, body: bytes, url: str) -> MediaInfo:
        try:
            parsed = _MediaBody.model_validate_json(body)
        except ValidationError as error:  # also JSON nested deeper than pydantic's recursion limit
            raise PermanentMediaError(
                "provider_bad_response",
                f"the provider's answer does not match the contract: {error.error_count()} problem(s)",
                details={"url": url, "problems": [problem["msg"] for problem in error.errors()[:5]]},
            ) from error
        return self._post(parsed, url)

    def _post(self, parsed: _MediaBody, url: str) -> MediaInfo:
        known = identify_platform(url)
        subtitles = tuple(
            SubtitleSource(
                lang=track.lang,
                format=track.format,  # type: ignore[arg-type]  # only tracks in SUBTITLE_FORMATS are kept (below)
                url=track.url,
                kind="asr" if track.kind in ("asr", "auto", "automatic") else "manual",
                name=track.name,
            )
            for track in parsed.subtitles
            if track.format in SUBTITLE_FORMATS
        )
        skipped = [track.format for track in parsed.subtitles if track.format not in SUBTITLE_FORMATS]
        video = parsed.video
        return MediaInfo(
            platform=parsed.platform or (known.name if known else "unknown"),
            media_id=str(parsed.id),
            title=parsed.title or "",
            duration=parsed.duration,
            uploader=parsed.uploader,
            thumbnail_url=parsed.thumbnail_url,
            video=VideoSource(video.url, video.size, video.mime_type, dict(video.headers)) if video else None,
            subtitles=subtitles,
            extra={"provider": self.name, **({"skipped_subtitle_formats": skipped} if skipped else {})},
            formats=tuple(fmt.to_format() for fmt in parsed.formats),
            items=tuple(self._post(item, url) for item in parsed.items),
            is_live=parsed.is_live,
            drm=parsed.drm,
        )


def _too_big() -> PermanentMediaError:
    return PermanentMediaError(
        "provider_bad_response", f"the provider's answer is larger than {MAX_RESPONSE_BYTES} bytes"
    )


def _error_code_in(body: bytes) -> str | None:
    """The code an error answer names, or None (not JSON, another shape, nested past the recursion limit)."""
    try:
        parsed = _ErrorBody.model_validate_json(body)
    except ValidationError:
        return None
    return parsed.error.code if parsed.error else None

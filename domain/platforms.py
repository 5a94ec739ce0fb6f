"""The supported platforms and the rules that turn a submitted link into a canonical media URL.

This is the one list of platforms the service accepts. A link is supported when its host belongs to a
platform *and* its path looks like a single piece of media on that platform (a video, a clip, a post),
so a channel page or a search on a supported site is still `unsupported_url`.

Pure: only string parsing, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from domain.errors import InvalidSubmission as SubmissionUrlError
from domain.errors import InvalidUrl, UnsupportedUrl

MAX_URL_LENGTH = 2048

# Host prefixes that never change which media a link points at.
_IGNORED_HOST_PREFIXES = ("www.", "m.", "mobile.")

# Query parameters that only track where a link was shared from.
_TRACKING_PARAMS = frozenset(
    {
        "si",
        "feature",
        "t",
        "s",
        "pp",
        "fbclid",
        "gclid",
        "dclid",
        "msclkid",
        "igshid",
        "igsh",
        "mibextid",
        "ref",
        "ref_src",
        "ref_url",
        "ref_source",
        "share_id",
        "share_app_id",
        "share_item_id",
        "share_link_id",
        "sender_device",
        "sender_web_id",
        "is_from_webapp",
        "is_copy_url",
        "web_id",
        "_r",
        "_t",
        "rdt",
        "context",
        "spm_id_from",
        "vd_source",
        "from_spmid",
        "share_source",
        "share_medium",
        "share_plat",
        "share_session_id",
        "share_tag",
        "unique_k",
        "trackingId",
        "rcm",
        "xmt",
        "invite_code",
        "lang",
        "hl",
    }
)
_TRACKING_PREFIXES = ("utm_", "at_", "mc_", "__")

_YOUTUBE_ID = r"(?P<id>[A-Za-z0-9_-]{11})"
# `\s` of a str pattern is `str.isspace()`, code point for code point; with C0 controls and DEL.
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_HOST_NAME = re.compile(r"[\w.:-]+")


@dataclass(frozen=True)
class MediaRoute:
    """Hosts (already stripped of www./m./mobile.) and a path pattern that names one piece of media."""

    hosts: frozenset[str]
    path: re.Pattern[str]
    query_id: str | None = None  # a query parameter that names the media, e.g. YouTube's `v`
    query_value: re.Pattern[str] | None = None  # what that parameter's value must look like


@dataclass(frozen=True)
class Platform:
    """A supported platform: a stable name (stored in events) and the links that reach its media."""

    name: str
    label: str
    routes: tuple[MediaRoute, ...]

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(host for route in self.routes for host in route.hosts)


def _route(hosts: str, path: str, query_id: str | None = None, query_value: str = "") -> MediaRoute:
    return MediaRoute(
        frozenset(hosts.split()),
        re.compile(path, re.IGNORECASE),
        query_id,
        re.compile(query_value) if query_value else None,
    )


YOUTUBE = Platform(
    "youtube",
    "YouTube",
    (
        _route("youtube.com music.youtube.com", r"/watch/?", "v", _YOUTUBE_ID),
        _route("youtube.com music.youtube.com", rf"/(?:shorts|live|embed|v|e)/{_YOUTUBE_ID}/?"),
        _route("youtube-nocookie.com", rf"/(?:embed|v)/{_YOUTUBE_ID}/?"),
        _route("youtu.be", rf"/{_YOUTUBE_ID}/?"),
    ),
)

PLATFORMS: tuple[Platform, ...] = (
    Platform(
        "tiktok",
        "TikTok",
        (
            _route("tiktok.com", r"/@[\w.-]+/(?:video|photo)/\d+/?"),
            _route("tiktok.com", r"/(?:v|embed|embed/v2)/\d+(?:\.html)?/?"),
            _route("tiktok.com", r"/t/\w+/?"),
            _route("vm.tiktok.com vt.tiktok.com", r"/\w+/?"),
        ),
    ),
    YOUTUBE,
    Platform(
        "instagram",
        "Instagram",
        (
            _route("instagram.com", r"/(?:[\w.]+/)?(?:p|reel|reels|tv)/[\w-]+/?"),
            _route("instagram.com", r"/stories/[\w.]+/\d+/?"),
            _route("instagram.com", r"/share/(?:reel/|p/)?[\w-]+/?"),
        ),
    ),
    Platform(
        "x",
        "X (Twitter)",
        (
            _route("x.com twitter.com", r"/\w{1,15}/status(?:es)?/\d+(?:/(?:video|photo)/\d)?/?"),
            _route("x.com twitter.com", r"/i/(?:web/)?status/\d+/?"),
        ),
    ),
    Platform(
        "vimeo",
        "Vimeo",
        (
            _route("vimeo.com", r"/\d+(?:/[0-9a-f]+)?/?"),
            _route("vimeo.com", r"/(?:channels/[\w-]+|groups/[\w-]+/videos|album/\d+/video|showcase/\d+/video)/\d+/?"),
            _route("player.vimeo.com", r"/video/\d+/?"),
        ),
    ),
    Platform(
        "facebook",
        "Facebook",
        (
            _route("facebook.com", r"/watch/?", "v", r"\d+"),
            _route("facebook.com", r"/video\.php", "v", r"\d+"),
            _route("facebook.com", r"/[\w.-]+/videos/(?:[\w.-]+/)?\d+/?"),
            _route("facebook.com", r"/reel/\d+/?"),
            _route("facebook.com", r"/share/[vr]/\w+/?"),
            _route("fb.watch", r"/[\w-]+/?"),
        ),
    ),
    Platform(
        "reddit",
        "Reddit",
        (
            _route("reddit.com", r"/r/\w+/comments/\w+(?:/[^/]*)?/?"),
            _route("reddit.com", r"/r/\w+/s/\w+/?"),
            _route("redd.it v.redd.it", r"/\w+/?"),
        ),
    ),
    Platform(
        "twitch",
        "Twitch clips",
        (
            _route("clips.twitch.tv", r"/[\w-]+/?"),
            _route("twitch.tv", r"/\w+/clip/[\w-]+/?"),
        ),
    ),
    Platform(
        "dailymotion",
        "Dailymotion",
        (
            _route("dailymotion.com", r"/video/[a-z0-9]+/?"),
            _route("dai.ly", r"/[a-z0-9]+/?"),
        ),
    ),
    Platform(
        "snapchat",
        "Snapchat Spotlight",
        (_route("snapchat.com", r"/spotlight/[\w-]+/?"),),
    ),
    Platform(
        "pinterest",
        "Pinterest",
        (
            _route(
                "pinterest.com pinterest.co.uk pinterest.ca pinterest.de pinterest.fr pinterest.es "
                "pinterest.it pinterest.com.au pinterest.jp",
                r"/pin/[\w-]+/?",
            ),
            _route("pin.it", r"/\w+/?"),
        ),
    ),
    Platform(
        "linkedin",
        "LinkedIn",
        (
            _route("linkedin.com", r"/posts/[\w%-]+/?"),
            _route("linkedin.com", r"/feed/update/urn:li:(?:activity|ugcPost|share):\d+/?"),
            _route("linkedin.com", r"/embed/feed/update/urn:li:(?:activity|ugcPost|share):\d+/?"),
        ),
    ),
    Platform(
        "threads",
        "Threads",
        (_route("threads.net threads.com", r"/@[\w.]+/post/[\w-]+/?"),),
    ),
    Platform(
        "bilibili",
        "Bilibili",
        (
            _route("bilibili.com", r"/video/(?:BV[0-9A-Za-z]{10}|av\d+)/?"),
            _route("bilibili.tv", r"/(?:[a-z]{2}/)?video/\d+/?"),
            _route("b23.tv", r"/\w+/?"),
        ),
    ),
)

# Hosts with a canonical spelling: the key is rewritten to the value in normalized URLs.
_CANONICAL_HOSTS = {
    "twitter.com": "x.com",
    "old.reddit.com": "reddit.com",
    "new.reddit.com": "reddit.com",
    "np.reddit.com": "reddit.com",
    "threads.com": "threads.net",
}


class _ParsedUrl(NamedTuple):
    host: str
    port: int | None
    path: str
    query: list[tuple[str, str]]


def _canonical_host(host: str) -> str:
    host = host.lower().rstrip(".")
    for prefix in _IGNORED_HOST_PREFIXES:
        if host.startswith(prefix) and host.count(".") >= 2:
            host = host[len(prefix) :]
            break
    return _CANONICAL_HOSTS.get(host, host)


def _parse(url: object) -> _ParsedUrl:
    if not isinstance(url, str):
        raise InvalidUrl("the URL must be a string")
    url = url.strip()
    if not url:
        raise InvalidUrl("the URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if _WHITESPACE_OR_CONTROL.search(url):
        raise InvalidUrl("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidUrl(f"the URL cannot be parsed: {error}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidUrl("only absolute http and https URLs are accepted")
    if not parts.hostname:
        raise InvalidUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidUrl("URLs with credentials are not accepted")
    host = _canonical_host(parts.hostname)
    if not _HOST_NAME.fullmatch(host) or ".." in host:
        raise InvalidUrl("the URL's host is not a valid name")
    query = parse_qsl(parts.query, keep_blank_values=True)
    return _ParsedUrl(host=host, port=port, path=parts.path or "/", query=query)


def _routes_by_host() -> dict[str, tuple[tuple[Platform, MediaRoute], ...]]:
    """Each host's routes, in the order of PLATFORMS and of their routes."""
    found: dict[str, list[tuple[Platform, MediaRoute]]] = {}
    for platform in PLATFORMS:
        for route in platform.routes:
            for host in route.hosts:
                found.setdefault(host, []).append((platform, route))
    return {host: tuple(routes) for host, routes in found.items()}


_ROUTES_BY_HOST = _routes_by_host()


def _match(parsed: _ParsedUrl) -> tuple[Platform, MediaRoute, re.Match[str]] | None:
    params = dict(parsed.query)
    for platform, route in _ROUTES_BY_HOST.get(parsed.host, ()):
        found = route.path.fullmatch(parsed.path)
        if found is None:
            continue
        if route.query_id is not None:
            value = params.get(route.query_id, "")
            if not value or (route.query_value and not route.query_value.fullmatch(value)):
                continue
        return platform, route, found
    return None


def _is_tracking(name: str) -> bool:
    return name in _TRACKING_PARAMS or name.lower().startswith(_TRACKING_PREFIXES)


def identify_platform(url: str) -> Platform | None:
    """The platform whose media this URL points at, or None (bad URL, unknown site, not a media page)."""
    try:
        return validate_submission_url(url)[0]
    except SubmissionUrlError:
        return None


def _normalize(parsed: _ParsedUrl, platform: Platform, route: MediaRoute, found: re.Match[str]) -> str:
    if platform is YOUTUBE:
        video_id = found.groupdict().get("id") or dict(parsed.query)[route.query_id or "v"]
        return urlunsplit(("https", "youtube.com", "/watch", urlencode({"v": video_id}), ""))
    path = parsed.path.rstrip("/") or "/"
    query = sorted((name, value) for name, value in parsed.query if not _is_tracking(name))
    return urlunsplit(("https", parsed.host, path, urlencode(query), ""))


def normalize_media_url(url: str) -> str:
    """The canonical form of a supported media URL: the key of the metadata cache.

    https, lower-case host without www./m./mobile., canonical hosts (twitter.com → x.com), no fragment,
    no trailing slash, tracking parameters (utm_*, si, feature, t, fbclid, …) dropped and the rest
    sorted; YouTube links of every shape (youtu.be, shorts, embed, music, nocookie) become
    `https://youtube.com/watch?v=ID`. Raises `InvalidUrl` or `UnsupportedUrl`.
    """
    return validate_submission_url(url)[1]


def validate_submission_url(url: str) -> tuple[Platform, str]:
    """Check a submitted link: its platform and its normalized URL, or `InvalidUrl`/`UnsupportedUrl`."""
    parsed = _parse(url)
    matched = _match(parsed)
    if matched is None:
        if parsed.host in _ROUTES_BY_HOST:
            raise UnsupportedUrl(f"this {parsed.host} link does not point at a single video or post")
        raise UnsupportedUrl(f"links to {parsed.host} are not supported; supported: {supported_platform_labels()}")
    platform, route, found = matched
    if parsed.port not in (None, 80, 443):
        raise UnsupportedUrl(f"links to {parsed.host} on port {parsed.port} are not supported")
    return platform, _normalize(parsed, platform, route, found)


def platform_by_name(name: str) -> Platform | None:
    """The platform with this stable name, or None."""
    return next((platform for platform in PLATFORMS if platform.name == name), None)


def supported_platform_labels() -> str:
    """The platforms' labels, comma separated, for messages."""
    return ", ".join(platform.label for platform in PLATFORMS)

"""The HTTP side of the client: one `httpx.Client` for a server, its errors, the live stream and downloads."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_CONFIG = Path("~/.config/mediatasks/client.toml")
TERMINAL = ("extracted", "failed")


class UsageError(Exception):
    """The command cannot run as given (no server or key configured, bad arguments): exit 2."""


class ServerError(Exception):
    """The server refused the request; `code` and `message` come from its error body."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: str


def load_config(environ: dict[str, str] | None = None) -> ClientConfig:
    """MEDIATASKS_URL and MEDIATASKS_API_KEY, else `url`/`api_key` in the config file
    (MEDIATASKS_CLIENT_CONFIG, default ~/.config/mediatasks/client.toml)."""
    env = os.environ if environ is None else environ
    path = Path(env.get("MEDIATASKS_CLIENT_CONFIG") or DEFAULT_CONFIG).expanduser()
    file: dict[str, Any] = {}
    if path.is_file():
        try:
            file = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as bad:
            raise UsageError(f"{path}: {bad}") from bad
    url = env.get("MEDIATASKS_URL") or file.get("url")
    key = env.get("MEDIATASKS_API_KEY") or file.get("api_key")
    if not url or not key:
        raise UsageError(
            f"set MEDIATASKS_URL and MEDIATASKS_API_KEY (or url and api_key in {path}) to the server and your API key"
        )
    return ClientConfig(str(url).rstrip("/"), str(key))


class MediaTasksClient:
    """Calls the API; every non-2xx answer raises ServerError, a network failure httpx.TransportError."""

    def __init__(
        self, config: ClientConfig, *, timeout: float = 30.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.http = httpx.Client(
            base_url=config.url,
            headers={"Authorization": f"Bearer {config.api_key}", "User-Agent": "mediatasks-cli/1"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> MediaTasksClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        checked(response)
        return response.json() if response.content and "json" in response.headers.get("content-type", "") else None

    def events(self, task_id: str, last_event_id: int | None = None) -> Iterator[dict[str, Any]]:
        """The task's `event: status` data, in order, until a terminal one; reconnects with Last-Event-ID."""
        reconnects = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = str(last_event_id)
            try:
                with self.http.stream(
                    "GET", f"/v1/tasks/{task_id}/events", headers=headers, timeout=httpx.Timeout(30.0, read=60.0)
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        checked(response)
                    for event_id, data in sse_events(response.iter_lines()):
                        reconnects = 0
                        if event_id is not None:
                            last_event_id = event_id
                        yield data
                        if data.get("status") in TERMINAL:
                            return
            except (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError):
                reconnects += 1
                if reconnects > 5:
                    raise

    def download(
        self,
        path: str,
        target: Path,
        *,
        params: dict[str, str] | None = None,
        progress: Callable[[int, int | None], None] = lambda done, total: None,
    ) -> int:
        """Stream `path` into `target`, resuming a partial file with Range; the file's size at the end."""
        have = target.stat().st_size if target.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self.http.stream(
            "GET", path, params=params, headers=headers, timeout=httpx.Timeout(30.0, read=120.0)
        ) as response:
            if response.status_code == 416 and have:
                return have  # nothing left to fetch
            if response.status_code >= 400:
                response.read()
                checked(response)
            resumed = response.status_code == 206
            total = _total_size(response, have if resumed else 0)
            done = have if resumed else 0
            with target.open("ab" if resumed else "wb") as out:
                progress(done, total)
                for chunk in response.iter_bytes(256 * 1024):
                    out.write(chunk)
                    done += len(chunk)
                    progress(done, total)
        return done


def _total_size(response: httpx.Response, offset: int) -> int | None:
    content_range = response.headers.get("content-range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("content-length")
    return offset + int(length) if length and length.isdigit() else None


def checked(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        raise ServerError(response.status_code, error["code"], error["message"], error.get("details"))
    except (ValueError, KeyError, TypeError):
        raise ServerError(response.status_code, "http_error", response.text[:200] or response.reason_phrase) from None


def sse_events(lines: Iterator[str]) -> Iterator[tuple[int | None, dict[str, Any]]]:
    """(id, JSON data) of each `status` event of a Server-Sent Events stream; comments are skipped."""
    event, data, event_id = "message", [], None
    for line in lines:
        if line == "":
            if data and event == "status":
                yield event_id, json.loads("\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and value.isdigit():
            event_id = int(value)

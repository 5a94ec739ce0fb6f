"""A small Server-Sent Events reader over httpx streaming, for tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx


@dataclass
class SseMessage:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)


def read_sse(response: httpx.Response) -> Iterator[SseMessage]:
    """Yield messages (and comment-only messages such as pings) as they arrive."""
    message = SseMessage()
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data or message.comments or message.id is not None:
                message.data = "\n".join(data)
                yield message
            message, data = SseMessage(), []
        elif line.startswith(":"):
            message.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                message.event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                message.id = value

"""Limits uvicorn's HTTP/1.1 protocol does not enforce: header size and count, header and body read timeouts.

uvicorn's httptools protocol buffers headers without a bound and has a keep-alive timeout but no timeout
for a request that is still arriving, so one slow client holds a connection (slowloris) and one 8 MiB
header is read whole. `GuardedHttpToolsProtocol` subclasses it (the same parser, the same speed):

- more than `max_header_bytes` of request line and headers, or more than `max_headers` headers → 431;
- request line and headers not complete within `header_timeout` of the connection's first byte of the
  request (or of an idle connection's opening) → 408 and close;
- a body not complete within `body_timeout` of its headers → the connection is closed (the app sees a
  disconnect).

A refused connection is answered, half-closed and drained for a moment before it is closed, so the client
reads the answer instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

DRAIN_SECONDS = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float


class HeadersTooLarge(Exception):
    """Raised from a parser callback; httptools re-raises it as the context of its callback error."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._reading_headers = True
        self._header_bytes = 0  # raw bytes received while the headers are incomplete
        self._parsed_header_bytes = 0
        self._header_count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn types it as BaseTransport
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, self._header_timeout_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # draining: what a refused client still sends is read and dropped
        self._unset_keepalive_if_required()
        if self._reading_headers:
            self._header_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except HeadersTooLarge:
            self._refuse_headers()
            return
        except Exception as error:  # noqa: BLE001 - a callback error carries our refusal as its context
            if isinstance(error.__context__, HeadersTooLarge):
                self._refuse_headers()
                return
            self._feed_failed(data, error)
            return
        if self._reading_headers and self._header_bytes > self.limits.max_header_bytes:
            self._refuse_headers()

    def _feed_failed(self, data: bytes, error: Exception) -> None:
        """Let uvicorn answer the parser errors it knows (400, upgrades) as it always does."""
        import httptools

        if isinstance(error, httptools.HttpParserUpgrade):
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if isinstance(error, httptools.HttpParserError):
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        raise error

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True
        self._parsed_header_bytes = 0
        self._header_count = 0
        if self._timer is None:
            self._arm(self.limits.header_timeout, self._header_timeout_expired)

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise HeadersTooLarge
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._header_bytes = 0
        self._arm(self.limits.body_timeout, self._body_timeout_expired)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _count_header_bytes(self, size: int) -> None:
        self._parsed_header_bytes += size
        if self._parsed_header_bytes > self.limits.max_header_bytes:
            raise HeadersTooLarge

    def _arm(self, seconds: float, expired: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout_expired(self) -> None:
        self._timer = None
        if self._reading_headers and not self.transport.is_closing():
            self._refuse(
                408, "request_timeout", f"The request headers did not arrive within {self.limits.header_timeout:g} s."
            )

    def _body_timeout_expired(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.logger.warning(
                "Request body not received within %s s; closing the connection.", self.limits.body_timeout
            )
            self.transport.close()

    def _refuse_headers(self) -> None:
        self._refuse(
            431,
            "headers_too_large",
            f"The request headers may be at most {self.limits.max_header_bytes} bytes "
            f"in at most {self.limits.max_headers} fields.",
        )

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._disarm()
        self._refused = True
        self._reading_headers = False
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined request while a response is being sent: no room for an answer
            return
        body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(
            b"content-type: application/json\r\nx-content-type-options: nosniff\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(DRAIN_SECONDS, self.transport.close)


def guarded_protocol(limits: ConnectionLimits) -> Any:
    """The `http=` argument of `uvicorn.run` (picklable, for `--workers N`)."""
    return functools.partial(GuardedHttpToolsProtocol, limits=limits)


def connection_limits(settings: Any) -> ConnectionLimits:
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
    )

"""A local QStash for tests: a real HTTP server on 127.0.0.1 that takes publish calls and delivers them.

It behaves like QStash where the service can tell: `POST /v2/publish/{destination}` with a bearer
token, `Upstash-Deduplication-Id` honoured for a window (202 and `deduplicated: true` for a repeat),
`Upstash-Retries`, `Upstash-Forward-*` and `Upstash-Timeout`; each message is delivered by an HTTP
call signed with an HS256 JWT (`Upstash-Signature`, claims iss/sub/exp/nbf/iat/jti/body) and
carrying `Upstash-Retried` (0-based) and `Upstash-Message-Id`; a non-2xx answer or a timeout is
retried after the answer's `Retry-After` (else QStash's backoff), scaled down for tests, until the
retries run out or the answer carries `Upstash-NonRetryable-Error: true`.

Faults real QStash may produce can be injected: a second delivery after a success (`duplicate_ratio`),
two deliveries of one attempt at the same moment (`concurrent_duplicate_ratio`), a redelivery when
the destination answers too slowly (`delivery_timeout_s`), failed publish calls, key rotation.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import ipaddress
import itertools
import json
import math
import random
import secrets
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx
import jwt

from infrastructure.retry_after import retry_after_seconds

DEFAULT_TOKEN = "qstash-emulator-token"
TOKEN_LIFETIME_S = 300
MAX_RETRY_DELAY_S = 86_400.0
PUBLISH_PREFIX = "/v2/publish/"


def delivery_claims(
    url: str, body: bytes, *, now: float | None = None, lifetime_s: int = TOKEN_LIFETIME_S, pad_body_hash: bool = True
) -> dict[str, Any]:
    """The claims QStash signs for a delivery of `body` to `url`."""
    issued_at = int(time.time() if now is None else now)
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode("ascii")
    return {
        "iss": "Upstash",
        "sub": url,
        "exp": issued_at + lifetime_s,
        "nbf": issued_at,
        "iat": issued_at,
        "jti": f"jwt_{secrets.token_hex(12)}",
        "body": digest if pad_body_hash else digest.rstrip("="),
    }


def sign_claims(claims: dict[str, Any], key: str, algorithm: str = "HS256") -> str:
    """An `Upstash-Signature` value: the claims as a JWT signed with `key`."""
    return jwt.encode(claims, key, algorithm=algorithm)


def new_signing_key() -> str:
    """A random signing key in QStash's `sig_...` shape."""
    return f"sig_{secrets.token_urlsafe(24)}"


@dataclass(frozen=True)
class PublishRecord:
    """One call to the publish API and the emulator's answer."""

    destination: str
    headers: dict[str, str]
    body: bytes
    status_code: int
    message_id: str | None
    deduplicated: bool


@dataclass(frozen=True)
class DeliveryRecord:
    """One HTTP call to a destination. `status_code` is None when it timed out or failed to connect.

    `kind` is "delivery" (first try), "retry", "duplicate" (an extra delivery after a success) or
    "concurrent_duplicate" (a copy sent at the same moment as another attempt).
    """

    message_id: str
    destination: str
    sent_to: str
    kind: str
    retried: int
    request_headers: dict[str, str]
    status_code: int | None
    response_headers: dict[str, str]
    error: str | None
    started_at: float
    finished_at: float


@dataclass
class _Message:
    message_id: str
    destination: str
    sent_to: str
    method: str
    body: bytes
    headers: dict[str, str]
    max_retries: int
    timeout_s: float
    retried: int = 0
    state: str = "pending"
    targets: tuple[str, ...] = ()


@dataclass
class _PublishFault:
    status_code: int
    remaining: int
    headers: dict[str, str] = field(default_factory=dict)


class QStashEmulator:
    """A QStash look-alike on a free loopback port; use as a context manager or `start()`/`stop()`.

    The ratios, `retry_delay_scale`, `max_retries` and `delivery_timeout_s` are plain attributes a
    test may change at any time. Random choices come from a RNG seeded with `seed`.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        current_signing_key: str | None = None,
        next_signing_key: str | None = None,
        max_retries: int = 3,
        retry_delay_scale: float = 0.01,
        deduplication_window_s: float = 600.0,
        duplicate_ratio: float = 0.0,
        concurrent_duplicate_ratio: float = 0.0,
        delivery_timeout_s: float = 5.0,
        pad_body_hash: bool = True,
        seed: int = 0,
    ) -> None:
        self.token = token
        self.max_retries = max_retries
        self.retry_delay_scale = retry_delay_scale
        self.deduplication_window_s = deduplication_window_s
        self.duplicate_ratio = duplicate_ratio
        self.concurrent_duplicate_ratio = concurrent_duplicate_ratio
        self.delivery_timeout_s = delivery_timeout_s
        self.pad_body_hash = pad_body_hash
        self._current_key = current_signing_key or new_signing_key()
        self._next_key = next_signing_key or new_signing_key()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._routes: list[tuple[str, tuple[str, ...]]] = []
        self._next_target = itertools.count()
        self._dedup: dict[str, tuple[str, float]] = {}
        self._messages: dict[str, _Message] = {}
        self._publishes: list[PublishRecord] = []
        self._deliveries: list[DeliveryRecord] = []
        self._publish_faults: list[_PublishFault] = []
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._job_errors: list[BaseException] = []
        self._sequence = itertools.count()
        self._outstanding = 0
        self._running = False
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None

    # lifecycle

    def start(self) -> QStashEmulator:
        """Listen on 127.0.0.1 (a free port) and start delivering."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="qstash-emulator-delivery")
        self._client = httpx.Client(limits=httpx.Limits(max_connections=64))
        self._running = True
        self._threads = [
            threading.Thread(target=self._server.serve_forever, args=(0.05,), name="qstash-emulator-http", daemon=True),
            threading.Thread(target=self._run_schedule, name="qstash-emulator-schedule", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and delivering; scheduled deliveries are dropped."""
        with self._changed:
            self._running = False
            self._outstanding -= len(self._due)
            self._due.clear()
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> QStashEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the publish API (what `MEDIATASKS_QSTASH_URL` points at)."""
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # configuration

    @property
    def current_signing_key(self) -> str:
        return self._current_key

    @property
    def next_signing_key(self) -> str:
        return self._next_key

    def rotate_signing_keys(self, new_next_key: str | None = None) -> None:
        """Rotate as QStash does: the next key becomes current, and a new next key is made."""
        with self._lock:
            self._current_key, self._next_key = self._next_key, new_next_key or new_signing_key()

    def route(self, public_prefix: str, loopback_prefix: str, *more_loopback_prefixes: str) -> None:
        """Deliver messages for URLs under `public_prefix` to `loopback_prefix` instead.

        With more prefixes the calls go round-robin, as through a load balancer in front of several
        workers; a target that refuses the connection (a dead worker) is skipped for the next one.

        The token's `sub` stays the published destination, as when a proxy sits in front of the
        service: the receiver must check against its configured public URL, not the request's.
        """
        with self._lock:
            self._routes.append((public_prefix, (loopback_prefix, *more_loopback_prefixes)))

    def fail_publishes(self, status_code: int, count: int = 1, retry_after: str | None = None) -> None:
        """Answer the next `count` publish calls with `status_code` (and a `Retry-After` if given)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            self._publish_faults.append(_PublishFault(status_code, count, headers))

    # observation

    @property
    def publishes(self) -> list[PublishRecord]:
        with self._lock:
            return list(self._publishes)

    @property
    def deliveries(self) -> list[DeliveryRecord]:
        """Every delivery attempt so far, in the order they finished."""
        with self._lock:
            return list(self._deliveries)

    def deliveries_for(self, message_id: str) -> list[DeliveryRecord]:
        with self._lock:
            return [record for record in self._deliveries if record.message_id == message_id]

    def message_state(self, message_id: str) -> str:
        """ "pending" (not yet delivered, retries left), "delivered" (a 2xx came back) or "failed"."""
        with self._lock:
            return self._messages[message_id].state

    def wait_until_idle(self, timeout: float = 10.0) -> None:
        """Block until no delivery is scheduled or in flight; raise TimeoutError after `timeout` seconds.

        Raises RuntimeError if a delivery job of the emulator itself crashed.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._outstanding:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._outstanding} deliveries still scheduled or in flight")
                self._changed.wait(remaining)
            if self._job_errors:
                raise RuntimeError(f"the emulator crashed delivering: {self._job_errors[0]!r}") from self._job_errors[0]

    # publish API

    def _publish(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        destination = path[len(PUBLISH_PREFIX) :] if path.startswith(PUBLISH_PREFIX) else ""
        if destination.lower().startswith(("http%3a", "https%3a")):
            destination = urllib.parse.unquote(destination)
        status, answer_headers, answer, message_id, deduplicated = self._accept(destination, headers, body)
        with self._lock:
            self._publishes.append(PublishRecord(destination, headers, body, status, message_id, deduplicated))
        return status, answer_headers, answer

    def _accept(
        self, destination: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any], str | None, bool]:
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {}, {"error": "Unauthorized"}, None, False
        fault = self._take_publish_fault()
        if fault is not None:
            return fault.status_code, fault.headers, {"error": "injected publish failure"}, None, False
        targets = self._targets(destination)
        if not targets:
            return (
                400,
                {},
                {"error": f"invalid destination {destination!r} (the emulator calls loopback only)"},
                None,
                False,
            )
        try:
            max_retries = min(int(headers.get("upstash-retries", self.max_retries)), self.max_retries)
        except ValueError:
            return 400, {}, {"error": "Upstash-Retries must be an integer"}, None, False
        timeout_s = retry_after_seconds(headers.get("upstash-timeout")) or self.delivery_timeout_s
        dedup_id = headers.get("upstash-deduplication-id")
        with self._changed:
            now = time.monotonic()
            self._dedup = {key: value for key, value in self._dedup.items() if value[1] > now}
            if dedup_id is not None and dedup_id in self._dedup:
                existing = self._dedup[dedup_id][0]
                return 202, {}, {"messageId": existing, "deduplicated": True}, existing, True
            message = _Message(
                message_id=f"msg_{uuid.uuid4().hex}",
                destination=destination,
                sent_to=targets[0],
                targets=targets,
                method=headers.get("upstash-method", "POST").upper(),
                body=body,
                headers=_forwarded_headers(headers),
                max_retries=max(0, max_retries),
                timeout_s=timeout_s,
            )
            self._messages[message.message_id] = message
            if dedup_id is not None:
                self._dedup[dedup_id] = (message.message_id, now + self.deduplication_window_s)
            self._schedule_locked(0.0, lambda: self._attempt(message, "delivery"))
        return 201, {}, {"messageId": message.message_id}, message.message_id, False

    def _take_publish_fault(self) -> _PublishFault | None:
        with self._lock:
            if not self._publish_faults:
                return None
            fault = self._publish_faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._publish_faults.pop(0)
            return fault

    def _targets(self, destination: str) -> tuple[str, ...]:
        """The loopback URLs a destination is delivered to (empty if it is not loopback)."""
        with self._lock:
            routes = list(self._routes)
        targets: tuple[str, ...] = (destination,)
        for public_prefix, loopback_prefixes in routes:
            if destination.startswith(public_prefix):
                targets = tuple(prefix + destination[len(public_prefix) :] for prefix in loopback_prefixes)
                break
        for target in targets:
            parsed = urllib.parse.urlsplit(target)
            if parsed.scheme not in ("http", "https") or not _is_loopback(parsed.hostname):
                return ()
        return targets

    # delivery

    def _schedule_locked(self, delay_s: float, job: Callable[[], None]) -> None:
        self._outstanding += 1
        heapq.heappush(self._due, (time.monotonic() + delay_s, next(self._sequence), job))
        self._changed.notify_all()

    def _schedule(self, delay_s: float, job: Callable[[], None]) -> None:
        with self._changed:
            if self._running:
                self._schedule_locked(delay_s, job)

    def _run_schedule(self) -> None:
        with self._changed:
            while self._running:
                if not self._due:
                    self._changed.wait()
                    continue
                due, _, job = self._due[0]
                wait_s = due - time.monotonic()
                if wait_s > 0:
                    self._changed.wait(wait_s)
                    continue
                heapq.heappop(self._due)
                assert self._pool is not None
                self._pool.submit(self._run_job, job)

    def _run_job(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as error:
            with self._lock:
                self._job_errors.append(error)
            raise
        finally:
            with self._changed:
                self._outstanding -= 1
                self._changed.notify_all()

    def _chance(self, ratio: float) -> bool:
        with self._lock:
            return ratio > 0 and self._rng.random() < ratio

    def _attempt(self, message: _Message, kind: str) -> None:
        """Deliver once (with a simultaneous copy if chosen), then settle the message or schedule a retry."""
        copy_started = None
        if self._chance(self.concurrent_duplicate_ratio):
            copy_started = threading.Barrier(2, timeout=2)
            self._schedule(0.0, lambda: self._deliver(message, "concurrent_duplicate", copy_started))
        record = self._deliver(message, kind, copy_started)
        succeeded = record.status_code is not None and 200 <= record.status_code < 300
        non_retryable = record.response_headers.get("upstash-nonretryable-error", "").lower() == "true"
        with self._lock:
            if succeeded:
                message.state = "delivered"
            elif non_retryable or message.retried >= message.max_retries:
                message.state = "failed"
            else:
                message.retried += 1
            retry_after_s = self._retry_delay(record, message.retried) if message.state == "pending" else None
        if succeeded and self._chance(self.duplicate_ratio):
            self._schedule(0.0, lambda: self._deliver(message, "duplicate"))
        if retry_after_s is not None:
            self._schedule(retry_after_s, lambda: self._attempt(message, "retry"))

    def _retry_delay(self, record: DeliveryRecord, retried: int) -> float:
        requested = retry_after_seconds(record.response_headers.get("retry-after"))
        if requested is None or requested > MAX_RETRY_DELAY_S:
            requested = min(MAX_RETRY_DELAY_S, math.exp(2.5 * retried))
        return requested * self.retry_delay_scale

    def _deliver(self, message: _Message, kind: str, start_together: threading.Barrier | None = None) -> DeliveryRecord:
        with self._lock:
            key = self._current_key
            retried = message.retried
        claims = delivery_claims(message.destination, message.body, pad_body_hash=self.pad_body_hash)
        headers = {
            **message.headers,
            "User-Agent": "Upstash-QStash",
            "Upstash-Signature": sign_claims(claims, key),
            "Upstash-Retried": str(retried),
            "Upstash-Message-Id": message.message_id,
            "Upstash-Caller-Ip": "127.0.0.1",
        }
        if start_together is not None:
            try:
                start_together.wait()
            except threading.BrokenBarrierError:
                pass
        assert self._client is not None
        started_at = time.monotonic()
        status_code: int | None = None
        response_headers: dict[str, str] = {}
        error = None
        first = next(self._next_target)
        targets = [message.targets[(first + n) % len(message.targets)] for n in range(len(message.targets))]
        sent_to = targets[0]
        try:
            for sent_to in targets:
                try:
                    response = self._client.request(
                        message.method, sent_to, content=message.body, headers=headers, timeout=message.timeout_s
                    )
                    break
                except httpx.ConnectError:
                    if sent_to == targets[-1]:
                        raise
            status_code = response.status_code
            response_headers = {name.lower(): value for name, value in response.headers.items()}
        except httpx.TimeoutException as exc:
            error = f"timeout: {exc}"
        except httpx.TransportError as exc:
            error = f"{type(exc).__name__}: {exc}"
        record = DeliveryRecord(
            message_id=message.message_id,
            destination=message.destination,
            sent_to=sent_to,
            kind=kind,
            retried=retried,
            request_headers=headers,
            status_code=status_code,
            response_headers=response_headers,
            error=error,
            started_at=started_at,
            finished_at=time.monotonic(),
        )
        with self._lock:
            self._deliveries.append(record)
        return record


def _forwarded_headers(publish_headers: dict[str, str]) -> dict[str, str]:
    forwarded = {"Content-Type": publish_headers.get("content-type", "application/octet-stream")}
    prefix = "upstash-forward-"
    for name, value in publish_headers.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            forwarded[name[len(prefix) :]] = value
    return forwarded


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _handler_for(emulator: QStashEmulator) -> type[BaseHTTPRequestHandler]:
    class PublishHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, answer_headers, answer = emulator._publish(self.path, headers, body)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in answer_headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the records are the log."""

    return PublishHandler

"""Hostile clients against the real server process (issue 14's HTTP findings): each answer is a documented 4xx."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import RunningService, running_service

TIKTOK = "https://www.tiktok.com/@scout2015/video/6718335390845095173"
HEADER_TIMEOUT = 2


@pytest.fixture(scope="module")
def hostile(pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with running_service(pg_database_one, tmp_path_factory.mktemp("hostile"), dispatch="none",
                         sse_ping_seconds="1", header_timeout_seconds=str(HEADER_TIMEOUT), max_streams_per_user="3",
                         auth_failures_per_minute="5", auth_failure_delay_seconds="0.05") as running:
        yield running


def raw_answer(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return received


def connect(service: RunningService) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.process.port), timeout=10)


def test_an_8_mib_header_gets_431_and_the_json_error(hostile: RunningService) -> None:
    with connect(hostile) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(128):
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = raw_answer(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"code": "headers_too_large"' in body


def test_too_many_header_fields_get_431(hostile: RunningService) -> None:
    many = {f"x-h{i}": "1" for i in range(150)}
    r = httpx.get(hostile.url + "/healthz", headers=many, timeout=10)
    assert r.status_code == 431
    assert r.json()["error"]["code"] == "headers_too_large"
    assert httpx.get(hostile.url + "/healthz", headers={"x-h": "a" * 8000}, timeout=10).status_code == 200


def test_a_slowloris_client_is_cut_after_the_header_timeout_while_healthz_answers(hostile: RunningService) -> None:
    slow = [connect(hostile) for _ in range(50)]
    idle = connect(hostile)  # connects and never sends a byte
    started = time.monotonic()
    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # a header line now and then, never the blank line that ends them
            time.sleep(0.5)
            assert httpx.get(hostile.url + "/healthz", timeout=5).status_code == 200
            for sock in slow:
                sock.sendall(b"X-Slow: 1\r\n")
        answers = [raw_answer(sock, timeout=HEADER_TIMEOUT + 10) for sock in slow]
        cut_after = time.monotonic() - started
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
        assert raw_answer(idle, timeout=HEADER_TIMEOUT + 10).startswith(b"HTTP/1.1 408")
        assert HEADER_TIMEOUT - 0.5 <= cut_after < HEADER_TIMEOUT + 10
    finally:
        for sock in [*slow, idle]:
            sock.close()
    assert httpx.get(hostile.url + "/healthz", timeout=5).status_code == 200

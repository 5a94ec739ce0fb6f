"""A moto S3 server on loopback for tests, and the settings that keep boto3 on it.

Use the ``moto_endpoint`` fixture (import it into a test module or conftest). It starts
``python -m moto.server`` on 127.0.0.1 and a free port, waits until it answers, and yields its URL. While
it runs, the process environment gives boto3 dummy credentials and a region, turns off the EC2 metadata
lookup and any shared AWS config, and exempts loopback from proxies, so no request leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 30.0

DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
CLEARED_AWS_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _wait_until_answering(url: str, process: subprocess.Popen[bytes], log_path: str) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path, encoding="utf-8", errors="replace") as log:
                raise RuntimeError(f"moto server exited with {process.returncode}:\n{log.read()}")
        try:
            with opener.open(f"{url}/moto-api/", timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto server at {url} did not answer within {STARTUP_TIMEOUT} s")


def _no_proxy_with_loopback() -> str:
    current = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    return ",".join(filter(None, [current, LOOPBACK, "localhost"]))


@contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1 with boto3's environment pointed away from real AWS; yield its URL."""
    saved = {name: os.environ.get(name) for name in (*CLEARED_AWS_ENV, *DUMMY_AWS_ENV, "NO_PROXY", "no_proxy")}
    for name in CLEARED_AWS_ENV:
        os.environ.pop(name, None)
    os.environ.update(DUMMY_AWS_ENV)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = _no_proxy_with_loopback()
    port = free_loopback_port()
    url = f"http://{LOOPBACK}:{port}"
    log_path = str(log_dir / "moto-server.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
    try:
        _wait_until_answering(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a moto S3 server on 127.0.0.1 (see moto_server)."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url

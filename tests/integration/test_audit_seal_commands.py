"""The sealed log through the real commands and processes: `audit verify`, `export`, `verify-export`
exit 1 naming the tampered positions; the sealing follower in `mediatasks projections` SIGKILLed and
restarted continues the chain with no gap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from application.mediatasks import MediaTasks
from infrastructure.audit.history import verify_chain
from infrastructure.audit.keys import Ed25519Signer, load_private_key
from infrastructure.postgres.audit_seal import PostgresSeal, SealingFollower
from tests.integration.test_audit_seal import (
    URL,
    connect,
    events_table,
    make_history,
    tamper_delete,
    tamper_insert,
    tamper_swap,
    tamper_update,
)
from tests.support.postgres import database_url


@pytest.fixture
def key_files(tmp_path: Path) -> dict[str, str]:
    key = Ed25519PrivateKey.generate()
    private = tmp_path / "signing.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = tmp_path / "public.pem"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {"private": str(private), "public": str(public)}


def service_env(store_env: dict[str, str], key_files: dict[str, str], **extra: str) -> dict[str, str]:
    pg = {
        k: store_env[k]
        for k in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DBNAME")
    }
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDIATASKS_")},
        "MEDIATASKS_DATABASE_URL": database_url(pg),
        "MEDIATASKS_POSTGRES_SCHEMA": store_env["POSTGRES_SCHEMA"],
        "MEDIATASKS_AUDIT_SIGNING_KEY": key_files["private"],
        "MEDIATASKS_TELEMETRY": "false",
        **extra,
    }


def command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infrastructure.entrypoints.cli", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_verify_and_verify_export_exit_1_naming_each_tampered_position(
    app: MediaTasks, store_env: dict[str, str], key_files: dict[str, str], tmp_path: Path
) -> None:
    gap = make_history(app, store_env, tasks=8)
    signer = Ed25519Signer(load_private_key(key_files["private"]))
    follower = SealingFollower(
        app, PostgresSeal(app.recorder.datastore), signer, checkpoint_events=10, checkpoint_seconds=0, page=5
    )  # a checkpoint after every page
    follower.catch_up()
    env = service_env(store_env, key_files)
    clean = command(env, "verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "sealed to" in clean.stdout and "differs" not in clean.stdout
    resumed = command(env, "verify", "--from", "20")
    assert resumed.returncode == 0 and "chain checked from the signed checkpoint at or before 20" in resumed.stdout
    public = command(env, "public-key")
    assert public.returncode == 0 and public.stdout == Path(key_files["public"]).read_text()

    history = {"gap": gap}
    positions = {
        kind: tamper(store_env, history)
        for kind, tamper in (
            ("swap", tamper_swap),
            ("update", tamper_update),
            ("delete", tamper_delete),
            ("insert", tamper_insert),
        )
    }
    assert len(set(positions.values()) | {positions["swap"] + 1}) == 5, positions
    first = min(positions.values())

    tampered = command(env, "verify")
    assert tampered.returncode == 1
    after_all = max(positions.values()) + 1 + 5  # a checkpoint every 5 positions: one past every tampering
    assert after_all < app.recorder.max_notification_id()
    assert command(env, "verify", "--from", str(after_all)).returncode == 0  # resumed past the tampering
    assert f"first at position {first}" in tampered.stdout
    for code, kind in (
        ("event_changed", "update"),
        ("event_deleted", "delete"),
        ("event_inserted", "insert"),
        ("event_changed", "swap"),
    ):
        assert f"VIOLATION {code}" in tampered.stdout and f"(events at {positions[kind]})" in tampered.stdout

    export = tmp_path / "history.ndjson.zst"
    exported = command(env, "export", "-o", str(export))
    assert exported.returncode == 0, exported.stderr
    offline_env = {k: v for k, v in env.items() if k not in ("MEDIATASKS_DATABASE_URL",)}
    offline = command(offline_env, "verify-export", str(export), "--public-key", key_files["public"])
    assert offline.returncode == 1, offline.stdout + offline.stderr
    assert f"first at position {first}" in offline.stdout
    for kind in positions:
        assert f"(events at {positions[kind]})" in offline.stdout

    data = bytearray(export.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the compressed file
    export.write_bytes(bytes(data))
    broken = command(offline_env, "verify-export", str(export), "--public-key", key_files["public"])
    assert broken.returncode == 1 and "REFUSED" in broken.stdout and "Traceback" not in broken.stderr


def test_sealing_follower_killed_and_restarted_continues_the_chain(
    app: MediaTasks, store_env: dict[str, str], key_files: dict[str, str], tmp_path: Path
) -> None:
    app.create_user("kim", 10_000)
    stop_writing = threading.Event()

    def write() -> None:
        while not stop_writing.is_set():
            task_id = app.submit("kim", URL, "subtitles").task_id
            app.begin_attempt(task_id, "w")
            app.complete(task_id, 1, {})

    env = service_env(
        store_env,
        key_files,
        MEDIATASKS_CATCH_UP_SECONDS="0.1",
        MEDIATASKS_AUDIT_CHECKPOINT_SECONDS="0.2",
        MEDIATASKS_AUDIT_CHECKPOINT_EVENTS="25",
    )
    seal = PostgresSeal(app.recorder.datastore)
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    process = _projections(env, tmp_path / "first.log")
    try:
        _wait(lambda: (seal.max_tracking_id(app.name) or 0) >= 40, "the follower did not start sealing")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        killed_at = seal.max_tracking_id(app.name)
        time.sleep(0.5)  # events written while no follower runs
        process = _projections(env, tmp_path / "second.log")
        _wait(lambda: (seal.max_tracking_id(app.name) or 0) > killed_at + 20, "the restarted follower did not seal")
        stop_writing.set()
        writer.join(timeout=10)
        head = app.recorder.max_notification_id()
        _wait(
            lambda: (seal.last_checkpoint().position if seal.last_checkpoint() else 0) == head,
            "the restarted follower did not seal the head",
        )
    finally:
        stop_writing.set()
        process.terminate()
        process.wait(timeout=20)
    with connect(store_env) as conn:
        events = [
            r[0]
            for r in conn.execute(f"SELECT notification_id FROM {events_table(store_env)} ORDER BY notification_id")
        ]
        links = [
            r[0]
            for r in conn.execute(
                f'SELECT position FROM "{store_env["POSTGRES_SCHEMA"]}".mediatasks_audit_links ORDER BY position'
            )
        ]
    assert links == events  # one link per event, none missing, none twice
    signer = Ed25519Signer(load_private_key(key_files["private"]))
    report = verify_chain(app, verifier=signer.verifier())
    assert report.ok, report.violations
    assert report.chain.sealed_to == head and report.chain.checkpoints >= 3


def _projections(env: dict[str, str], log: Path) -> subprocess.Popen[Any]:
    return subprocess.Popen(
        [sys.executable, "-m", "infrastructure.entrypoints.cli", "projections"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait(condition: Any, message: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)

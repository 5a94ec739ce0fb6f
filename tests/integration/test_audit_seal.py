"""The tamper-evident log on real PostgreSQL: a sealed history verifies; an UPDATE, a DELETE, a forged
INSERT and a swapped pair in the events table are each named at their position, by `verify` and by
`verify-export` on an export taken after the tampering; a tampered export file and checkpoints
signed with another key are refused."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from application.mediatasks import MediaTasks
from infrastructure.audit.export import ExportRefused, export_writer, verify_export, write_export
from infrastructure.audit.history import verify, verify_chain
from infrastructure.audit.keys import Ed25519Signer, HmacSigner
from infrastructure.postgres.audit_seal import PostgresSeal, SealingFollower
from infrastructure.postgres.tables import construct_views

URL = "https://www.instagram.com/reel/Cabc123/"


def connect(env: dict[str, str]) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"] or None,
        dbname=env["POSTGRES_DBNAME"],
        autocommit=True,
    )


def events_table(env: dict[str, str]) -> str:
    return f'"{env["POSTGRES_SCHEMA"]}".mediatasks_events'


def make_history(app: MediaTasks, env: dict[str, str], tasks: int = 6) -> int:
    """A few users and tasks; returns a free position left between them (a lost race leaves such gaps)."""
    app.create_user("eve", 50)
    app.create_user("fay", 50)
    gap = 0
    for i in range(tasks):
        task_id = app.submit("eve" if i % 2 else "fay", URL, "subtitles").task_id
        app.begin_attempt(task_id, "w")
        app.report_progress(task_id, 1, "metadata", 20)
        app.complete(task_id, 1, {})
        if i == tasks // 2:
            with connect(env) as conn:
                gap = conn.execute(
                    "SELECT nextval(pg_get_serial_sequence(%s, 'notification_id'))", (events_table(env),)
                ).fetchone()[0]
    return gap


@pytest.fixture
def signer() -> Ed25519Signer:
    return Ed25519Signer(Ed25519PrivateKey.generate())


@pytest.fixture
def sealed(app: MediaTasks, store_env: dict[str, str], signer: Ed25519Signer) -> Iterator[dict[str, Any]]:
    """A history, sealed to its head with a checkpoint every 5 positions."""
    gap = make_history(app, store_env)
    seal = PostgresSeal(app.recorder.datastore)
    follower = SealingFollower(app, seal, signer, checkpoint_events=5, checkpoint_seconds=3600, page=7)
    follower.catch_up()
    head = app.recorder.max_notification_id()
    if seal.last_checkpoint().position != head:  # the last few positions: sealed by time
        follower.checkpoint_seconds = 0
        follower.catch_up()
    assert seal.last_checkpoint().position == head
    views = construct_views(store_env)
    yield {"app": app, "seal": seal, "head": head, "gap": gap, "views": views, "follower": follower}
    views.datastore.close()


def positions_of(env: dict[str, str], topic_suffix: str) -> list[int]:
    with connect(env) as conn:
        rows = conn.execute(
            f"SELECT notification_id FROM {events_table(env)} WHERE topic LIKE %s ORDER BY notification_id",
            ("%" + topic_suffix,),
        ).fetchall()
    return [r[0] for r in rows]


def tamper_update(env: dict[str, str], history: dict[str, Any]) -> int:
    position = positions_of(env, ".Processing")[2]
    with connect(env) as conn:
        conn.execute(
            f"UPDATE {events_table(env)} SET state = convert_to(replace(convert_from(state, 'UTF8'), "
            "'\"progress\":20', '\"progress\":30'), 'UTF8') WHERE notification_id = %s",
            (position,),
        )
    return position


def tamper_delete(env: dict[str, str], history: dict[str, Any]) -> int:
    position = positions_of(env, ".Charged")[3]
    with connect(env) as conn:
        conn.execute(f"DELETE FROM {events_table(env)} WHERE notification_id = %s", (position,))
    return position


def tamper_insert(env: dict[str, str], history: dict[str, Any]) -> int:
    """A forged grant, at a position no event had (inside the sealed range)."""
    position = history["gap"]
    source = positions_of(env, ".Granted")[0]
    with connect(env) as conn:
        conn.execute(
            f"INSERT INTO {events_table(env)} (originator_id, originator_version, topic, state, "
            "notification_id) SELECT originator_id, originator_version + 1000, topic, state, %s "
            f"FROM {events_table(env)} WHERE notification_id = %s",
            (position, source),
        )
    return position


def tamper_swap(env: dict[str, str], history: dict[str, Any]) -> int:
    first = positions_of(env, ".Downloading")[1]
    second = first + 1
    table = events_table(env)
    with connect(env) as conn, conn.transaction():
        conn.execute(f"UPDATE {table} SET notification_id = -1 WHERE notification_id = %s", (first,))
        conn.execute(f"UPDATE {table} SET notification_id = %s WHERE notification_id = %s", (first, second))
        conn.execute(f"UPDATE {table} SET notification_id = %s WHERE notification_id = -1", (second,))
    return first


TAMPERINGS: dict[str, tuple[Callable[[dict[str, str], dict[str, Any]], int], str]] = {
    "update": (tamper_update, "event_changed"),
    "delete": (tamper_delete, "event_deleted"),
    "insert": (tamper_insert, "event_inserted"),
    "swap": (tamper_swap, "event_changed"),
}


def test_sealed_history_verifies_clean(sealed: dict[str, Any], signer: Ed25519Signer, tmp_path: Path) -> None:
    report = verify(sealed["app"], sealed["views"], verifier=signer.verifier())
    assert report.ok, report.violations
    assert report.chain.sealed_to == sealed["head"] and report.chain.first_tampered is None
    assert report.chain.checkpoints >= sealed["head"] // 7  # pages of 7, a checkpoint each
    path = tmp_path / "history.ndjson.zst"
    with export_writer(str(path)) as out:
        write_export(sealed["app"], sealed["seal"], out)
    assert path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    offline = verify_export(str(path), signer.verifier())
    assert offline.ok, offline.violations
    assert (offline.events, offline.tasks, offline.accounts) == (report.events, 6, 2)


@pytest.mark.parametrize("kind", list(TAMPERINGS))
def test_tampering_is_named_at_its_position(
    kind: str, sealed: dict[str, Any], store_env: dict[str, str], signer: Ed25519Signer, tmp_path: Path
) -> None:
    tamper, code = TAMPERINGS[kind]
    position = tamper(store_env, sealed)
    report = verify(sealed["app"], sealed["views"], verifier=signer.verifier())
    assert not report.ok
    assert report.chain.first_tampered == position, report.violations
    assert any(v.code == code and v.positions == (position,) for v in report.violations), report.violations
    if kind == "swap":
        assert any(v.code == "event_changed" and v.positions == (position + 1,) for v in report.violations)

    path = tmp_path / "after.ndjson"
    with export_writer(str(path)) as out:
        write_export(sealed["app"], sealed["seal"], out)
    offline = verify_export(str(path), signer.verifier())
    assert offline.chain.first_tampered == position, offline.violations
    assert any(v.code == code and v.positions == (position,) for v in offline.violations)


def test_an_export_tampered_in_the_file_is_refused(
    sealed: dict[str, Any], signer: Ed25519Signer, tmp_path: Path
) -> None:
    path = tmp_path / "history.ndjson"
    with export_writer(str(path)) as out:
        write_export(sealed["app"], sealed["seal"], out)
    lines = path.read_bytes().splitlines()
    assert verify_export(str(path), signer.verifier()).ok

    # An event's state changed, and its link rewritten to match: the signed checkpoint after it disagrees.
    index, item = next(
        (i, orjson.loads(line)) for i, line in enumerate(lines) if b'"t":"' in line and b"Granted" in line
    )
    state = orjson.loads(base64.b64decode(item["s"]))
    forged = dict(item, s=base64.b64encode(orjson.dumps({**state, "amount": 5000})).decode())
    lines_forged = [*lines[:index], orjson.dumps(forged), *lines[index + 1 :]]
    path.write_bytes(b"\n".join(lines_forged) + b"\n")
    report = verify_export(str(path), signer.verifier())
    assert not report.ok and report.chain.first_tampered == item["p"]

    # A state that does not decode: named, not a crash.
    garbled = dict(item, s=base64.b64encode(b'{"amount":{"x":1}}').decode())
    path.write_bytes(b"\n".join([*lines[:index], orjson.dumps(garbled), *lines[index + 1 :]]) + b"\n")
    report = verify_export(str(path), signer.verifier())
    assert {"undecodable_event", "event_changed"} <= {v.code for v in report.violations}

    # A line removed (event and link): the counts disagree; with the trailer fixed, the next event does not chain.
    path.write_bytes(b"\n".join([*lines[:index], *lines[index + 1 :]]) + b"\n")
    with pytest.raises(ExportRefused):
        verify_export(str(path), signer.verifier())
    trailer = orjson.loads(lines[-1])
    trailer["end"]["events"] -= 1
    path.write_bytes(b"\n".join([*lines[:index], *lines[index + 1 : -1], orjson.dumps(trailer)]) + b"\n")
    report = verify_export(str(path), signer.verifier())
    assert not report.ok and report.chain.first_tampered == item["p"] + 1

    # A checkpoint's position moved: its signature no longer holds.
    checkpoint_index = next(i for i, line in enumerate(lines) if line.startswith(b'{"checkpoint"'))
    checkpoint = orjson.loads(lines[checkpoint_index])
    checkpoint["checkpoint"]["position"] += 1
    path.write_bytes(
        b"\n".join([*lines[:checkpoint_index], orjson.dumps(checkpoint), *lines[checkpoint_index + 1 :]]) + b"\n"
    )
    assert any(v.code == "checkpoint_signature_invalid" for v in verify_export(str(path), signer.verifier()).violations)

    # A header claiming another start of the chain, or none at all: refused.
    header = orjson.loads(lines[0])
    path.write_bytes(b"\n".join([orjson.dumps({**header, "anchor": "ab" * 32}), *lines[1:]]) + b"\n")
    with pytest.raises(ExportRefused):
        verify_export(str(path), signer.verifier())
    path.write_bytes(b"\n".join(lines[1:]) + b"\n")
    with pytest.raises(ExportRefused):
        verify_export(str(path), signer.verifier())

    # Cut short: refused outright.
    path.write_bytes(b"\n".join(lines[:-3]) + b"\n")
    with pytest.raises(ExportRefused):
        verify_export(str(path), signer.verifier())


def test_checkpoints_signed_with_another_key_are_refused(
    sealed: dict[str, Any], signer: Ed25519Signer, tmp_path: Path
) -> None:
    other = Ed25519Signer(Ed25519PrivateKey.generate())
    report = verify_chain(sealed["app"], verifier=other.verifier())
    bad = [v for v in report.violations if v.code == "checkpoint_signature_invalid"]
    assert len(bad) == report.chain.checkpoints > 0
    assert not verify_chain(sealed["app"], verifier=HmacSigner(b"0123456789abcdef0123")).ok
    path = tmp_path / "history.ndjson"
    with export_writer(str(path)) as out:
        write_export(sealed["app"], sealed["seal"], out)
    assert not verify_export(str(path), other.verifier()).ok
    assert verify_export(str(path), signer.verifier()).ok


def test_partial_exports_start_at_a_signed_checkpoint(
    sealed: dict[str, Any], signer: Ed25519Signer, tmp_path: Path
) -> None:
    path = tmp_path / "part.ndjson"
    head = sealed["head"]
    with export_writer(str(path)) as out:
        done = write_export(sealed["app"], sealed["seal"], out, from_position=12, to_position=head - 7)
    assert done["from"] <= 12 and done["from"] % 5 == 0 or done["from"] < 12
    assert done["to"] >= head - 7
    report = verify_export(str(path), signer.verifier())
    assert report.ok, report.violations
    assert not report.invariants_checked and 0 < report.events < head


def test_the_follower_thread_seals_new_events_and_resumes(
    app: MediaTasks, store_env: dict[str, str], signer: Ed25519Signer
) -> None:
    make_history(app, store_env, tasks=2)
    seal = PostgresSeal(app.recorder.datastore)
    follower = SealingFollower(app, seal, signer, checkpoint_events=1000, checkpoint_seconds=0.1, poll_seconds=0.05)
    assert follower.name == "AuditSeal"
    stopping = threading.Event()
    thread = threading.Thread(target=follower.run, args=(stopping,))
    thread.start()
    try:
        _wait_sealed(seal, app)
    finally:
        stopping.set()
        thread.join(timeout=10)
    app.create_user("gus", 3)
    follower.start()  # run() again, in its own thread: it resumes from its tracking position
    try:
        _wait_sealed(seal, app)
    finally:
        follower.stop()
    report = verify_chain(app, verifier=signer.verifier())
    assert report.ok and report.chain.linked_to == app.recorder.max_notification_id()
    assert follower.position() == app.recorder.max_notification_id(), "the supervisor samples this for /readyz"


def _wait_sealed(seal: PostgresSeal, app: MediaTasks, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while (
        seal.last_checkpoint() or None
    ) is None or seal.last_checkpoint().position != app.recorder.max_notification_id():
        assert time.monotonic() < deadline, "the follower did not seal the head"
        time.sleep(0.05)

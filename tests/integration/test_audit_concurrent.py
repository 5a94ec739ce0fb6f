"""`verify` with the chain check and the live read model's read in a second process finds exactly what
the single-process `verify` finds: on a clean sealed history, and on one with a changed, a deleted and
an inserted event and a read-model row written behind the projection's back."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking

from infrastructure.audit.history import verify
from infrastructure.audit.keys import Ed25519Signer
from infrastructure.postgres.audit_side_checks import SideChecks, share
from projections.task_views import TaskViewsProjection
from tests.integration import test_audit_seal
from tests.integration.test_audit_seal import connect, tamper_delete, tamper_insert, tamper_update

sealed, signer = test_audit_seal.sealed, test_audit_seal.signer  # its fixtures, shared


def both_ways(history: dict[str, Any], signer: Ed25519Signer) -> tuple[Any, Any]:
    def run(concurrent: bool) -> Any:
        return verify(
            history["app"], history["views"], seal=history["seal"], verifier=signer.verifier(), concurrent=concurrent
        )

    return run(True), run(False)


def findings(report: Any) -> list[tuple[str, str, tuple[int, ...]]]:
    return sorted((v.code, v.message, v.positions) for v in report.violations)


def test_a_clean_history_verifies_the_same_in_two_processes(sealed: dict[str, Any], signer: Ed25519Signer) -> None:
    concurrent, single = both_ways(sealed, signer)
    assert concurrent.ok and single.ok, (concurrent.violations, single.violations)
    assert concurrent.summary() == single.summary()
    assert concurrent.chain == single.chain and concurrent.chain.sealed_to == sealed["head"]


def test_tampering_is_named_alike_in_two_processes(
    sealed: dict[str, Any], signer: Ed25519Signer, store_env: dict[str, str]
) -> None:
    changed = tamper_update(store_env, sealed)
    deleted = tamper_delete(store_env, sealed)
    inserted = tamper_insert(store_env, sealed)
    views = sealed["views"]
    with connect(store_env) as conn:  # a read-model row written behind the projection's back
        conn.execute(
            f'INSERT INTO "{store_env["POSTGRES_SCHEMA"]}"."{views.prefix}_accounts" '
            "(account_id, user_id, balance, updated_at, position) VALUES (gen_random_uuid(), 'mallory', 5, now(), 1)"
        )
    concurrent, single = both_ways(sealed, signer)
    assert findings(concurrent) == findings(single)
    assert concurrent.chain == single.chain and concurrent.chain.first_tampered == min(changed, deleted, inserted)
    named = {(v.code, v.positions) for v in concurrent.violations}
    assert {("event_changed", (changed,)), ("event_deleted", (deleted,)), ("event_inserted", (inserted,))} <= named
    assert any(v.code == "read_model_differs" for v in concurrent.violations)


def test_a_failed_child_is_an_error_not_a_clean_report(sealed: dict[str, Any], monkeypatch: Any) -> None:
    monkeypatch.setattr(SideChecks, "start", classmethod(lambda cls, *args: cls(_failing_child())))
    try:
        verify(sealed["app"], sealed["views"], seal=sealed["seal"], concurrent=True)
    except RuntimeError as error:
        assert "failed" in str(error)
    else:
        raise AssertionError("verify returned a report although its chain check never ran")


def _failing_child() -> Any:
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], stdout=subprocess.PIPE)


def test_rows_of_every_share_are_named_alike_in_two_processes(
    sealed: dict[str, Any], signer: Ed25519Signer, store_env: dict[str, str]
) -> None:
    """The two processes split the tasks by share: a forged row of each share, and a changed one, are named
    by `verify` both ways (the first process's share and the child's)."""
    app, views = sealed["app"], sealed["views"]
    projection = TaskViewsProjection(view=views)  # the read model, up to the head
    for notification in app.recorder.select_notifications(start=1, limit=10_000):
        projection.process_event(app.mapper.to_domain_event(notification), Tracking(app.name, notification.id))
    tasks = f'"{store_env["POSTGRES_SCHEMA"]}"."{views.prefix}_tasks"'
    forged = [UUID(int=(n << 8) | last) for n, last in enumerate((0, 1, 2, 3, 4), start=1)]  # shares 0, 1, 2, 3, 0
    assert [share(task_id) for task_id in forged] == [0, 1, 2, 3, 0]
    with connect(store_env) as conn:
        for task_id in forged:  # a copy of a real row under an id no event has
            conn.execute(
                f"INSERT INTO {tasks} SELECT (jsonb_populate_record(NULL::{tasks}, "
                f"to_jsonb(r) || jsonb_build_object('task_id', %s::text))).* FROM {tasks} r LIMIT 1",
                (str(task_id),),
            )
        changed = conn.execute(
            f"UPDATE {tasks} SET progress = 42 WHERE task_id = (SELECT task_id FROM {tasks} "
            "WHERE task_id <> ALL(%s) ORDER BY task_id LIMIT 1) RETURNING task_id",
            (forged,),
        ).fetchone()[0]
    concurrent, single = both_ways(sealed, signer)
    assert findings(concurrent) == findings(single)
    messages = {v.message for v in concurrent.violations if v.code == "read_model_differs"}
    assert {f"tasks row {task_id} is not in a rebuild" for task_id in forged} <= messages
    assert f"tasks row {changed} differs from a rebuild" in messages

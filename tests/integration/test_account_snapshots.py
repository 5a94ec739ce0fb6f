"""An account's snapshot every ACCOUNT_SNAPSHOT_INTERVAL events is taken from the account as saved,
without reading it back from the store, and holds the state a replay of its events gives."""

from __future__ import annotations

from typing import Any

import pytest

from application.mediatasks import ACCOUNT_SNAPSHOT_INTERVAL, MediaTasks
from domain.credits import CreditAccount


def replayed(app: MediaTasks, account: CreditAccount) -> CreditAccount:
    """The account folded from its events alone (no snapshot)."""
    folded: Any = None
    for event in app.repository.event_store.get(account.id):
        folded = event.mutate(folded)
    return folded


def test_the_save_that_reaches_the_interval_snapshots_the_account_as_saved(
    app: MediaTasks, store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app.create_user("sasha", 1)  # Opened, Granted: version 2
    account = app.get_account("sasha")
    for _ in range(ACCOUNT_SNAPSHOT_INTERVAL - 3):
        account.grant(1)
    app.save(account)
    assert account.version == ACCOUNT_SNAPSHOT_INTERVAL - 1
    assert list(app.snapshots.get(account.id)) == []  # type: ignore[union-attr]

    def no_read_back(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the snapshot read the account back from the store")

    account.grant(1)
    account.grant(1)  # the save's first event is the interval's, its second one past it
    with monkeypatch.context() as patched:
        patched.setattr(app.repository, "get", no_read_back)
        app.save(account)

    [snapshot] = app.snapshots.get(account.id)  # type: ignore[union-attr]
    assert snapshot.originator_version == ACCOUNT_SNAPSHOT_INTERVAL + 1 == account.version
    assert snapshot.state["balance"] == 1 + ACCOUNT_SNAPSHOT_INTERVAL - 1
    assert snapshot.state["user_id"] == "sasha"
    folded = replayed(app, account)
    assert snapshot.state["_modified_on"] == folded.modified_on
    assert {k: v for k, v in snapshot.state.items() if k != "class_version"} == {
        k: v for k, v in vars(folded).items() if k not in ("_id", "_version", "_pending_events")
    }

    other = MediaTasks(env=store_env)  # no cache: the account comes from the snapshot
    try:
        read = other.get_account("sasha")
        assert (read.version, read.balance, read.modified_on) == (folded.version, folded.balance, folded.modified_on)
    finally:
        other.close()


def test_saves_short_of_the_interval_take_no_snapshot_and_each_reaching_it_takes_one(
    app: MediaTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "snapshotting_intervals", {CreditAccount: 3})  # the interval's rule, at a small one
    account_id = CreditAccount.id_for("tomas")

    def snapshot_versions() -> list[int]:
        return [s.originator_version for s in app.snapshots.get(account_id)]  # type: ignore[union-attr]

    app.create_user("tomas", 5)  # Opened, Granted: versions 1 and 2
    seen = [snapshot_versions()]
    for _ in range(5):  # one event a save: versions 3 to 7
        app.grant_credits("tomas", 1)
        seen.append(snapshot_versions())
    assert seen == [[], [3], [3], [3], [3, 6], [3, 6]]
    assert app.get_account("tomas").balance == 10

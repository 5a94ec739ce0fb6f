"""The chain check on its own, the fast decoder against eventsourcing's mapper, the plain progress lines."""

from __future__ import annotations

import io
from contextlib import redirect_stderr
from datetime import datetime, timedelta, timezone
from uuid import uuid4

from application.audit_chain import GENESIS, ChainCheck, Checkpoint, chain_link, checkpoint_message, merge_by_position
from application.mediatasks import MediaTasks
from domain.credits import CreditAccount
from domain.tasks import MediaTask
from infrastructure.audit.keys import HmacSigner
from infrastructure.entrypoints.audit_commands import progress_bar
from infrastructure.postgres.event_decoder import EventDecoder

SIGNER = HmacSigner(b"unit-test-audit-key")


def sealed(rows: list[tuple]) -> tuple[list[tuple[int, bytes]], list[Checkpoint]]:
    chain, links = GENESIS, []
    for position, oid, version, topic, state in rows:
        chain = chain_link(chain, position, oid, version, topic, state)
        links.append((position, chain))
    at = datetime.now(timezone.utc)
    position, chain = links[-1]
    checkpoint = Checkpoint(
        position, chain, at, SIGNER.algorithm, SIGNER.key_id, SIGNER.sign(checkpoint_message(position, chain, at))
    )
    return links, [checkpoint]


def check(rows: list[tuple], links: list[tuple[int, bytes]], checkpoints: list[Checkpoint]) -> list[tuple]:
    found: list[tuple] = []
    chain = ChainCheck(checkpoints, SIGNER, lambda code, message, *p: found.append((code, *p)))
    chain.set_last_link(links[-1][0] if links else 0)
    for position, row, link in merge_by_position(rows, links):
        chain.check(position, row, link)
    chain.finish()
    return found


def history(n: int = 8) -> list[tuple]:
    oid = uuid4()
    return [(p, oid, p, "domain.tasks:MediaTask.Processing", f'{{"progress":{p}}}'.encode()) for p in range(1, n + 1)]


def test_a_clean_chain_has_no_violations() -> None:
    rows = history()
    links, checkpoints = sealed(rows)
    assert check(rows, links, checkpoints) == []


def test_each_kind_of_tampering_is_named_at_its_position() -> None:
    rows = history()
    links, checkpoints = sealed(rows)
    changed = [*rows[:2], (3, rows[2][1], 3, rows[2][3], b'{"progress":99}'), *rows[3:]]
    assert check(changed, links, checkpoints) == [("event_changed", 3)]
    deleted = [r for r in rows if r[0] != 5]
    assert check(deleted, links, checkpoints) == [("event_deleted", 5)]
    swapped = [*rows[:3], (4, *rows[4][1:]), (5, *rows[3][1:]), *rows[5:]]
    assert check(swapped, links, checkpoints) == [("event_changed", 4), ("event_changed", 5)]
    gap_rows = [r for r in rows if r[0] != 6]
    gap_links, gap_checkpoints = sealed(gap_rows)
    assert check(rows, gap_links, gap_checkpoints) == [("event_inserted", 6)]


def test_rewritten_links_are_caught_by_the_signed_checkpoint() -> None:
    rows = history()
    links, checkpoints = sealed(rows)
    forged_rows = [*rows[:2], (3, rows[2][1], 3, rows[2][3], b'{"progress":99}'), *rows[3:]]
    forged_links, _ = sealed(forged_rows)  # every link recomputed, but the checkpoint is the genuine one
    assert check(forged_rows, forged_links, checkpoints) == [("link_differs_from_checkpoint", 8)]
    other = HmacSigner(b"another-audit-key-123")
    at = checkpoints[0].sealed_at
    resigned = Checkpoint(
        8,
        forged_links[-1][1],
        at,
        other.algorithm,
        other.key_id,
        other.sign(checkpoint_message(8, forged_links[-1][1], at)),
    )
    assert check(forged_rows, forged_links, [resigned]) == [("checkpoint_signature_invalid", 8)]


def test_events_past_the_last_link_are_unsealed_not_inserted() -> None:
    rows = history(10)
    links, checkpoints = sealed(rows[:8])
    chain = ChainCheck(checkpoints, SIGNER, lambda *a: (_ for _ in ()).throw(AssertionError(a)))
    chain.set_last_link(8)
    for position, row, link in merge_by_position(rows, links):
        chain.check(position, row, link)
    report = chain.finish()
    assert (report.unsealed, report.sealed_to, report.first_tampered) == (2, 8, None)


def test_the_fast_decoder_gives_what_the_mapper_gives() -> None:
    app = MediaTasks(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    now = datetime.now(timezone.utc)
    task = MediaTask.start(
        user_id="u",
        idempotency_key="k",
        url="https://vimeo.com/1",
        platform="vimeo",
        output_type="video",
        languages=["en", "de"],
        credits=2,
        requested_at=now,
        max_attempts=3,
    )
    task.begin_attempt(now=now, lease=timedelta(minutes=5), worker_id="w")
    task.report_progress(attempt=1, stage="video", progress=40, details={"timings": {"a": 0.5}, "at": [now, {"x": 1}]})
    task.fail(attempt=1, code="timeout", message="slow \u2603", retryable=True)
    account = CreditAccount.open("u")
    account.grant(5, "promo")
    account.charge(task.id, 1, 2)
    events = [*task.collect_events(), *account.collect_events()]
    stored = [app.mapper.to_stored_event(e) for e in events]
    stored.append(type(stored[0])(stored[0].originator_id, 99, stored[0].topic, b'{"timestamp": NaN}'))
    decoder = EventDecoder(app.mapper)
    rows = [(i, s.originator_id, s.originator_version, s.topic, s.state) for i, s in enumerate(stored, 1)]
    errors: list[int] = []
    fast = list(decoder.events(rows, lambda position, error: errors.append(position)))
    expected = [app.mapper.to_domain_event(s) for s in stored[:-1]]
    assert [type(e) for _, e in fast[:-1]] == [type(e) for e in expected]
    assert [e.__dict__ for _, e in fast[:-1]] == [e.__dict__ for e in expected]
    assert fast[-1][1].__dict__ == app.mapper.to_domain_event(stored[-1]).__dict__  # NaN: the mapper decoded it
    again = list(decoder.events(rows[:-1]))  # every topic's shape known now: the shortcut where it fits
    assert [e.__dict__ for _, e in again] == [e.__dict__ for e in expected]
    assert decoder.shapes  # some topics have one
    broken = (
        len(rows) + 1,
        stored[0].originator_id,
        5,
        stored[0].topic,
        b'{"timestamp":{"_type_":"nope","_data_":"x"}}',
    )
    assert [p for p, _ in decoder.events([broken], lambda position, error: errors.append(position))] == []
    assert errors[-1] == len(rows) + 1
    app.close()


def test_progress_goes_to_plain_lines_off_a_terminal() -> None:
    err = io.StringIO()
    with redirect_stderr(err), progress_bar("verifying", plain_every_seconds=0) as progress:
        progress(500, 1000)
        progress(1000, 1000)
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("verifying: position 500 of 1,000 (50.0 %)") and "events/s, ETA" in lines[0]
    assert len(lines) == 2

"""Exports of the sealed history an auditor checks offline: NDJSON, zstd-compressed when the name ends .zst.

Lines, in order: a header; every checkpoint the export covers (the one it starts from included, so
its start is signed too); one line per position — the event (base64 state) with its link, or a link
whose event is gone; a trailer with the counts (a cut file is refused). `verify_export` needs only
the file and the key: the chain, the signatures and, for an export from the first event, every
invariant `mediatasks audit verify` checks.
"""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import IO, Any
from uuid import UUID

import orjson

from application.audit import AuditReport, HistoryAuditor
from application.audit_chain import GENESIS, ChainCheck, Checkpoint, CheckpointVerifier, merge_by_position
from infrastructure.collector import full_collections_held

FORMAT = "mediatasks-audit-export/1"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
Progress = Callable[[int, int], None]


class ExportRefused(Exception):
    """The file is not a whole, well-formed export."""


@contextmanager
def export_writer(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(path, "wb") as raw:
        if path.endswith(".zst"):
            import zstandard

            with zstandard.ZstdCompressor(level=3, write_checksum=True).stream_writer(raw, closefd=False) as compressed:
                yield compressed
        else:
            yield raw


@contextmanager
def export_reader(path: str) -> Iterator[IO[bytes]]:
    with open(path, "rb") as raw:
        if raw.read(4) == ZSTD_MAGIC:
            import zstandard

            raw.seek(0)
            with zstandard.ZstdDecompressor().stream_reader(raw) as decompressed:
                yield io.BufferedReader(decompressed, buffer_size=1 << 20)  # type: ignore[arg-type]  # zstandard's reader is a raw stream
        else:
            raw.seek(0)
            yield raw


def _checkpoint_line(c: Checkpoint) -> dict[str, Any]:
    return {
        "checkpoint": {
            "position": c.position,
            "chain": c.chain.hex(),
            "sealed_at": c.sealed_at.isoformat(),
            "algorithm": c.algorithm,
            "key_id": c.key_id,
            "signature": c.signature.hex(),
        }
    }


def write_export(
    app: Any,
    seal: Any,
    out: IO[bytes],
    *,
    from_position: int = 0,
    to_position: int | None = None,
    refunds_tracked_to: int = 0,
    progress: Progress | None = None,
) -> dict[str, int]:
    """The events in (checkpoint at or before `from_position`, checkpoint at or after `to_position`]."""
    from infrastructure.postgres.audit_seal import sealed_history

    start = seal.checkpoints(stop=from_position, last=True) if from_position else []
    first = start[0] if start else None
    stop = None
    if to_position is not None:
        covering = seal.checkpoints(after=to_position - 1)
        stop = covering[0].position if covering else to_position
    after = first.position if first else 0
    dumps, b64 = orjson.dumps, base64.b64encode
    events = 0
    with sealed_history(app, seal, after=after, stop=stop) as history:
        head = history.head
        bound = stop if stop is not None else max(head, history.last_link)
        last_link = min(history.last_link, bound)
        checkpoints = [c for c in history.checkpoints if after <= c.position <= bound]
        if first is not None and first not in checkpoints:
            checkpoints.insert(0, first)
        out.write(
            dumps(
                {
                    "format": FORMAT,
                    "application": app.name,
                    "from": after,
                    "to": head,
                    "anchor": (first.chain if first else GENESIS).hex(),
                    "last_link": last_link,
                    "refunds_tracked_to": refunds_tracked_to,
                    "exported_at": datetime.now(timezone.utc).isoformat(),
                }
            )
            + b"\n"
        )
        for checkpoint in checkpoints:
            out.write(dumps(_checkpoint_line(checkpoint)) + b"\n")
        every = max(1, min(10_000, head // 200 or 1))
        for position, row, link in merge_by_position(history.events, history.links):
            line: dict[str, Any] = {"p": position, "l": link.hex() if link is not None else None}
            if row is not None:
                line.update(id=str(row[1]), v=row[2], t=row[3], s=b64(row[4]).decode())
                events += 1
            out.write(dumps(line) + b"\n")
            if progress is not None and position % every == 0:
                progress(position, head)
        out.write(dumps({"end": {"events": events, "checkpoints": len(checkpoints)}}) + b"\n")
    if progress is not None:
        progress(head, head)
    return {"from": after, "to": head, "events": events, "checkpoints": len(checkpoints)}


@full_collections_held()
def verify_export(path: str, verifier: CheckpointVerifier, *, progress: Progress | None = None) -> AuditReport:
    """Check an export with no database: chain, signatures and (from the first event on) the invariants."""
    import zstandard

    try:
        return _verify_export(path, verifier, progress)
    except zstandard.ZstdError as e:
        raise ExportRefused(f"the compressed file is damaged: {e}") from None


def _verify_export(path: str, verifier: CheckpointVerifier, progress: Progress | None) -> AuditReport:
    from application.mediatasks import MediaTasks
    from infrastructure.postgres.event_decoder import EventDecoder

    offline = MediaTasks(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})  # its mapper: no storage is touched
    decode = EventDecoder(offline.mapper)
    with export_reader(path) as lines:
        parsed = (_parse(line) for line in lines)
        header = next(parsed, None)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ExportRefused("not a mediatasks audit export (no header)")
        try:
            start, head, anchor = int(header["from"]), int(header["to"]), bytes.fromhex(header["anchor"])
            last_link, refunds_at = int(header.get("last_link") or 0), int(header.get("refunds_tracked_to") or 0)
        except (KeyError, ValueError, TypeError):
            raise ExportRefused("the export's header is malformed") from None
        if not start and anchor != GENESIS:
            raise ExportRefused("an export from the first event must start from the chain's genesis")
        auditor = HistoryAuditor(refunds_tracked_to=refunds_at)
        report = auditor.report
        checkpoints, item = [], next(parsed, None)
        while isinstance(item, dict) and "checkpoint" in item:
            checkpoints.append(_checkpoint(item["checkpoint"]))
            item = next(parsed, None)
        if start:
            first = next((c for c in checkpoints if c.position == start), None)
            if first is None or first.chain != anchor or not verifier.verify(first):
                report.add(
                    "checkpoint_signature_invalid",
                    f"the export's start at {start} is not a checkpoint signed by the expected key",
                    start,
                )
        chain = ChainCheck(
            [c for c in checkpoints if c.position > start], verifier, report.add, anchor=anchor, anchor_position=start
        )
        chain.set_last_link(last_link)
        every = max(1, min(10_000, head // 200 or 1))
        events, trailer = 0, None
        previous = start
        while item is not None:
            if not isinstance(item, dict):
                raise ExportRefused("a line is not an object")
            if "end" in item:
                trailer = item["end"]
                if next(parsed, None) is not None:
                    raise ExportRefused("lines after the end of the export")
                break
            position, link, row = _position(item)
            if position <= previous:
                raise ExportRefused(f"position {position} out of order")
            previous = position
            events += row is not None
            chain.check(position, row, link)
            if row is not None and not start:
                try:
                    auditor.feed(position, decode(row[1], row[2], row[3], row[4]))
                except Exception as e:  # noqa: BLE001 - a forged state: name it and go on
                    report.add("undecodable_event", f"the event at {position} cannot be read: {e}", position)
            if progress is not None and position % every == 0:
                progress(position, head)
            item = next(parsed, None)
        if (
            not isinstance(trailer, dict)
            or trailer.get("events") != events
            or trailer.get("checkpoints") != len(checkpoints)
        ):
            raise ExportRefused("the export is cut short or its counts do not match")
    report = auditor.finish() if not start else report
    report.events = events
    report.chain = chain.finish()
    report.signatures_checked = True
    report.invariants_checked = not start
    offline.close()
    if progress is not None:
        progress(head, head)
    return report


def _position(item: dict[str, Any]) -> tuple[int, bytes | None, tuple[int, UUID, int, str, bytes] | None]:
    try:
        position = int(item["p"])
        link = bytes.fromhex(item["l"]) if item.get("l") else None
        row = None
        if "t" in item:
            row = (
                position,
                UUID(item["id"]),
                int(item["v"]),
                str(item["t"]),
                base64.b64decode(item["s"], validate=True),
            )
    except (KeyError, ValueError, TypeError):
        raise ExportRefused("an event line is malformed") from None
    return position, link, row


def _parse(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ExportRefused("a line is not JSON") from None


def _checkpoint(data: dict[str, Any]) -> Checkpoint:
    try:
        return Checkpoint(
            int(data["position"]),
            bytes.fromhex(data["chain"]),
            datetime.fromisoformat(data["sealed_at"]),
            str(data["algorithm"]),
            str(data["key_id"]),
            bytes.fromhex(data["signature"]),
        )
    except (KeyError, ValueError, TypeError):
        raise ExportRefused("a checkpoint line is malformed") from None

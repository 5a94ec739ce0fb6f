"""The tamper-evident log: a hash chain over the notification log, and signed checkpoints of it.

Each event's link is SHA-256 over the previous link and the event's position, originator id,
version, topic and stored state (length-prefixed, so no two events encode alike). A checkpoint
signs (position, link at that position, time). `ChainCheck` compares a stored history with the
links and checkpoints sealed from it and names each position where they differ.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol
from uuid import UUID

GENESIS = bytes(32)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FIXED = struct.Struct(">qqQQII")
_LOW64 = (1 << 64) - 1
_sha256 = hashlib.sha256
_topics: dict[str, bytes] = {}


def chain_link(
    previous: bytes, position: int, originator_id: UUID | str, version: int, topic: str, state: bytes
) -> bytes:
    """The link of one event, given the link before it:
    SHA-256(previous || position, version (8 bytes each) || originator id (16) || len(topic), len(state)
    (4 bytes each) || topic || state), all big-endian."""
    oid = (
        originator_id.int
        if isinstance(originator_id, UUID)
        else int.from_bytes(_sha256(originator_id.encode()).digest()[:16], "big")
    )
    topic_bytes = _topics.get(topic)
    if topic_bytes is None:
        topic_bytes = _topics.setdefault(topic, topic.encode()) if len(_topics) < 10_000 else topic.encode()
    return _sha256(
        b"".join(
            (
                previous,
                _FIXED.pack(position, version, oid >> 64, oid & _LOW64, len(topic_bytes), len(state)),
                topic_bytes,
                state,
            )
        )
    ).digest()


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the chain's link at `position` was `chain` at `sealed_at`."""

    position: int
    chain: bytes
    sealed_at: datetime
    algorithm: str
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return checkpoint_message(self.position, self.chain, self.sealed_at)


def checkpoint_message(position: int, chain: bytes, sealed_at: datetime) -> bytes:
    """The bytes a checkpoint's signature is over (time as whole microseconds since the epoch)."""
    micros = (sealed_at - EPOCH) // timedelta(microseconds=1)
    return f"mediatasks-audit-checkpoint/1\n{position}\n{chain.hex()}\n{micros}\n".encode()


class CheckpointSigner(Protocol):
    algorithm: str
    key_id: str

    def sign(self, message: bytes) -> bytes:
        """The signature of a checkpoint message."""


class CheckpointVerifier(Protocol):
    def verify(self, checkpoint: Checkpoint) -> bool:
        """True when the checkpoint's signature was made with the expected key."""


EventRow = tuple[int, Any, int, str, bytes]  # position, originator id, version, topic, stored state
Violate = Callable[..., None]  # (code, message, *positions)


@dataclass
class ChainReport:
    sealed_to: int = 0  # the last signed checkpoint's position (0: none)
    linked_to: int = 0  # the last link's position
    unsealed: int = 0  # events after the last link (the sealing follower has not reached them yet)
    checkpoints: int = 0
    first_tampered: int | None = None


class ChainCheck:
    """Walks events and links in position order; `finish()` after the last of both.

    Each event is checked against its own link, chained from the stored link before it, so every
    changed, deleted or inserted event is named at its position (not only the first). The signed
    checkpoints vouch for the links: the chain recomputed from the events alone must reach each
    checkpoint's link, which also catches links rewritten to match rewritten events.
    """

    def __init__(
        self,
        checkpoints: Iterable[Checkpoint],
        verifier: CheckpointVerifier | None,
        violate: Violate,
        *,
        anchor: bytes = GENESIS,
        anchor_position: int = 0,
    ) -> None:
        self.violate = violate
        self.report = ChainReport(sealed_to=anchor_position)
        self.checkpoints: dict[int, Checkpoint] = {}
        for checkpoint in sorted(checkpoints, key=lambda c: c.position):
            self.report.checkpoints += 1
            if verifier is not None and not verifier.verify(checkpoint):
                self._violation(
                    "checkpoint_signature_invalid",
                    f"the checkpoint at {checkpoint.position} is not "
                    f"signed by the expected key ({checkpoint.algorithm} key {checkpoint.key_id})",
                    checkpoint.position,
                )
                continue
            self.checkpoints[checkpoint.position] = checkpoint
        self.stored = anchor  # the stored link before the current position
        self.recomputed = anchor  # the chain from the events alone
        self.segment_clean = True
        self.report.linked_to = anchor_position
        self._last_link = max(self.checkpoints, default=anchor_position)

    def _violation(self, code: str, message: str, position: int) -> None:
        if self.report.first_tampered is None or position < self.report.first_tampered:
            self.report.first_tampered = position
        self.segment_clean = False
        self.violate(code, message, position)

    def set_last_link(self, position: int) -> None:
        """The last sealed position (events after it are not sealed yet, not inserted)."""
        self._last_link = max(self._last_link, position)

    def check(self, position: int, event: EventRow | None, link: bytes | None) -> None:
        """One position: its stored event (None if there is none) and its stored link (None if none)."""
        if event is not None:
            _, originator_id, version, topic, state = event
            in_step = self.recomputed == self.stored
            self.recomputed = chain_link(self.recomputed, position, originator_id, version, topic, state)
            if link is None:
                if position <= self._last_link:
                    self._violation(
                        "event_inserted",
                        f"the event at {position} ({topic.rsplit(':', 1)[-1]} of "
                        f"{originator_id} v{version}) was never sealed: inserted after the fact",
                        position,
                    )
                else:
                    self.report.unsealed += 1
            elif (
                self.recomputed if in_step else chain_link(self.stored, position, originator_id, version, topic, state)
            ) != link:
                self._violation(
                    "event_changed",
                    f"the event at {position} differs from the one sealed there "
                    "(its state, topic, originator or version changed, or it moved)",
                    position,
                )
        elif link is not None:
            self._violation("event_deleted", f"the event sealed at {position} is not in the history", position)
        if link is not None:
            self.stored = link
            self.report.linked_to = position
        checkpoint = self.checkpoints.get(position)
        if checkpoint is not None:
            self._at_checkpoint(checkpoint, link)

    def _at_checkpoint(self, checkpoint: Checkpoint, link: bytes | None) -> None:
        position = checkpoint.position
        if link is not None and link != checkpoint.chain:
            self._violation(
                "link_differs_from_checkpoint",
                f"the stored link at {position} is not the one the checkpoint signed: the chain table was rewritten",
                position,
            )
        elif self.recomputed != checkpoint.chain and self.segment_clean:
            self._violation(
                "checkpoint_mismatch",
                f"the events up to {position} do not hash to the chain signed at {checkpoint.sealed_at.isoformat()}",
                position,
            )
        # The signed link is the trusted start of the next segment.
        self.stored = self.recomputed = checkpoint.chain
        self.segment_clean = True
        self.report.sealed_to = position

    def finish(self) -> ChainReport:
        for position in sorted(p for p in self.checkpoints if p > self.report.linked_to):
            self._violation(
                "event_deleted", f"the checkpoint at {position} is past the last stored event and link", position
            )
        return self.report


def merge_by_position(
    events: Iterable[EventRow], links: Iterable[tuple[int, bytes]]
) -> Iterator[tuple[int, EventRow | None, bytes | None]]:
    """Events and links side by side, in position order (either may be missing at a position)."""
    event_iter, link_iter = iter(events), iter(links)
    event = next(event_iter, None)
    link = next(link_iter, None)
    while event is not None or link is not None:
        if link is None or (event is not None and event[0] < link[0]):
            yield event[0], event, None  # type: ignore[index]  # event is not None here: the link is None or later
            event = next(event_iter, None)
        elif event is None or link[0] < event[0]:
            yield link[0], None, link[1]
            link = next(link_iter, None)
        else:
            yield event[0], event, link[1]
            event = next(event_iter, None)
            link = next(link_iter, None)

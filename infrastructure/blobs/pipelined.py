"""Stages of a body's way into storage run on their own threads, chunk by chunk, beside the download.

A large download spends its CPU time in three places that each release the GIL: the socket read,
sha256 and the file write. Run one after the other on one thread they add up; the download on the
caller's thread and the rest on others overlap, so the slowest alone sets the pace. The
filesystem store uses two stages, sha256 and then the disk write: its direct writes wait for the
disk, and sha256 need not wait with them (docs/performance.md).
Queues between the stages hold at most `depth` chunks each, so memory stays bounded by a few chunks
whatever the body's size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable

_DONE = object()


class _Stage(threading.Thread):
    def __init__(
        self, work: Callable[[bytes], None], inbox: queue.Queue, outbox: queue.Queue | None, failed: threading.Event
    ) -> None:
        super().__init__(name="blob-stage", daemon=True)
        self.work, self.inbox, self.outbox, self.failed = work, inbox, outbox, failed
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            chunk = self.inbox.get()
            if chunk is _DONE:
                break
            if self.error is not None:
                continue  # keep draining, so the producer never blocks on a full queue
            try:
                self.work(chunk)
            except BaseException as error:  # noqa: BLE001 - handed to the producer's thread
                self.error = error
                self.failed.set()
            if self.outbox is not None and self.error is None:
                _put(self.outbox, chunk)
        if self.outbox is not None:
            _put(self.outbox, _DONE)


def _put(box: queue.Queue, item: object) -> None:
    box.put(item)


def run_pipelined(chunks: Iterable[bytes], stages: list[Callable[[bytes], None]], depth: int = 4) -> None:
    """Feed every chunk through `stages` in order, each stage on its own thread; re-raise the first error.

    An error of `chunks` (the producer: a download) stops the stages and propagates; an error of a
    stage stops the producer at its next chunk and is raised here.
    """
    failed = threading.Event()
    boxes = [queue.Queue(maxsize=depth) for _ in stages]
    workers = [
        _Stage(work, boxes[index], boxes[index + 1] if index + 1 < len(stages) else None, failed)
        for index, work in enumerate(stages)
    ]
    for worker in workers:
        worker.start()
    try:
        for chunk in chunks:
            if failed.is_set():
                break
            boxes[0].put(chunk)
    finally:
        boxes[0].put(_DONE)
        for worker in workers:
            worker.join()
    for worker in workers:
        if worker.error is not None:
            raise worker.error

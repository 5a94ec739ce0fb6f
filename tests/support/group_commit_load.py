"""A process that inserts events from many threads until it is killed (run by tests).

Usage: python -m tests.support.group_commit_load '<event-store env as JSON>' THREADS
Each caller inserts three events of a new aggregate and writes `try <id>` before and `ok <id>`
after its insert returned, one line per write, flushed.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import Environment

from infrastructure.postgres.event_store import MediaTasksPostgresFactory

_output = threading.Lock()


def _say(line: str) -> None:
    with _output:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main() -> None:
    env = json.loads(sys.argv[1])
    threads = int(sys.argv[2])
    recorder = MediaTasksPostgresFactory(Environment("MediaTasks", env)).application_recorder()

    def insert_forever() -> None:
        while True:
            originator_id = uuid.uuid4()
            _say(f"try {originator_id}")
            recorder.insert_events([StoredEvent(originator_id, v, "load", b"x") for v in (1, 2, 3)])
            _say(f"ok {originator_id}")

    for _ in range(threads):
        threading.Thread(target=insert_forever, daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()

"""A credit account's snapshot size and read cost after many tasks (in memory, no database).

Run: .venv/bin/python bench/account_size.py [--tasks 0,2000,20000]
For each count: an account granted enough credits and charged once per task, then the size of its
snapshot state (what the snapshot table stores) and the time of the deep copy eventsourcing's
aggregate cache makes on every read of a cached aggregate. Run it with PYTHONPATH pointing at an
older checkout to compare (the charge method's signature has not changed).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import uuid
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: an older checkout can go first

from eventsourcing.application import Application  # noqa: E402
from eventsourcing.domain import Snapshot  # noqa: E402

from domain.credits import CreditAccount  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="0,2000,20000")
    args = parser.parse_args()
    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    print(f"{'tasks':>7} {'snapshot bytes':>15} {'cached read (deep copy) µs':>27}")
    for tasks in (int(n) for n in args.tasks.split(",")):
        account = CreditAccount.open(f"u{tasks}")
        account.grant(tasks + 1, "bench")
        for _ in range(tasks):
            account.charge(uuid.uuid4(), 1, 1)
        account.collect_events()  # as saved
        snapshot = Snapshot.take(account)
        size = len(app.mapper.to_stored_event(snapshot).state)
        started, reads = time.perf_counter(), 200
        for _ in range(reads):
            copy.deepcopy(account)
        print(f"{tasks:>7} {size:>15,} {(time.perf_counter() - started) / reads * 1e6:>27.1f}")


if __name__ == "__main__":
    main()

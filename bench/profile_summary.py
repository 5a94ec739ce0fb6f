"""Where a process's GIL time went: py-spy's collapsed stacks (`--format raw --threads --gil
--full-filenames`: only the thread holding the GIL is sampled), summed per thread and per package.

Run: .venv/bin/python bench/profile_summary.py PROFILE [--top 25]
(PROFILE from `bench/http_submit.py --profile PROFILE`.) Each sample counts once, for the innermost
frame that belongs to a package (site-packages) or to this project; a standard-library frame (json,
threading, asyncio, ...) counts for the package that called it, and the event loop's own frames,
with nothing of a package above them, count as "asyncio/uvicorn loop".
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

PROJECT = ("domain", "application", "projections", "infrastructure")
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]+)(?::\d+)?\)$")


def owner(file: str) -> str | None:
    """The package a frame's file belongs to, or None for the standard library."""
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    parts = Path(file).parts
    for i, part in enumerate(parts):
        if part in PROJECT and i + 1 < len(parts):
            return f"{part}/{'/'.join(parts[i + 1 :])}".removesuffix(".py")
    return None


def summarise(lines: list[str]) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    threads: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    project: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), "thread ?")
        threads[re.sub(r" \(0x[0-9a-f]+\)", "", thread)] += count
        total += count
        found = None
        for frame in reversed(frames):
            match = FRAME.match(frame)
            if match and (found := owner(match["file"])) is not None:
                break
        if found is None:
            packages["asyncio/uvicorn loop, threads (stdlib only)"] += count
        elif "/" in found:
            packages["this project"] += count
            project[found] += count
        else:
            packages[found.split(".")[0]] += count
    return threads, packages, project, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    threads, packages, project, total = summarise(args.profile.read_text().splitlines())
    for title, counter in (("thread", threads), ("package", packages), ("module of this project", project)):
        print(f"\n| {title} | share of GIL samples |\n|---|---:|")
        for name, n in counter.most_common(args.top):
            print(f"| {name} | {100 * n / max(1, total):.1f} % |")
    print(f"\n{total} samples")


if __name__ == "__main__":
    main()

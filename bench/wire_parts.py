"""The parts of a progressive download measured apart, interleaved: the disk, curl, and fetch → blob store.

Run: .venv/bin/python bench/wire_parts.py [--size BYTES] [--rounds N] [--only dd,ddsync,curl,curlsync,store,fetch]

Each round runs, in turn: `dd` of the size from /dev/zero into the data folder without and with
`conv=fdatasync`; `curl -o` of a fake-platform video into the same folder, alone and followed by an
fsync of its file; the project's `SafeFetcher` streaming the same video into a `FilesystemBlobStore`
there (what a `video` task does, without the service around it); the fetcher alone (bytes dropped).
Between two measurements the folder is emptied and `sync` run, so none pays for the one before; the
fake platform serves from a process of its own (bench/_harness.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _harness import fake_platform_process  # noqa: E402

from infrastructure.blobs.filesystem import FilesystemBlobStore  # noqa: E402
from infrastructure.safe_http import SafeFetcher, UrlPolicy  # noqa: E402


def settle(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            path.unlink()
    subprocess.run(["sync"], check=True)
    time.sleep(0.3)


def dd(folder: Path, size: int, durable: bool) -> float:
    started = time.perf_counter()
    command = ["dd", "if=/dev/zero", f"of={folder / 'dd.bin'}", "bs=1M", f"count={size // 2**20}", "status=none"]
    subprocess.run(command + (["conv=fdatasync"] if durable else []), check=True)
    return time.perf_counter() - started


def curl(folder: Path, url: str, durable: bool) -> float:
    out = folder / "curl.bin"
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "-o", str(out), url], check=True)
    if durable:
        with out.open("rb") as written:
            os.fsync(written.fileno())
    return time.perf_counter() - started


def store(fetcher: SafeFetcher, blobs: FilesystemBlobStore, url: str, size: int) -> float:
    started = time.perf_counter()
    with fetcher.stream(url, max_bytes=4 * 2**30) as response:
        ref = blobs.put_stream(f"bench/{os.urandom(4).hex()}.mp4", response.iter_bytes(), content_type="video/mp4")
    elapsed = time.perf_counter() - started
    assert ref.size == size, ref
    return elapsed


def fetch(fetcher: SafeFetcher, url: str, size: int) -> float:
    started = time.perf_counter()
    got = 0
    with fetcher.stream(url, max_bytes=4 * 2**30) as response:
        for chunk in response.iter_bytes():
            got += len(chunk)
    elapsed = time.perf_counter() - started
    assert got == size
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2**30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="dd,ddsync,curl,curlsync,store,fetch")
    parser.add_argument("--folder", default=str(ROOT / "data" / "wire-parts"))
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    blobs = FilesystemBlobStore(folder / "blobs")
    wanted = args.only.split(",")
    results: dict[str, list[float]] = {name: [] for name in wanted}
    with (
        fake_platform_process() as platform,
        SafeFetcher(UrlPolicy(allow_cidrs=["127.0.0.1/32"]), read_timeout=60) as fetcher,
    ):
        url = f"{platform.url}/media/{platform.new_media_id()}.mp4?mode=ok&size={args.size}"
        steps = {
            "dd": lambda: dd(folder, args.size, False),
            "ddsync": lambda: dd(folder, args.size, True),
            "curl": lambda: curl(folder, url, False),
            "curlsync": lambda: curl(folder, url, True),
            "store": lambda: store(fetcher, blobs, url, args.size),
            "fetch": lambda: fetch(fetcher, url, args.size),
        }
        print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()}, size {args.size}", flush=True)
        for round_number in range(args.rounds):
            row = []
            for name in wanted:
                settle(folder)
                seconds = steps[name]()
                results[name].append(seconds)
                row.append(f"{name} {args.size / 1e6 / seconds:7.1f}")
            print(f"round {round_number + 1}: " + "  ".join(row) + "  MB/s", flush=True)
        settle(folder)
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()}")
    for name, times in results.items():
        rates = sorted(args.size / 1e6 / t for t in times)
        print(f"{name:<9} median {rates[len(rates) // 2]:7.1f} MB/s  (min {rates[0]:.1f}, max {rates[-1]:.1f})")


if __name__ == "__main__":
    main()

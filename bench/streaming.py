"""A video streamed through the whole pipeline into the blob store, next to `curl -o` of the same bytes.

Run: .venv/bin/python bench/streaming.py [--sizes 104857600,1073741824] [--store file|s3|both]
         [--rounds 3] [--formats hls,dash --stream-sizes 64,1024]

For each size, a fresh `mediatasks serve` (fresh process, so its peak RSS is these tasks') runs
`--rounds` `video` tasks against the local fake platform, each followed by curl of the same URL from
the same server (alone, and with an fsync of its file after it: the blob store fsyncs before it
commits); the row gives the medians of the pipeline's own download timing, of curl's, their ratio,
the median wall time to `extracted`, and the service's peak RSS (VmHWM); each round's figures are
printed above it. Memory must not grow with the video's size. For these rows the fake platform runs
in a process of its own, so that the bench's polling does not hold the server's GIL while the
pipeline downloads (curl ran with no polling), and `sync` runs before each download so that none
pays for the writeback of the one before. The yt-dlp rows need the `ffmpeg` program (Debian's
`ffmpeg`) for yt-dlp's merge.

`--formats`: HLS (MPEG-TS, muxed) and DASH (fMP4, separate video and audio) streams of about each
`--stream-sizes` MiB (bench/stream_media.py, generated once under data/bench-streams/) stored by
mediatasks (fetch every segment through the SSRF guard, remux to fragmented MP4, into the blob
store) side by side with `yt-dlp` downloading and merging the same stream to a file (same server,
same run); throughput is the stream's bytes over mediatasks' download-and-remux phase (and, "wall",
over submission to `extracted`) and over yt-dlp's whole run (start, extraction, download, merge);
RSS is the peak of each process (yt-dlp's includes the ffmpeg it runs to merge).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from _harness import database, fake_platform_process, new_user, service

from tests.support.fake_platform import FakePlatform


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def curl_seconds(url: str, out: Path) -> tuple[float, float]:
    """Seconds of `curl -o`, and of `curl -o` plus an fsync of its file (what the blob store waits for)."""
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "-o", str(out), url], check=True)
    elapsed = time.perf_counter() - started
    with out.open("rb") as written:
        os.fsync(written.fileno())
    durable = time.perf_counter() - started
    out.unlink()
    return elapsed, durable


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def progressive_row(
    pg: dict, platform: FakePlatform, size: int, store: str, s3: dict | None, rounds: int, scratch: Path
) -> dict:
    """`rounds` video tasks of `size` bytes in one fresh service, each followed by curl of the same URL."""
    settings = dict(
        provider="http",
        provider_url=platform.provider_url,
        provider_key="fake-key",
        provider_host="fake-platform.test",
        url_allow_cidrs="127.0.0.1/32",
        max_video_bytes=str(4 * 1024**3),
        workers="1",
    )
    if store == "s3":
        settings.update(blob_url=f"s3://{s3['bucket']}/bench", s3_endpoint_url=s3["endpoint"])
    figures: dict[str, list[float]] = {"mbps": [], "curl": [], "durable": [], "wall": []}
    with service(pg, **settings) as svc:
        key = new_user(svc.url, 10 * rounds)
        client = httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        for _ in range(rounds):
            url = platform.media_url("ok", size=size)
            os.sync()
            started = time.perf_counter()
            task_id = client.post("/v1/tasks", json={"url": url, "output_type": "video"}).json()["task_id"]
            while (task := client.get(f"/v1/tasks/{task_id}").json())["status"] not in ("extracted", "failed"):
                time.sleep(0.05)
            figures["wall"].append(time.perf_counter() - started)
            assert task["status"] == "extracted", task
            figures["mbps"].append(task["timings"]["download_mb_per_s"])
            os.sync()
            media_id = task["result"]["media"]["media_id"]
            curl_s, durable_s = curl_seconds(
                platform.url + f"/media/{media_id}.mp4?mode=ok&size={size}", scratch / "video.mp4"
            )
            figures["curl"].append(size / 1e6 / curl_s)
            figures["durable"].append(size / 1e6 / durable_s)
            print(
                f"  round: pipeline {figures['mbps'][-1]:.1f}  curl {figures['curl'][-1]:.1f}  "
                f"curl+fsync {figures['durable'][-1]:.1f} MB/s",
                flush=True,
            )
        rss = peak_rss_mib(svc.proc.pid)
    return {name: median(values) for name, values in figures.items()} | {"rss": rss}


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def ytdlp_run(url: str, scratch: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MiB, the process and the children it waited for) of yt-dlp saving `url`."""
    if shutil.which("ffmpeg") is None:
        raise SystemExit("yt-dlp merges with the ffmpeg program: install it (Debian: apt-get install ffmpeg)")
    out = scratch / "ytdlp"
    out.mkdir(exist_ok=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "yt_dlp", "-q", "--no-progress", "--no-part", "-o", str(out / "video.%(ext)s"), url]
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    assert process.returncode == 0, f"yt-dlp failed ({process.returncode})"
    for path in out.iterdir():
        path.unlink()
    return elapsed, usage.ru_maxrss / 1024


def run_stream(pg: dict, platform: FakePlatform, kind: str) -> dict:
    settings = dict(
        provider="http",
        provider_url=platform.provider_url,
        provider_key="fake-key",
        provider_host="fake-platform.test",
        url_allow_cidrs="127.0.0.1/32",
        max_video_bytes=str(4 * 1024**3),
        workers="1",
        download_read_timeout="60",
    )
    with service(pg, **settings) as svc:
        key = new_user(svc.url, 10)
        client = httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        started = time.perf_counter()
        task_id = client.post(
            "/v1/tasks", json={"url": platform.media_url("formats", kind=kind), "output_type": "video"}
        ).json()["task_id"]
        while (task := client.get(f"/v1/tasks/{task_id}").json())["status"] not in ("extracted", "failed"):
            time.sleep(0.05)
        wall = time.perf_counter() - started
        assert task["status"] == "extracted", task
        return {"wall": wall, "download_s": task["timings"]["download_ms"] / 1000, "rss": peak_rss_mib(svc.proc.pid)}


def stream_rows(pg: dict, platform: FakePlatform, kinds: list[str], sizes: list[int], scratch: Path) -> None:
    from stream_media import build_bench_stream

    from tests.support import fake_streams

    print(
        f"\n{'format':<6} {'size':>8} {'mediatasks MB/s':>15} {'(wall)':>7} {'yt-dlp MB/s':>11} {'ratio':>6} "
        f"{'(wall)':>6} {'mt RSS MiB':>10} {'yt-dlp RSS MiB':>14}"
    )
    cache = Path(__file__).resolve().parents[1] / "data" / "bench-streams"
    for size in sizes:
        folder = build_bench_stream(cache, size)
        fake_streams.serve_from(folder)
        for kind in kinds:
            files = folder / f"bench-{kind}"
            total = folder_bytes(files)
            ours = run_stream(pg, platform, f"bench-{kind}")
            entry = "index.m3u8" if kind == "hls" else "manifest.mpd"
            theirs_s, theirs_rss = ytdlp_run(f"{platform.url}/streams/bench-{kind}/{entry}", scratch)
            ours_mbps, theirs_mbps = total / 1e6 / ours["download_s"], total / 1e6 / theirs_s
            ours_wall = total / 1e6 / ours["wall"]
            print(
                f"{kind:<6} {total / 1024**2:>5.0f}MiB {ours_mbps:>15.1f} {ours_wall:>7.1f} {theirs_mbps:>11.1f} "
                f"{ours_mbps / theirs_mbps:>6.2f} {ours_wall / theirs_mbps:>6.2f} {ours['rss']:>10.1f} "
                f"{theirs_rss:>14.1f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default=f"{100 * 1024**2},{1024**3}")
    parser.add_argument("--store", default="file", choices=["file", "s3", "both"])
    parser.add_argument("--formats", default="", help="comma-separated: hls, dash (empty: progressive only)")
    parser.add_argument("--stream-sizes", default="64,1024", help="MiB of each HLS/DASH stream")
    parser.add_argument("--skip-progressive", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="tasks (each followed by curl) per progressive row")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    stores = ["file", "s3"] if args.store == "both" else [args.store]
    print(
        f"{'store':<5} {'size':>9} {'pipeline MB/s':>13} {'curl MB/s':>10} {'ratio':>6} {'curl+fsync MB/s':>15} "
        f"{'ratio':>6} {'wall s':>7} {'peak RSS MiB':>13}"
    )
    with ExitStack() as stack, database() as pg:
        platform = stack.enter_context(FakePlatform())
        s3 = None
        scratch = Path(tempfile.mkdtemp(prefix="mt-curl-"))
        if "s3" in stores:
            import boto3

            from tests.support.moto_server import moto_server

            endpoint = stack.enter_context(moto_server(scratch))
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
            s3 = {"endpoint": endpoint, "bucket": "bench"}
        progressive = stack.enter_context(fake_platform_process()) if not args.skip_progressive else None
        for store in stores if progressive is not None else []:
            for size in sizes:
                row = progressive_row(pg, progressive, size, store, s3, args.rounds, scratch)
                print(
                    f"{store:<5} {size / 1024**2:>6.0f}MiB {row['mbps']:>13.1f} {row['curl']:>10.1f} "
                    f"{row['mbps'] / row['curl']:>6.2f} {row['durable']:>15.1f} {row['mbps'] / row['durable']:>6.2f} "
                    f"{row['wall']:>7.2f} {row['rss']:>13.1f}",
                    flush=True,
                )
        if args.formats:
            stream_rows(pg, platform, args.formats.split(","), [int(s) for s in args.stream_sizes.split(",")], scratch)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    main()

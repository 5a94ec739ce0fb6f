"""`mediatasks submit|tasks|subtitles|video|audio|webhooks`: the client's commands (docs/cli.md).

Exit codes: 0 done (a waited-for task extracted); 1 a waited-for task failed, or the server refused
the request; 2 usage errors (bad arguments, no server or key configured, 422) and connection errors.
Human output and progress bars go to stderr; data (`--json`, subtitles) goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from infrastructure.client.api import MediaTasksClient, ServerError, UsageError, checked, load_config
from infrastructure.webhooks.event_types import EVENT_TYPES

CLIENT_COMMANDS = ("submit", "tasks", "subtitles", "video", "audio", "webhooks")
OUTPUT_TYPES = ("subtitles", "video", "video_and_subtitles", "audio")
REFUND_WAIT_SECONDS = 10.0


def add_client_commands(sub: Any) -> None:
    """The client's subcommands, on the `mediatasks` parser."""
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print JSON on stdout (for scripts)")

    submit = sub.add_parser("submit", parents=[json_flag], help="submit a link (client; MEDIATASKS_URL, _API_KEY)")
    submit.add_argument("url")
    submit.add_argument("--output", choices=OUTPUT_TYPES, default="subtitles", help="what to extract")
    submit.add_argument("--lang", action="append", default=[], help="subtitle language (repeatable)")
    submit.add_argument("--wait", action="store_true", help="follow the task live until it ends")
    submit.add_argument("--idempotency-key", default=None, help="the same key again: the same task, no charge")

    tasks = sub.add_parser("tasks", help="list, show or retry your tasks (client)").add_subparsers(
        dest="tasks_command", required=True
    )
    listing = tasks.add_parser("list", parents=[json_flag])
    listing.add_argument("--status", default=None)
    listing.add_argument("--limit", type=int, default=20)
    show = tasks.add_parser("show", parents=[json_flag])
    show.add_argument("task_id")
    retry = tasks.add_parser("retry", parents=[json_flag])
    retry.add_argument("task_id")
    retry.add_argument("--wait", action="store_true")

    subtitles = sub.add_parser("subtitles", help="an extracted task's subtitles, on stdout (client)")
    subtitles.add_argument("task_id")
    subtitles.add_argument("--format", choices=("vtt", "srt", "txt", "json"), default="vtt")
    subtitles.add_argument("--lang", default=None)
    subtitles.add_argument("-o", "--output-file", type=Path, default=None)

    for kind in ("video", "audio"):
        download = sub.add_parser(kind, help=f"download an extracted task's {kind}, resuming a partial file (client)")
        download.add_argument("task_id")
        download.add_argument("-o", "--output-file", type=Path, required=True)
        download.add_argument("--item", type=int, default=None, help="item N (from 0) of a post with several media")

    hooks = sub.add_parser("webhooks", help="your webhook endpoints (client)").add_subparsers(
        dest="webhooks_command", required=True
    )
    hooks.add_parser("list", parents=[json_flag])
    create = hooks.add_parser("create", parents=[json_flag])
    create.add_argument("url")
    create.add_argument("--event", action="append", choices=EVENT_TYPES, default=None, dest="events")
    create.add_argument("--description", default="")
    delete = hooks.add_parser("delete")
    delete.add_argument("webhook_id")
    rotate = hooks.add_parser("rotate-secret", parents=[json_flag])
    rotate.add_argument("webhook_id")
    deliveries = hooks.add_parser("deliveries", parents=[json_flag])
    deliveries.add_argument("webhook_id")
    deliveries.add_argument("--limit", type=int, default=20)
    redeliver = hooks.add_parser("redeliver", parents=[json_flag])
    redeliver.add_argument("webhook_id")
    redeliver.add_argument("delivery_id")


def run_client(args: argparse.Namespace, *, out: Any = None, console: Console | None = None) -> int:
    out = out or sys.stdout
    console = console or Console(stderr=True)
    try:
        with MediaTasksClient(load_config()) as client:
            return _COMMANDS[args.command](client, args, out, console)
    except UsageError as bad:
        console.print(f"[red]error:[/red] {bad}")
        return 2
    except httpx.TransportError as failed:
        console.print(f"[red]cannot reach the server:[/red] {type(failed).__name__}: {failed}")
        return 2
    except ServerError as refused:
        console.print(f"[red]{refused.status} {refused.code}:[/red] {refused.message}")
        return 2 if refused.status == 422 else 1


def _print_json(out: Any, value: Any) -> None:
    out.write(json.dumps(value, indent=2) + "\n")
    out.flush()


def _submit(client: MediaTasksClient, args: argparse.Namespace, out: Any, console: Console) -> int:
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    accepted = client.call(
        "POST", "/v1/tasks", json={"url": args.url, "output_type": args.output, "languages": args.lang}, headers=headers
    )
    return _accepted(client, accepted, args, out, console)


def _accepted(
    client: MediaTasksClient, accepted: dict[str, Any], args: argparse.Namespace, out: Any, console: Console
) -> int:
    task_id = accepted["task_id"]
    if not getattr(args, "wait", False):
        _report(args, out, console, accepted, f"task {task_id} queued ({accepted['credits_charged']} credits charged)")
        return 0
    return _wait(client, task_id, args, out, console)


def _report(args: argparse.Namespace, out: Any, console: Console, value: dict[str, Any], message: str) -> None:
    """`value` as JSON on stdout with --json; else `message` for people and the task id on stdout."""
    if args.json:
        _print_json(out, value)
    else:
        console.print(message)
        out.write(value["task_id"] + "\n")


def _wait(client: MediaTasksClient, task_id: str, args: argparse.Namespace, out: Any, console: Console) -> int:
    final: dict[str, Any] = {}
    with Progress(
        TextColumn("[bold]{task.fields[status]}[/bold] {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("attempt {task.fields[attempt]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task("waiting", total=100, status="queued", attempt=0)
        for update in client.events(task_id):
            final = update
            progress.update(
                bar,
                completed=update["progress"],
                description=update.get("stage") or "",
                status=update["status"],
                attempt=update.get("attempt", 0),
            )
    task = client.call("GET", f"/v1/tasks/{task_id}")
    if final.get("status") == "extracted":
        _report(args, out, console, task, f"[green]extracted[/green] {task_id}: {task.get('title') or task['url']}")
        return 0
    refund = _refund_of(client, task_id)
    error = task.get("error") or final.get("error") or {}
    if args.json:
        _print_json(out, {**task, "refund": refund})
    else:
        console.print(f"[red]failed[/red] {task_id}: {error.get('code')}: {error.get('message')}")
        if refund is not None:
            console.print(f"refunded {refund['amount']} credits (balance {refund['balance']})")
        else:
            console.print("the refund is not recorded yet; `mediatasks tasks show` will show it")
    return 1


def _refund_of(client: MediaTasksClient, task_id: str) -> dict[str, Any] | None:
    deadline = time.monotonic() + REFUND_WAIT_SECONDS
    while True:
        entries = client.call("GET", "/v1/account", params={"limit": 200})["entries"]
        refund = next((e for e in entries if e["kind"] == "refund" and e["task_id"] == task_id), None)
        if refund is not None or time.monotonic() > deadline:
            return refund
        time.sleep(0.2)


def _tasks(client: MediaTasksClient, args: argparse.Namespace, out: Any, console: Console) -> int:
    if args.tasks_command == "list":
        params: dict[str, Any] = {"limit": args.limit, **({"status": args.status} if args.status else {})}
        page = client.call("GET", "/v1/tasks", params=params)
        if args.json:
            _print_json(out, page)
            return 0
        table = Table("task", "status", "progress", "output", "url")
        for t in page["tasks"]:
            table.add_row(t["task_id"], t["status"], f"{t['progress']}%", t["output_type"], t["url"])
        Console(file=out, width=200).print(table)
        return 0
    if args.tasks_command == "show":
        task = client.call("GET", f"/v1/tasks/{args.task_id}")
        if args.json:
            _print_json(out, task)
        else:
            for key in (
                "task_id",
                "status",
                "progress",
                "stage",
                "attempts",
                "output_type",
                "url",
                "title",
                "credits_charged",
                "refunded_credits",
                "error",
            ):
                out.write(f"{key}: {task.get(key)}\n")
        return 0
    accepted = client.call("POST", f"/v1/tasks/{args.task_id}/retry")
    return _accepted(client, accepted, args, out, console)


def _subtitles(client: MediaTasksClient, args: argparse.Namespace, out: Any, console: Console) -> int:
    params = {"format": args.format, **({"lang": args.lang} if args.lang else {})}
    response = client.http.get(f"/v1/tasks/{args.task_id}/subtitles", params=params)
    checked(response)
    if args.output_file is not None:
        args.output_file.write_bytes(response.content)
        console.print(f"{len(response.content)} bytes → {args.output_file}")
    else:
        sink = getattr(out, "buffer", None)
        if sink is not None:
            sink.write(response.content)
            sink.flush()
        else:
            out.write(response.text)
    return 0


def _download(client: MediaTasksClient, args: argparse.Namespace, out: Any, console: Console) -> int:
    """`video` and `audio`: the stored file of that kind (args.command), with a progress bar."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
    ) as progress:
        bar = progress.add_task(str(args.output_file), total=None)

        def show(done: int, total: int | None) -> None:
            progress.update(bar, completed=done, total=total)

        params = None if args.item is None else {"item": str(args.item)}
        path = f"/v1/tasks/{args.task_id}/{args.command}"
        size = client.download(path, args.output_file, params=params, progress=show)
    console.print(f"{size} bytes → {args.output_file}")
    return 0


def _webhooks(client: MediaTasksClient, args: argparse.Namespace, out: Any, console: Console) -> int:
    command = args.webhooks_command
    if command == "delete":
        client.call("DELETE", f"/v1/webhooks/{args.webhook_id}")
        console.print(f"deleted {args.webhook_id}")
        return 0
    if command == "list":
        answer = client.call("GET", "/v1/webhooks")
    elif command == "create":
        body: dict[str, Any] = {"url": args.url, "description": args.description}
        if args.events:
            body["event_types"] = args.events
        answer = client.call("POST", "/v1/webhooks", json=body)
    elif command == "rotate-secret":
        answer = client.call("POST", f"/v1/webhooks/{args.webhook_id}/rotate-secret")
    elif command == "deliveries":
        answer = client.call("GET", f"/v1/webhooks/{args.webhook_id}/deliveries", params={"limit": args.limit})
    else:
        answer = client.call("POST", f"/v1/webhooks/{args.webhook_id}/deliveries/{args.delivery_id}/redeliver")
    if args.json:
        _print_json(out, answer)
        return 0
    if command == "list":
        table = Table("id", "url", "events", "enabled", "disabled because")
        for w in answer["webhooks"]:
            table.add_row(w["id"], w["url"], ", ".join(w["event_types"]), str(w["enabled"]), w["disabled_reason"] or "")
        Console(file=out, width=200).print(table)
    elif command == "deliveries":
        table = Table("webhook-id", "event", "status", "attempts (status/ms)", "next attempt")
        for d in answer["deliveries"]:
            tries = " ".join(f"{a['status_code'] or '-'}/{a['latency_ms']:.0f}" for a in d["attempts"])
            table.add_row(d["id"], d["event_type"], d["status"], tries, d["next_attempt_at"] or "")
        Console(file=out, width=200).print(table)
    elif command in ("create", "rotate-secret"):
        console.print("the secret is shown only now:")
        out.write(f"{answer.get('id', args.__dict__.get('webhook_id'))} {answer['secret']}\n")
    else:
        console.print(f"redelivering {answer['id']}")
    return 0


_COMMANDS = {
    "submit": _submit,
    "tasks": _tasks,
    "subtitles": _subtitles,
    "video": _download,
    "audio": _download,
    "webhooks": _webhooks,
}

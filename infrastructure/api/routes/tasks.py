"""Tasks: submit, read, list, follow live, audit, retry."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any
from uuid import UUID, uuid4

import orjson
from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from opentelemetry import propagate
from pydantic import BaseModel, Field
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse

from domain.tasks import MediaTask
from domain.vocabulary import TaskStatus
from infrastructure.api.deps import (
    AppDep,
    CurrentUser,
    HubDep,
    OpenStreamsDep,
    SsePingDep,
    StreamTokensDep,
    TaskReader,
    UrlPolicyDep,
    ViewsDep,
    WebhooksDep,
)
from infrastructure.api.errors import ApiError, responses
from infrastructure.api.live import CountedEventSourceResponse
from infrastructure.api.rate_limits import SubmitterDep
from infrastructure.api.schemas import (
    Accepted,
    HistoryEvent,
    StatusEvent,
    SubmitTask,
    TaskError,
    TaskHistory,
    TaskList,
    TaskOut,
    TaskStatusValue,
)
from infrastructure.polling import poll
from infrastructure.postgres.own_writes import read_own_writes, wait_for_own_writes
from infrastructure.postgres.queries import notification_ids
from infrastructure.webhooks.callbacks import add_task_callback, check_task_callback
from projections.task_views import TERMINAL_STATUSES, TaskUpdate, TaskView, TaskViews

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

READ_YOUR_WRITES_SECONDS = 3.0
STREAM_SAFETY_SECONDS = 10.0
STREAM_RETRY_AFTER_SECONDS = 10
# The submission fast path (infrastructure/api/submission_fast_path.py) reads this declaration from the route.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="same key + same body → the same task, no second charge (scoped per user)",
    ),
]


def task_out(view: TaskView) -> TaskOut:
    return TaskOut(
        task_id=view.task_id,
        url=view.url,
        platform=view.platform,
        output_type=view.output_type,
        languages=view.languages,
        status=view.status,
        progress=view.progress,
        stage=view.stage,
        attempts=view.attempt,
        title=view.title,
        credits_charged=view.credits_charged,
        refunded_credits=view.refunded_credits,
        error=TaskError(**view.error) if view.error else None,
        timings=view.timings or {},
        result=without_blob_uris(view.result),
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


def without_blob_uris(value: Any) -> Any:
    """`value` with the `uri` of every stored blob left out: it names server paths and buckets; the API
    serves a blob by task id (GET /v1/tasks/{id}/video, /subtitles), never by where it is stored."""
    if isinstance(value, dict):
        blob = "key" in value and "sha256" in value
        return {k: without_blob_uris(v) for k, v in value.items() if not (blob and k == "uri")}
    if isinstance(value, list):
        return [without_blob_uris(v) for v in value]
    return value


def _stream_start(app: Any, views: TaskViews, task_id: UUID, user_id: str) -> int | None:
    """Check the caller may stream the task; the read model's position before the stream reads it."""
    visible_task(app, views, task_id, user_id)
    return views.max_tracking_id(app.name)


def visible_task(app: Any, views: TaskViews, task_id: UUID, user_id: str) -> TaskView:
    """The caller's task from the read model; right after a write, wait (bounded) for the projection."""
    return visible_view(app, views, task_id, user_id, views.get_task(task_id))


def visible_view(app: Any, views: TaskViews, task_id: UUID, user_id: str, view: TaskView | None) -> TaskView:
    """`visible_task` given the row already read."""
    if view is not None:
        if view.user_id != user_id:
            raise ApiError(404, "task_not_found", "There is no such task.")
        return view
    app.get_task(task_id, user_id=user_id)  # TaskNotFound (404) unless it exists and is the caller's
    view = poll(lambda: views.get_task(task_id), READ_YOUR_WRITES_SECONDS)
    if view is None:
        raise ApiError(
            503, "not_yet_visible", "The task was accepted but is not readable yet.", headers={"Retry-After": "1"}
        )
    return view


# POST /v1/tasks, the hot route, on a router of its own that the API includes first and without the other
# routes' router-level rate limit: its one dependency authenticates the caller and counts the submission.
# The submissions FastAPI would accept are served below its dependency solver, by the same dependency and
# this same function (infrastructure/api/submission_fast_path.py); the rest come here through FastAPI.
submissions = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@submissions.post(
    "",
    response_model=Accepted,
    status_code=202,
    responses={
        200: {"model": Accepted, "description": "Idempotent replay of an earlier submission"},
        **responses(401, 402, 409, 413, 422, 429, 503),
    },
)
async def submit_task(body: SubmitTask, caller: SubmitterDep, idempotency_key: IdempotencyKey = None) -> Response:
    """Submit a link; the price is charged now and refunded automatically if the task fails."""
    if body.webhook_url is not None:  # the callback exists before the task's first event can
        idempotency_key = idempotency_key or uuid4().hex
        await run_in_threadpool(
            register_callback, caller.webhooks, caller.url_policy, caller.user_id, idempotency_key, body.webhook_url
        )
    trace_context: dict[str, str] = {}
    propagate.inject(trace_context)  # W3C traceparent of this request: the worker's span links back to it
    # No thread waits for the write: the account's batch is decided and committed by the decider thread.
    sub = await caller.app.submit_async(
        caller.user_id,
        body.url,
        body.output_type,
        body.languages,
        idempotency_key=idempotency_key,
        trace_context=trace_context,
        options=body.media_options(),
    )
    out = {"task_id": str(sub.task_id), "status": TaskStatus.QUEUED.value, "credits_charged": sub.credits_charged}
    headers = {"Location": f"/v1/tasks/{sub.task_id}"}
    if not sub.created:
        headers["Idempotent-Replayed"] = "true"
    return Response(orjson.dumps(out), 202 if sub.created else 200, headers, "application/json")


def register_callback(
    webhooks: WebhooksDep, url_policy: UrlPolicyDep, user_id: str, idempotency_key: str, url: str
) -> None:
    """The task's webhook, checked (its host resolved) and stored: blocking, so run in the thread pool."""
    check_task_callback(url_policy, webhooks, user_id, url)
    add_task_callback(webhooks, user_id, MediaTask.id_for(user_id, idempotency_key), url)


@router.get("", response_model=TaskList, responses=responses(401, 422))
def list_tasks(
    user_id: CurrentUser,
    app: AppDep,
    views: ViewsDep,
    status: TaskStatusValue | None = None,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, max_length=200),
) -> TaskList:
    """The caller's tasks, newest first; your last submission or retry included."""
    wait_for_own_writes(app, views, user_id)
    try:
        page = views.list_tasks(user_id, status=status, limit=limit, cursor=cursor)
    except ValueError:
        raise ApiError(422, "invalid_cursor", "This cursor was not issued by this service.") from None
    return TaskList(tasks=[task_out(t) for t in page.tasks], next_cursor=page.next_cursor)


@router.get("/{task_id}", response_model=TaskOut, responses=responses(401, 404, 422, 503))
def get_task(task_id: UUID, user_id: CurrentUser, app: AppDep, views: ViewsDep) -> TaskOut:
    """Status, progress, attempts, error, timings and result of one task (your last retry included)."""
    view = read_own_writes(app, user_id, lambda: views.task_at_position(task_id, app.name))
    return task_out(visible_view(app, views, task_id, user_id, view))


@router.get("/{task_id}/history", response_model=TaskHistory, responses=responses(401, 404, 422))
def task_history(task_id: UUID, user_id: CurrentUser, app: AppDep) -> TaskHistory:
    """The audit trail: every event of the task, in order, from the event store."""
    entries = app.task_history(task_id, user_id=user_id)
    positions = notification_ids(app.recorder, task_id)
    return TaskHistory(
        task_id=task_id,
        events=[
            HistoryEvent(
                type=e.type,
                version=e.version,
                position=positions.get(e.version),
                timestamp=e.timestamp,
                data=without_blob_uris(json.loads(json.dumps(e.data, default=str))),
            )
            for e in entries
        ],
    )


@router.post(
    "/{task_id}/retry", response_model=Accepted, status_code=202, responses=responses(401, 402, 404, 409, 422, 503)
)
def retry_task(task_id: UUID, user_id: CurrentUser, app: AppDep) -> Accepted:
    """Retry a failed task; its price is charged again."""
    sub = app.retry_task(user_id, task_id)
    return Accepted(task_id=sub.task_id, status=TaskStatus.QUEUED, credits_charged=sub.credits_charged)


class StreamToken(BaseModel):
    access_token: str = Field(description="pass as ?access_token= on this task's events, subtitles and video")
    expires_at: int = Field(description="Unix time after which the token is refused")


@router.post("/{task_id}/stream-token", response_model=StreamToken, responses=responses(401, 404, 422, 503))
def stream_token(
    task_id: UUID, user_id: CurrentUser, app: AppDep, views: ViewsDep, tokens: StreamTokensDep
) -> StreamToken:
    """A short-lived token for `?access_token=` on this task's events, subtitles and video (for browsers)."""
    visible_task(app, views, task_id, user_id)
    token, expires = tokens.issue(user_id, task_id)
    return StreamToken(access_token=token, expires_at=expires)


def status_event(update: TaskUpdate) -> ServerSentEvent:
    data = StatusEvent(
        task_id=update.task_id,
        status=update.status,
        progress=update.progress,
        attempt=update.attempt,
        stage=update.stage,
        error=TaskError(**update.error) if update.error else None,
    )
    return ServerSentEvent(data=data.model_dump_json(), event="status", id=str(update.position))


@router.get(
    "/{task_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: status` per change; `id` is the event's log position",
        },
        **responses(401, 404, 422, 429),
    },
)
async def task_events(
    task_id: UUID,
    user_id: TaskReader,
    app: AppDep,
    views: ViewsDep,
    hub: HubDep,
    open_streams: OpenStreamsDep,
    ping_seconds: SsePingDep,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
) -> EventSourceResponse:
    """Server-Sent Events of the task's status and progress, until it ends (at most
    MEDIATASKS_MAX_STREAMS_PER_USER open at once per user, then 429)."""
    follow_from = await run_in_threadpool(_stream_start, app, views, task_id, user_id)
    if not open_streams.acquire(user_id):
        raise ApiError(
            429,
            "too_many_streams",
            f"You have {open_streams.limit} live streams open; close one or retry later.",
            {"limit": open_streams.limit},
            headers={"Retry-After": str(STREAM_RETRY_AFTER_SECONDS)},
        )

    async def stream() -> Any:
        mailbox = hub.register(task_id, last_event_id or 0, follow_from)
        try:
            after = last_event_id
            updates = await run_in_threadpool(views.task_updates, task_id, after or 0)
            if after is None:
                updates = updates[-1:]  # a fresh stream starts with the current state
            while True:
                for update in updates:
                    yield status_event(update)
                    after = mailbox.after = update.position
                    if update.status in TERMINAL_STATUSES:
                        return
                if after is None:
                    after = 0
                if hub.latest_position(task_id) > after:
                    await asyncio.sleep(0.05)  # the read model has not caught up with an event seen already
                    delivered = None
                else:
                    delivered = await mailbox.next_updates(timeout=STREAM_SAFETY_SECONDS)
                # the hub's one read for this task's streams; else (timeout, hub could not read) our own
                updates = (
                    delivered if delivered is not None else await run_in_threadpool(views.task_updates, task_id, after)
                )
        finally:
            hub.unregister(task_id, mailbox)

    return CountedEventSourceResponse(stream(), ping=ping_seconds, on_close=lambda: open_streams.release(user_id))

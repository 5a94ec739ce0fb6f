"""A finished task's outputs: subtitles in four formats, the stored video with Range support."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response, StreamingResponse

from application.ports.blob_store import BlobStore
from domain.vocabulary import TaskStatus
from infrastructure.api.deps import AppDep, BlobsDep, TaskReader, ViewsDep
from infrastructure.api.errors import ApiError, responses
from infrastructure.api.routes.tasks import visible_task
from infrastructure.subtitles import render_subtitles
from projections.task_views import TaskView

router = APIRouter(prefix="/v1/tasks", tags=["media"])

SUBTITLE_TYPES = {
    "vtt": "text/vtt; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
}
RANGE = re.compile(r"bytes=(\d*)-(\d*)")
RANGE_DIGITS = 18  # beyond any stored size; longer numbers are not parsed (int() refuses > 4300 digits)


def finished(view: TaskView) -> dict:
    if view.status != TaskStatus.EXTRACTED or not view.result:
        raise ApiError(
            409,
            "task_not_ready",
            f"The task is {view.status}; its outputs exist once it is extracted.",
            {"status": view.status},
        )
    return view.result


@router.get(
    "/{task_id}/subtitles",
    response_class=Response,
    responses={
        200: {
            "content": {t.split(";")[0]: {} for t in SUBTITLE_TYPES.values()},
            "description": "The subtitles in the requested format",
        },
        **responses(401, 404, 409, 422),
    },
)
def get_subtitles(
    task_id: UUID,
    user_id: TaskReader,
    app: AppDep,
    views: ViewsDep,
    blobs: BlobsDep,
    lang: Annotated[str | None, Query(max_length=16, description="default: the first track")] = None,
    format: Annotated[Literal["vtt", "srt", "txt", "json"], Query()] = "vtt",  # noqa: A002
) -> Response:
    """The extracted subtitles as WebVTT, SRT, plain text or JSON cues."""
    result = finished(visible_task(app, views, task_id, user_id))
    tracks = result.get("subtitles") or []
    if not tracks:
        raise ApiError(404, "no_subtitles", "This task has no subtitles (it stored the video only).")
    track = next((t for t in tracks if lang is None or t["lang"].lower() == lang.lower()), None)
    if track is None:
        raise ApiError(
            404, "subtitles_not_found", f"No subtitles in {lang!r}.", {"available": [t["lang"] for t in tracks]}
        )
    cues = json.loads(b"".join(blobs.open_range(track["blob"]["key"])))
    body = json.dumps(cues, ensure_ascii=False) if format == "json" else render_subtitles(_cues(cues), format)
    filename = f"{task_id}.{track['lang']}.{format}"
    return Response(
        body, media_type=SUBTITLE_TYPES[format], headers={"Content-Disposition": f'inline; filename="{filename}"'}
    )


def _cues(rows: list[dict]) -> list:
    from domain.subtitles import Cue

    return [Cue(r["start"], r["end"], r["text"]) for r in rows]


ItemQuery = Annotated[int | None, Query(ge=0, le=99, description="item N of a post with several media")]
RangeHeader = Annotated[str | None, Header(alias="Range")]


@router.get(
    "/{task_id}/video",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"video/mp4": {}, "video/webm": {}}, "description": "The whole video"},
        206: {"content": {"video/mp4": {}}, "description": "The requested byte range"},
        **responses(401, 404, 409, 416, 422),
    },
)
def get_video(
    task_id: UUID,
    user_id: TaskReader,
    app: AppDep,
    views: ViewsDep,
    blobs: BlobsDep,
    range_header: RangeHeader = None,
    item: ItemQuery = None,
) -> Response:
    """The stored video, streamed; `Range: bytes=…` answers 206 with that part; `item` picks one of several."""
    return _stored(blobs, finished(visible_task(app, views, task_id, user_id)), task_id, "video", range_header, item)


@router.get(
    "/{task_id}/audio",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"audio/mp4": {}, "audio/mpeg": {}, "audio/ogg": {}}, "description": "The whole audio file"},
        206: {"content": {"audio/mp4": {}}, "description": "The requested byte range"},
        **responses(401, 404, 409, 416, 422),
    },
)
def get_audio(
    task_id: UUID,
    user_id: TaskReader,
    app: AppDep,
    views: ViewsDep,
    blobs: BlobsDep,
    range_header: RangeHeader = None,
    item: ItemQuery = None,
) -> Response:
    """The stored audio of an `audio` task, streamed like the video."""
    return _stored(blobs, finished(visible_task(app, views, task_id, user_id)), task_id, "audio", range_header, item)


def _stored(
    blobs: BlobStore, result: dict, task_id: UUID, kind: str, range_header: str | None, item: int | None
) -> Response:
    if item is not None:
        items = result.get("items") or [result]
        if item >= len(items):
            raise ApiError(404, "item_not_found", f"This post has {len(items)} item(s).", {"items": len(items)})
        result = items[item]
    video = result.get(kind)
    if not video:
        raise ApiError(404, f"no_{kind}", f"This task stored no {kind}.")
    stored = blobs.stat(video["key"])
    if stored is None:
        raise ApiError(404, "video_missing", "The stored video is no longer available.")
    size = stored.size
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{video["sha256"]}"',
        "Content-Disposition": f'inline; filename="{task_id}{_suffix(video["key"])}"',
    }
    start, end, status = 0, size - 1, 200
    if range_header:
        parsed = _parse_range(range_header, size)
        if parsed is None:
            raise ApiError(
                416,
                "range_not_satisfiable",
                "The Range header is not a byte range within the video.",
                {"size": size},
                headers={"Content-Range": f"bytes */{size}"},
            )
        start, end = parsed
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    return StreamingResponse(
        blobs.open_range(video["key"], start, end),
        status_code=status,
        media_type=video.get("content_type") or "application/octet-stream",
        headers=headers,
    )


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    match = RANGE.fullmatch(value.strip())
    if not match or size == 0:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = _position(last)
        if length == 0:
            return None
        return max(0, size - length), size - 1
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if start > end or start >= size:
        return None
    return start, end


def _position(digits: str) -> int:
    """A byte position; one too long to be any real size counts as past every end."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= RANGE_DIGITS else 10**RANGE_DIGITS


def _suffix(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return name[name.index(".") :] if "." in name else ""

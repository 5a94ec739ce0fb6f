"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

# The wire values of domain.vocabulary's OutputType and TaskStatus, spelled out so that the OpenAPI
# document and the 422 answers stay as they were (tests/unit/test_vocabulary.py checks they agree).
OutputTypeValue = Literal["subtitles", "video", "video_and_subtitles", "audio"]
TaskStatusValue = Literal["queued", "downloading", "processing", "retrying", "extracted", "failed"]


class CreateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=64, examples=["alice"])
    credits: int = Field(default=0, ge=0, le=1_000_000_000)


class CreatedUser(BaseModel):
    user_id: str
    api_key: str = Field(description="shown once; only its hash is stored")
    balance: int


class GrantCredits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int = Field(gt=0, le=1_000_000_000)
    reason: str = Field(default="", max_length=200)


class Balance(BaseModel):
    user_id: str
    balance: int


class SubmitTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        min_length=1, max_length=2048, examples=["https://www.tiktok.com/@scout2015/video/6718335390845095173"]
    )
    output_type: OutputTypeValue
    languages: list[str] = Field(default_factory=list, max_length=10, examples=[["en"]])
    webhook_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description=("a one-off callback for this task's events, signed with your default webhook secret"),
    )
    max_height: int = Field(default=1080, ge=144, le=4320, description="the best format at or under this height")
    video_codec: Literal["h264", "vp9", "av1"] = Field(default="h264", description="preferred among equal heights")
    mute: bool = Field(default=False, description="store the video without its audio")
    audio_format: Literal["best", "m4a", "mp3", "opus"] = Field(
        default="best", description="for `audio`: best and m4a keep the source codec where they can; mp3/opus encode"
    )

    def media_options(self) -> dict[str, object]:
        return {
            "max_height": self.max_height,
            "video_codec": self.video_codec,
            "mute": self.mute,
            "audio_format": self.audio_format,
        }


class Accepted(BaseModel):
    task_id: UUID
    status: str
    credits_charged: int


class TaskError(BaseModel):
    code: str
    message: str
    retryable: bool = False
    terminal: bool = True
    attempt: int | None = None


class TaskOut(BaseModel):
    task_id: UUID
    url: str
    platform: str
    output_type: OutputTypeValue
    languages: list[str]
    status: TaskStatusValue
    progress: int
    stage: str
    attempts: int
    title: str
    credits_charged: int
    refunded_credits: int
    error: TaskError | None = None
    timings: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime


class TaskList(BaseModel):
    tasks: list[TaskOut]
    next_cursor: str | None = None


class HistoryEvent(BaseModel):
    type: str
    version: int
    position: int | None
    timestamp: datetime
    data: dict[str, Any]


class TaskHistory(BaseModel):
    task_id: UUID
    events: list[HistoryEvent]


class LedgerEntryOut(BaseModel):
    position: int
    kind: Literal["grant", "charge", "refund"]
    amount: int
    balance: int
    task_id: UUID | None = None
    attempt: int | None = None
    reason: str = ""
    at: datetime


class AccountOut(BaseModel):
    user_id: str
    balance: int
    entries: list[LedgerEntryOut]
    next_before: int | None = Field(default=None, description="pass as ?before= for older entries")


class StatusEvent(BaseModel):
    """The data of one `event: status` of the live stream."""

    task_id: UUID
    status: TaskStatusValue
    progress: int
    attempt: int
    stage: str
    error: TaskError | None = None


class AuditViolation(BaseModel):
    code: str
    message: str
    positions: list[int]


class AuditResult(BaseModel):
    ok: bool
    summary: str
    events: int
    tasks: int
    accounts: int
    pending_refunds: int
    violations: list[AuditViolation]

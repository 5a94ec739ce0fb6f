"""What both naive peers accept and answer: the same JSON body and answer as mediatasks' POST /v1/tasks."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

PRICES = {"subtitles": 1, "video": 2, "video_and_subtitles": 3}


class SubmitTask(BaseModel):
    url: str = Field(max_length=2048)
    output_type: str = "subtitles"
    languages: list[str] = Field(default_factory=list, max_length=10)


class Accepted(BaseModel):
    task_id: uuid.UUID
    status: str
    credits_charged: int


class NewUser(BaseModel):
    user_id: str
    credits: int = 0

"""One vocabulary: the StrEnums of domain/vocabulary.py are the wire values everywhere."""

import json
from typing import get_args

from domain.tasks import OUTPUT_TYPES, RETRYING
from domain.vocabulary import OPEN_STATUSES, AttemptOutcome, OutputType, TaskStatus
from infrastructure.api.schemas import OutputTypeValue, TaskStatusValue


def test_the_api_schemas_spell_the_same_values() -> None:
    assert get_args(TaskStatusValue) == tuple(TaskStatus)
    assert get_args(OutputTypeValue) == tuple(OutputType) == OUTPUT_TYPES


def test_retrying_is_two_words_with_one_wire_value() -> None:
    assert RETRYING is AttemptOutcome.RETRYING
    assert AttemptOutcome.RETRYING is not TaskStatus.RETRYING
    assert AttemptOutcome.RETRYING == TaskStatus.RETRYING == "retrying"
    assert TaskStatus.RETRYING in OPEN_STATUSES


def test_members_serialise_as_their_values() -> None:
    assert json.dumps({"status": TaskStatus.QUEUED, "outcome": AttemptOutcome.LEASE_LOST}) == (
        '{"status": "queued", "outcome": "lease_lost"}'
    )
    assert f"{TaskStatus.EXTRACTED}" == "extracted"


def test_output_types_say_what_they_hold() -> None:
    assert [t for t in OutputType if t.has_video] == [OutputType.VIDEO, OutputType.VIDEO_AND_SUBTITLES]
    assert [t for t in OutputType if t.has_subtitles] == [OutputType.SUBTITLES, OutputType.VIDEO_AND_SUBTITLES]

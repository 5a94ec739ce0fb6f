"""The one Retry-After parser (infrastructure/retry_after.py)."""

import pytest

from infrastructure.retry_after import retry_after_seconds

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),
        ("6m5s", 365.0),
        ("250ms", 0.25),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),
        ("Tue, 14 Nov 2023 22:13:50", 30.0),  # no zone: UTC
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),  # past: now
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_every_form_queues_use(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds

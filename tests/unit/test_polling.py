"""The one poll-with-backoff (infrastructure/polling.py)."""

from infrastructure.polling import poll


def test_poll_returns_the_first_truthy_answer() -> None:
    answers = iter([None, None, "found"])
    calls = []

    def check() -> str | None:
        calls.append(1)
        return next(answers)

    assert poll(check, timeout=5) == "found"
    assert len(calls) == 3


def test_poll_gives_the_last_answer_at_the_deadline() -> None:
    calls = []

    def check() -> bool:
        calls.append(1)
        return False

    assert poll(check, timeout=0.05) is False
    assert len(calls) >= 2

"""The ids of tasks, accounts and API keys are `uuid.uuid5`'s: they are stored in the event log."""

from __future__ import annotations

import random
import uuid

import pytest

from domain.credits import NAMESPACE, ApiKey, CreditAccount
from domain.ids import NameBasedIds
from domain.tasks import MediaTask


def _names(count: int) -> list[str]:
    rng = random.Random(19)
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz0123456789-_.@:",
        "é漢字🎬\u0000\u00ff\u07ff\u0800\uffff",
        "".join(map(chr, range(128))),
    ]
    names = ["", ":", "task::", "a" * 10_000]
    for _ in range(count):
        alphabet = rng.choice(alphabets)
        names.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 200))))
    return names


@pytest.mark.parametrize("namespace", [NAMESPACE, uuid.NAMESPACE_URL, uuid.NAMESPACE_DNS, uuid.UUID(int=0)])
def test_the_same_ids_as_uuid5_for_many_names(namespace: uuid.UUID) -> None:
    ids = NameBasedIds(namespace)
    for name in _names(3_000):
        found = ids(name)
        expected = uuid.uuid5(namespace, name)
        assert found == expected and found.int == expected.int and str(found) == str(expected)
        assert found.version == 5 and found.variant == uuid.RFC_4122 and found.is_safe is expected.is_safe


def test_a_name_that_is_not_utf_8_is_refused_as_uuid5_refuses_it() -> None:
    with pytest.raises(UnicodeEncodeError):
        uuid.uuid5(NAMESPACE, "lone \ud800 surrogate")
    with pytest.raises(UnicodeEncodeError):
        NameBasedIds(NAMESPACE)("lone \ud800 surrogate")


def test_aggregate_ids_are_those_of_uuid5_and_of_histories_already_stored() -> None:
    for user_id, key in [("alice", "k-1"), ("bob@example.com", "f" * 32), ("u.1", "é")]:
        assert MediaTask.id_for(user_id, key) == uuid.uuid5(NAMESPACE, f"task:{user_id}:{key}")
        assert CreditAccount.id_for(user_id) == uuid.uuid5(NAMESPACE, f"account:{user_id}")
        assert ApiKey.id_for(key) == uuid.uuid5(NAMESPACE, f"api-key:{key}")
    # Ids as recorded (uuid.uuid5 of Python 3.11), whatever computes them.
    assert str(NAMESPACE) == "f75a824f-baa3-584f-8ef0-5819a86fc8b9"
    assert str(MediaTask.id_for("alice", "k-1")) == "14b448c9-f43e-59a7-8f90-7759cb59c386"
    assert str(CreditAccount.id_for("alice")) == "eb28b63c-a3da-58e0-99de-f34732f54e37"

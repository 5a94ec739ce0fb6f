"""The credit account of a user: grants, charges for tasks, and refunds of failed ones."""

from __future__ import annotations

import re
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InsufficientCredits, InvalidAmount, InvalidUserId
from domain.ids import NameBasedIds
from domain.text import check_free_text

NAMESPACE = uuid5(NAMESPACE_URL, "https://mediatasks.invalid/")
NAMESPACE_IDS = NameBasedIds(NAMESPACE)  # uuid5(NAMESPACE, name), the same ids computed faster
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MAX_GRANT = 1_000_000_000


def check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not USER_ID_PATTERN.fullmatch(user_id):
        raise InvalidUserId(
            "A user id is 1-64 characters: letters, digits, '_', '.', '@' or '-', starting with a letter or digit.",
            user_id=user_id,
        )
    return user_id


class CreditAccount(Aggregate):
    """One per user: its balance, never negative. O(1) in its history.

    The account does not remember which runs it paid for: the task does (domain/tasks.py). A charge
    is saved in one transaction with the task's Started or Retried (so optimistic concurrency on the
    task refuses a second charge for a paid run), and a refund with the task's Refunded (so at most
    one refund per charge, and none for an extracted task).
    """

    class_version = 2

    @staticmethod
    def create_id(user_id: str) -> UUID:
        return NAMESPACE_IDS(f"account:{user_id}")

    id_for = create_id

    @classmethod
    def open(cls, user_id: str) -> CreditAccount:
        return cls(user_id=check_user_id(user_id))

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Snapshots taken before version 2 held every charge and refund: drop them."""
        state.pop("charges", None)
        state.pop("refunded", None)

    @event("Opened")
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.balance = 0

    def grant(self, amount: int, reason: str = "") -> None:
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise InvalidAmount("A grant must be a positive whole number of credits.", amount=amount)
        if self.balance + amount > MAX_GRANT:
            raise InvalidAmount(f"A balance may not exceed {MAX_GRANT} credits.", amount=amount)
        self._granted(amount=amount, reason=check_free_text(reason, field="reason")[:200])

    def charge(self, task_id: UUID, attempt: int, amount: int) -> None:
        """Pay for the run of a task that starts at `attempt` (saved with the task's Started or Retried)."""
        if amount <= 0:
            raise InvalidAmount("A charge must be positive.", amount=amount)
        if self.balance < amount:
            raise InsufficientCredits(
                f"This task costs {amount} credits; the balance is {self.balance}.",
                balance=self.balance,
                price=amount,
            )
        self._charged(task_id=task_id, attempt=attempt, amount=amount)

    def refund(self, task_id: UUID, attempt: int, amount: int) -> None:
        """Give back a charge the task has released (`MediaTask.refund`, saved in the same transaction)."""
        if amount <= 0:
            raise InvalidAmount("A refund must be positive.", amount=amount)
        self._refunded(task_id=task_id, attempt=attempt, amount=amount)

    @event("Granted")
    def _granted(self, amount: int, reason: str) -> None:
        self.balance += amount

    @event("Charged")
    def _charged(self, task_id: UUID, attempt: int, amount: int) -> None:
        self.balance -= amount

    @event("Refunded")
    def _refunded(self, task_id: UUID, attempt: int, amount: int) -> None:
        self.balance += amount


class ApiKey(Aggregate):
    """A user's API key, found by the SHA-256 of the key; the key itself is never stored."""

    @staticmethod
    def create_id(key_hash: str) -> UUID:
        return NAMESPACE_IDS(f"api-key:{key_hash}")

    id_for = create_id

    @classmethod
    def issue(cls, user_id: str, key_hash: str, key_prefix: str) -> ApiKey:
        return cls(user_id=check_user_id(user_id), key_hash=key_hash, key_prefix=key_prefix)

    @event("Issued")
    def __init__(self, user_id: str, key_hash: str, key_prefix: str) -> None:
        self.user_id = user_id
        self.key_prefix = key_prefix
        self.revoked = False

    def revoke(self) -> None:
        if not self.revoked:
            self._revoked()

    @event("Revoked")
    def _revoked(self) -> None:
        self.revoked = True

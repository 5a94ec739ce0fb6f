"""The credit account of a user: grants, charges for tasks, and refunds of failed ones."""

from __future__ import annotations

import re
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import (
    AlreadyRefunded,
    ChargeAlreadyRecorded,
    ChargeNotFound,
    InsufficientCredits,
    InvalidAmount,
    InvalidUserId,
)
from domain.text import check_free_text

NAMESPACE = uuid5(NAMESPACE_URL, "https://mediatasks.invalid/")
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MAX_GRANT = 1_000_000_000


def check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not USER_ID_PATTERN.fullmatch(user_id):
        raise InvalidUserId(
            "A user id is 1-64 characters: letters, digits, '_', '.', '@' or '-', starting with a letter or digit.",
            user_id=user_id,
        )
    return user_id


def charge_key(task_id: UUID, attempt: int) -> str:
    """A charge is identified by its task and the first attempt it pays for."""
    return f"{task_id}:{attempt}"


class CreditAccount(Aggregate):
    """One per user. Balance never negative; each charge refunded at most once."""

    @staticmethod
    def create_id(user_id: str) -> UUID:
        return uuid5(NAMESPACE, f"account:{user_id}")

    id_for = create_id

    @classmethod
    def open(cls, user_id: str) -> CreditAccount:
        return cls(user_id=check_user_id(user_id))

    @event("Opened")
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.balance = 0
        self.charges: dict[str, int] = {}
        self.refunded: dict[str, int] = {}

    def grant(self, amount: int, reason: str = "") -> None:
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise InvalidAmount("A grant must be a positive whole number of credits.", amount=amount)
        if self.balance + amount > MAX_GRANT:
            raise InvalidAmount(f"A balance may not exceed {MAX_GRANT} credits.", amount=amount)
        self._granted(amount=amount, reason=check_free_text(reason, field="reason")[:200])

    def charge(self, task_id: UUID, attempt: int, amount: int) -> None:
        key = charge_key(task_id, attempt)
        if amount <= 0:
            raise InvalidAmount("A charge must be positive.", amount=amount)
        if key in self.charges:
            raise ChargeAlreadyRecorded("This attempt of the task is already paid for.", task_id=str(task_id))
        if self.balance < amount:
            raise InsufficientCredits(
                f"This task costs {amount} credits; the balance is {self.balance}.",
                balance=self.balance,
                price=amount,
            )
        self._charged(task_id=task_id, attempt=attempt, amount=amount)

    def refund(self, task_id: UUID, attempt: int) -> int:
        key = charge_key(task_id, attempt)
        if key not in self.charges:
            raise ChargeNotFound("There is no such charge to refund.", task_id=str(task_id), attempt=attempt)
        if key in self.refunded:
            raise AlreadyRefunded("This charge was refunded already.", task_id=str(task_id), attempt=attempt)
        amount = self.charges[key]
        self._refunded(task_id=task_id, attempt=attempt, amount=amount)
        return amount

    def is_refunded(self, task_id: UUID, attempt: int) -> bool:
        return charge_key(task_id, attempt) in self.refunded

    @event("Granted")
    def _granted(self, amount: int, reason: str) -> None:
        self.balance += amount

    @event("Charged")
    def _charged(self, task_id: UUID, attempt: int, amount: int) -> None:
        self.balance -= amount
        self.charges[charge_key(task_id, attempt)] = amount

    @event("Refunded")
    def _refunded(self, task_id: UUID, attempt: int, amount: int) -> None:
        self.balance += amount
        self.refunded[charge_key(task_id, attempt)] = amount


class ApiKey(Aggregate):
    """A user's API key, found by the SHA-256 of the key; the key itself is never stored."""

    @staticmethod
    def create_id(key_hash: str) -> UUID:
        return uuid5(NAMESPACE, f"api-key:{key_hash}")

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

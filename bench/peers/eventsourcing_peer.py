"""A naive peer: FastAPI + eventsourcing, one `save(task, account)` per submission (optimistic
concurrency, retried on a conflict). Same JSON body and answer as mediatasks' POST /v1/tasks.

Run: with eventsourcing's POSTGRES_* variables set, uvicorn eventsourcing_peer:app (bench/http_submit.py starts it).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Annotated

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from peer_contract import PRICES, Accepted, NewUser, SubmitTask

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://peer.invalid/")


class Account(Aggregate):
    @staticmethod
    def create_id(user_id: str) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, "account:" + user_id)

    @event("Opened")
    def __init__(self, user_id: str, balance: int) -> None:
        self.user_id = user_id
        self.balance = balance

    @event("Charged")
    def charge(self, task_id: uuid.UUID, amount: int) -> None:
        self.balance -= amount


class Key(Aggregate):
    @staticmethod
    def create_id(key_hash: str) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, "key:" + key_hash)

    @event("Issued")
    def __init__(self, key_hash: str, user_id: str) -> None:
        self.user_id = user_id


class Task(Aggregate):
    @event("Started")
    def __init__(self, user_id: str, url: str, output_type: str, languages: list[str], credits: int) -> None:
        self.user_id, self.url, self.output_type, self.languages, self.credits = (
            user_id,
            url,
            output_type,
            languages,
            credits,
        )
        self.status = "queued"


class Peer(Application[uuid.UUID]):
    name = "Peer"


peer = Peer()
app = FastAPI()


def current_user(authorization: Annotated[str, Header()] = "") -> str:
    key = authorization.removeprefix("Bearer ")
    try:
        return peer.repository.get(Key.create_id(hashlib.sha256(key.encode()).hexdigest())).user_id
    except AggregateNotFoundError:
        raise HTTPException(401, "unauthorized") from None


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/admin/users", status_code=201)
def create_user(body: NewUser) -> dict[str, object]:
    api_key = "mt_" + secrets.token_urlsafe(32)
    key_hash = hashlib.sha256(api_key.encode()).hexdigest()
    peer.save(Account(body.user_id, body.credits), Key(key_hash, body.user_id))
    return {"user_id": body.user_id, "api_key": api_key, "balance": body.credits}


@app.post("/v1/tasks", response_model=Accepted, status_code=202)
def submit(body: SubmitTask, user_id: Annotated[str, Depends(current_user)]) -> JSONResponse:
    if body.output_type not in PRICES:
        raise HTTPException(422, "invalid_output_type")
    price = PRICES[body.output_type]
    for _ in range(200):
        account: Account = peer.repository.get(Account.create_id(user_id))
        if account.balance < price:
            raise HTTPException(402, "insufficient_credits")
        task = Task(user_id, body.url, body.output_type, body.languages, price)
        account.charge(task.id, price)
        try:
            peer.save(task, account)
            break
        except IntegrityError:
            continue
    else:
        raise HTTPException(409, "concurrent_updates")
    out = Accepted(task_id=task.id, status="queued", credits_charged=price)
    return JSONResponse(out.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/tasks/{task.id}"})

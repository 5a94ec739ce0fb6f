"""A naive peer: FastAPI + psycopg, one transaction per submission (insert task, insert ledger row,
conditional balance update). Same JSON body and answer as mediatasks' POST /v1/tasks.

Run: DATABASE_URL=postgresql://… uvicorn psycopg_peer:app (bench/http_submit.py starts it).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from peer_contract import PRICES, Accepted, NewUser, SubmitTask
from psycopg_pool import ConnectionPool

SCHEMA = """
CREATE TABLE IF NOT EXISTS peer_keys (key_hash text PRIMARY KEY, user_id text NOT NULL);
CREATE TABLE IF NOT EXISTS peer_accounts (user_id text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
CREATE TABLE IF NOT EXISTS peer_tasks (task_id uuid PRIMARY KEY, user_id text NOT NULL, url text NOT NULL,
    output_type text NOT NULL, languages text[] NOT NULL, status text NOT NULL, credits int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS peer_ledger (position bigserial PRIMARY KEY, user_id text NOT NULL, task_id uuid,
    amount bigint NOT NULL, at timestamptz NOT NULL DEFAULT now());
"""

pool = ConnectionPool(os.environ["DATABASE_URL"], min_size=4, max_size=20, open=True)
with pool.connection() as conn:
    conn.execute("SELECT pg_advisory_lock(19)")
    conn.execute(SCHEMA)
    conn.execute("SELECT pg_advisory_unlock(19)")
app = FastAPI()


def current_user(authorization: Annotated[str, Header()] = "") -> str:
    key = authorization.removeprefix("Bearer ")
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT user_id FROM peer_keys WHERE key_hash = %s", (hashlib.sha256(key.encode()).hexdigest(),)
        ).fetchone()
    if row is None:
        raise HTTPException(401, "unauthorized")
    return row[0]


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/admin/users", status_code=201)
def create_user(body: NewUser) -> dict[str, object]:
    api_key = "mt_" + secrets.token_urlsafe(32)
    with pool.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO peer_accounts VALUES (%s, %s)", (body.user_id, body.credits))
        conn.execute(
            "INSERT INTO peer_keys VALUES (%s, %s)", (hashlib.sha256(api_key.encode()).hexdigest(), body.user_id)
        )
    return {"user_id": body.user_id, "api_key": api_key, "balance": body.credits}


@app.post("/v1/tasks", response_model=Accepted, status_code=202)
def submit(body: SubmitTask, user_id: Annotated[str, Depends(current_user)]) -> JSONResponse:
    if body.output_type not in PRICES:
        raise HTTPException(422, "invalid_output_type")
    price, task_id = PRICES[body.output_type], uuid.uuid4()
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO peer_tasks (task_id, user_id, url, output_type, languages, status, credits) "
            "VALUES (%s, %s, %s, %s, %s, 'queued', %s)",
            (task_id, user_id, body.url, body.output_type, body.languages, price),
        )
        conn.execute(
            "INSERT INTO peer_ledger (user_id, task_id, amount) VALUES (%s, %s, %s)", (user_id, task_id, -price)
        )
        charged = conn.execute(
            "UPDATE peer_accounts SET balance = balance - %s WHERE user_id = %s AND balance >= %s RETURNING balance",
            (price, user_id, price),
        ).fetchone()
        if charged is None:  # raised out of the transaction: it rolls back the task and the ledger row
            raise HTTPException(402, "insufficient_credits")
    out = Accepted(task_id=task_id, status="queued", credits_charged=price)
    return JSONResponse(out.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/tasks/{task_id}"})

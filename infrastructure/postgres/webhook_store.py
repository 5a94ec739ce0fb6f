"""Webhook endpoints, deliveries and attempts in PostgreSQL (tables in the event store's schema)."""

from __future__ import annotations

import base64
import secrets as secret_tokens
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4, uuid5

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb

TRACKING_TABLE = "webhookfanout_tracking"
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
DELIVERY_NAMESPACE = UUID("5b0c63a4-5a7e-4e0c-9d59-0f0c5e6f1d18")


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secret_tokens.token_bytes(32)).decode()


def delivery_id(endpoint_id: UUID, position: int) -> str:
    """The stable `webhook-id` of one event (by its log position) for one endpoint."""
    return "msg_" + uuid5(DELIVERY_NAMESPACE, f"{endpoint_id}:{position}").hex


@dataclass(frozen=True)
class Endpoint:
    id: UUID
    user_id: str
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    secrets: list[dict[str, Any]] = field(repr=False, default_factory=list)
    task_id: UUID | None = None  # a one-off callback of this task only (signed with the user's default secret)

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret, and a rotated-out one until it expires (both sign, as the spec allows)."""
        return [
            s["secret"]
            for s in self.secrets
            if s.get("expires_at") is None or datetime.fromisoformat(s["expires_at"]) > now
        ]


@dataclass(frozen=True)
class Attempt:
    number: int
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None


@dataclass(frozen=True)
class Delivery:
    id: str
    endpoint_id: UUID
    event_type: str
    position: int
    payload: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    history: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class NewDelivery:
    endpoint_id: UUID
    event_type: str
    payload: str


class PostgresWebhookStore:
    """Reads and writes the webhook tables; every method is one short transaction."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        schema = Identifier(datastore.schema)
        self.endpoints = SQL("{}.{}").format(schema, Identifier("webhook_endpoints"))
        self.deliveries = SQL("{}.{}").format(schema, Identifier("webhook_deliveries"))
        self.attempts = SQL("{}.{}").format(schema, Identifier("webhook_attempts"))
        self.user_secrets = SQL("{}.{}").format(schema, Identifier("webhook_user_secrets"))
        # A task's one-off endpoint signs with its user's default secret (rotations apply at once).
        self.with_secrets = SQL(
            "SELECT e.id, e.user_id, e.url, e.event_types, e.description, e.enabled, e.disabled_reason, "
            "e.failing_since, e.created_at, e.task_id, CASE WHEN e.task_id IS NULL THEN e.secrets "
            "ELSE coalesce(u.secrets, '[]'::jsonb) END AS secrets FROM {} e LEFT JOIN {} u ON u.user_id = e.user_id"
        ).format(self.endpoints, self.user_secrets)
        self.tracking = PostgresTrackingRecorder(datastore, tracking_table_name=TRACKING_TABLE)

    def create_tables(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id uuid PRIMARY KEY, user_id text NOT NULL, url text NOT NULL, "
                    "event_types text[] NOT NULL, description text NOT NULL DEFAULT '', secrets jsonb NOT NULL, "
                    "enabled boolean NOT NULL DEFAULT true, disabled_reason text, failing_since timestamptz, "
                    "created_at timestamptz NOT NULL DEFAULT now(), task_id uuid)"
                ).format(self.endpoints)
            )
            curs.execute(
                SQL("CREATE INDEX IF NOT EXISTS webhook_endpoints_user ON {} (user_id)").format(self.endpoints)
            )
            curs.execute(SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS task_id uuid").format(self.endpoints))
            curs.execute(
                SQL(
                    "CREATE UNIQUE INDEX IF NOT EXISTS webhook_endpoints_task ON {} (task_id) WHERE task_id IS NOT NULL"
                ).format(self.endpoints)
            )
            curs.execute(
                SQL("CREATE TABLE IF NOT EXISTS {} (user_id text PRIMARY KEY, secrets jsonb NOT NULL)").format(
                    self.user_secrets
                )
            )
            curs.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, endpoint_id uuid NOT NULL, "
                    "event_type text NOT NULL, position bigint NOT NULL, payload text NOT NULL, "
                    "status text NOT NULL DEFAULT 'pending', attempts integer NOT NULL DEFAULT 0, "
                    "next_attempt_at timestamptz, created_at timestamptz NOT NULL DEFAULT now())"
                ).format(self.deliveries)
            )
            curs.execute(
                SQL(
                    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON {} (next_attempt_at) WHERE status = 'pending'"
                ).format(self.deliveries)
            )
            curs.execute(
                SQL(
                    "CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON {} (endpoint_id, created_at DESC, id)"
                ).format(self.deliveries)
            )
            curs.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} (delivery_id text NOT NULL, number integer NOT NULL, "
                    "at timestamptz NOT NULL, status_code integer, latency_ms double precision NOT NULL, "
                    "error text, PRIMARY KEY (delivery_id, number))"
                ).format(self.attempts)
            )
        self.tracking.create_table()

    # Endpoints -------------------------------------------------------------------

    def add_endpoint(
        self, user_id: str, url: str, event_types: Sequence[str], description: str
    ) -> tuple[Endpoint, str]:
        secret = new_secret()
        endpoint_id = uuid4()
        row = self._write(
            SQL(
                "INSERT INTO {} (id, user_id, url, event_types, description, secrets) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING *"
            ).format(self.endpoints),
            (
                endpoint_id,
                user_id,
                url,
                list(event_types),
                description,
                Jsonb([{"secret": secret, "expires_at": None}]),
            ),
        )
        return _endpoint(row), secret

    def add_task_endpoint(self, user_id: str, task_id: UUID, url: str, event_types: Sequence[str]) -> None:
        """The one-off callback of one task (`webhook_url` on submission); again for the same task: no-op."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {} (id, user_id, url, event_types, description, secrets, task_id) "
                    "VALUES (%s, %s, %s, %s, %s, '[]'::jsonb, %s) "
                    "ON CONFLICT (task_id) WHERE task_id IS NOT NULL DO NOTHING"
                ).format(self.endpoints),
                (uuid4(), user_id, url, list(event_types), f"callback of task {task_id}", task_id),
            )

    def default_secret_exists(self, user_id: str) -> bool:
        return bool(self._rows(SQL("SELECT 1 FROM {} WHERE user_id = %s").format(self.user_secrets), (user_id,)))

    def new_default_secret(self, user_id: str, keep_old_for: timedelta) -> str:
        """The user's secret for one-off task callbacks: created, or rotated (the old one signs on for a while)."""
        secret = new_secret()
        now = datetime.now(timezone.utc)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL("SELECT secrets FROM {} WHERE user_id = %s FOR UPDATE").format(self.user_secrets), (user_id,)
            )
            row = curs.fetchone()
            kept = _kept(row["secrets"] if row else [], now, keep_old_for)
            curs.execute(
                SQL(
                    "INSERT INTO {} (user_id, secrets) VALUES (%s, %s) ON CONFLICT (user_id) "
                    "DO UPDATE SET secrets = EXCLUDED.secrets"
                ).format(self.user_secrets),
                (user_id, Jsonb([{"secret": secret, "expires_at": None}, *kept])),
            )
        return secret

    def endpoints_of(self, user_id: str) -> list[Endpoint]:
        return [
            _endpoint(r)
            for r in self._rows(
                SQL("{} WHERE e.user_id = %s ORDER BY e.created_at, e.id").format(self.with_secrets), (user_id,)
            )
        ]

    def endpoint(self, endpoint_id: UUID) -> Endpoint | None:
        rows = self._rows(SQL("{} WHERE e.id = %s").format(self.with_secrets), (endpoint_id,))
        return _endpoint(rows[0]) if rows else None

    def subscribed(self, user_id: str, event_type: str, task_id: UUID | None) -> list[Endpoint]:
        """The user's enabled endpoints for this type: general ones, and the callback of `task_id`."""
        return [
            _endpoint(r)
            for r in self._rows(
                SQL(
                    "{} WHERE e.user_id = %s AND e.enabled AND %s = ANY(e.event_types) "
                    "AND (e.task_id IS NULL OR e.task_id = %s)"
                ).format(self.with_secrets),
                (user_id, event_type, task_id),
            )
        ]

    def update_endpoint(self, endpoint_id: UUID, changes: dict[str, Any]) -> Endpoint | None:
        allowed = {k: v for k, v in changes.items() if k in ("url", "event_types", "description", "enabled")}
        if allowed.get("enabled"):
            allowed["disabled_reason"] = None
            allowed["failing_since"] = None
        elif allowed.get("enabled") is False:
            allowed["disabled_reason"] = "disabled by its owner"
        if not allowed:
            return self.endpoint(endpoint_id)
        assignments = SQL(", ").join(SQL("{} = %s").format(Identifier(k)) for k in allowed)
        row = self._write(
            SQL("UPDATE {} SET {} WHERE id = %s RETURNING *").format(self.endpoints, assignments),
            (*allowed.values(), endpoint_id),
        )
        return _endpoint(row) if row else None

    def delete_endpoint(self, endpoint_id: UUID) -> None:
        self._write(SQL("DELETE FROM {} WHERE id = %s").format(self.endpoints), (endpoint_id,))
        self.drop_pending(endpoint_id)

    def rotate_secret(self, endpoint_id: UUID, keep_old_for: timedelta) -> str:
        """A new secret; the current ones keep signing for `keep_old_for` (older rotated ones go)."""
        secret = new_secret()
        now = datetime.now(timezone.utc)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("SELECT secrets FROM {} WHERE id = %s FOR UPDATE").format(self.endpoints), (endpoint_id,))
            row = curs.fetchone()
            kept = _kept(row["secrets"], now, keep_old_for)
            curs.execute(
                SQL("UPDATE {} SET secrets = %s WHERE id = %s").format(self.endpoints),
                (Jsonb([{"secret": secret, "expires_at": None}, *kept]), endpoint_id),
            )
        return secret

    def disable(self, endpoint_id: UUID, reason: str) -> None:
        self._write(
            SQL("UPDATE {} SET enabled = false, disabled_reason = %s WHERE id = %s").format(self.endpoints),
            (reason, endpoint_id),
        )

    # Fan-out ------------------------------------------------------------------------

    def users_with_endpoints(self, events_table: str) -> tuple[frozenset[str], int]:
        """The users with an enabled endpoint, and the event log's head, in one snapshot: every endpoint
        written before an event at or below that head committed is among them (notification ids are
        given in commit order, under the events table's lock)."""
        [row] = self._rows(
            SQL(
                "SELECT (SELECT coalesce(max(notification_id), 0) FROM {}.{}) AS head, "
                "array(SELECT DISTINCT user_id FROM {} WHERE enabled) AS users"
            ).format(Identifier(self.datastore.schema), Identifier(events_table), self.endpoints),
            (),
        )
        return frozenset(row["users"]), int(row["head"])

    def fan_out(self, position: int, deliveries: Sequence[NewDelivery], tracking: Tracking) -> None:
        """Write the deliveries of one event and its tracking row in one transaction (again: no-op)."""
        with self.datastore.transaction(commit=True) as curs:
            for new in deliveries:
                curs.execute(
                    SQL(
                        "INSERT INTO {} (id, endpoint_id, event_type, position, payload, next_attempt_at) "
                        "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (id) DO NOTHING"
                    ).format(self.deliveries),
                    (delivery_id(new.endpoint_id, position), new.endpoint_id, new.event_type, position, new.payload),
                )
            self.tracking._insert_tracking(curs, tracking)

    # Sending -------------------------------------------------------------------------

    def endpoints_due(self, exclude: Sequence[UUID], limit: int) -> list[UUID]:
        rows = self._rows(
            SQL(
                "SELECT DISTINCT endpoint_id FROM {} WHERE status = 'pending' AND next_attempt_at <= now() "
                "AND NOT (endpoint_id = ANY(%s)) LIMIT %s"
            ).format(self.deliveries),
            (list(exclude), limit),
        )
        return [r["endpoint_id"] for r in rows]

    def claim_next(self, endpoint_id: UUID, lease: timedelta) -> Delivery | None:
        """The endpoint's oldest due delivery, leased so that no other sender takes it meanwhile."""
        row = self._write(
            SQL(
                "UPDATE {0} SET next_attempt_at = now() + %s WHERE id = (SELECT id FROM {0} WHERE endpoint_id = %s "
                "AND status = 'pending' AND next_attempt_at <= now() ORDER BY position LIMIT 1 "
                "FOR UPDATE SKIP LOCKED) RETURNING *"
            ).format(self.deliveries),
            (lease, endpoint_id),
        )
        return _delivery(row) if row else None

    def record_attempt(
        self, delivery: Delivery, attempt: Attempt, *, status: str, next_attempt_at: datetime | None
    ) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {} (delivery_id, number, at, status_code, latency_ms, error) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                ).format(self.attempts),
                (delivery.id, attempt.number, attempt.at, attempt.status_code, attempt.latency_ms, attempt.error),
            )
            curs.execute(
                SQL("UPDATE {} SET status = %s, attempts = %s, next_attempt_at = %s WHERE id = %s").format(
                    self.deliveries
                ),
                (status, attempt.number, next_attempt_at, delivery.id),
            )

    def endpoint_answered(self, endpoint_id: UUID, ok: bool, disable_after: timedelta) -> str | None:
        """Track since when the endpoint fails; disable it past `disable_after` (the reason is returned)."""
        if ok:
            self._write(
                SQL("UPDATE {} SET failing_since = NULL WHERE id = %s AND failing_since IS NOT NULL").format(
                    self.endpoints
                ),
                (endpoint_id,),
            )
            return None
        row = self._write(
            SQL(
                "UPDATE {} SET failing_since = coalesce(failing_since, now()) WHERE id = %s "
                "RETURNING failing_since, now() AS now"
            ).format(self.endpoints),
            (endpoint_id,),
        )
        if row is None or row["now"] - row["failing_since"] < disable_after:
            return None
        reason = f"every delivery failed since {row['failing_since'].isoformat()}"
        self.disable(endpoint_id, reason)
        return reason

    def drop_pending(self, endpoint_id: UUID) -> None:
        """A disabled endpoint's waiting deliveries end as failed (they can be redelivered)."""
        self._write(
            SQL(
                "UPDATE {} SET status = 'failed', next_attempt_at = NULL WHERE endpoint_id = %s AND status = 'pending'"
            ).format(self.deliveries),
            (endpoint_id,),
        )

    # Reading deliveries --------------------------------------------------------------

    def deliveries_of(self, endpoint_id: UUID, *, limit: int, before: int | None = None) -> list[Delivery]:
        """Newest first by log position; `before` is the position of the last one of the previous page."""
        rows, history = self._with_attempts(
            SQL("SELECT * FROM {} WHERE endpoint_id = %s AND position < %s ORDER BY position DESC LIMIT %s").format(
                self.deliveries
            ),
            (endpoint_id, before if before is not None else 2**62, limit),
        )
        return [_delivery(r, history.get(r["id"], [])) for r in rows]

    def delivery(self, endpoint_id: UUID, delivery_id_: str) -> Delivery | None:
        rows, history = self._with_attempts(
            SQL("SELECT * FROM {} WHERE endpoint_id = %s AND id = %s").format(self.deliveries),
            (endpoint_id, delivery_id_),
        )
        return _delivery(rows[0], history.get(delivery_id_, [])) if rows else None

    def redeliver(self, endpoint_id: UUID, delivery_id_: str) -> Delivery | None:
        """Send again now (same `webhook-id`, attempts go on counting)."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "UPDATE {} SET status = 'pending', next_attempt_at = now() WHERE endpoint_id = %s AND id = %s"
                ).format(self.deliveries),
                (endpoint_id, delivery_id_),
            )
        return self.delivery(endpoint_id, delivery_id_)

    def _with_attempts(self, query: Any, params: Any) -> tuple[list[Any], dict[str, list[Attempt]]]:
        """Deliveries and their attempts from one snapshot: a delivery's status agrees with its attempts."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            curs.execute(query, params)
            rows = list(curs.fetchall())
            found: dict[str, list[Attempt]] = {}
            if not rows:
                return rows, found
            curs.execute(
                SQL("SELECT * FROM {} WHERE delivery_id = ANY(%s) ORDER BY number").format(self.attempts),
                ([r["id"] for r in rows],),
            )
            attempts = list(curs.fetchall())
        for r in attempts:
            found.setdefault(r["delivery_id"], []).append(
                Attempt(r["number"], r["at"], r["status_code"], r["latency_ms"], r["error"])
            )
        return rows, found

    def _write(self, query: Any, params: Any) -> Any:
        """One statement in a transaction of its own; the first row it returned (None: none)."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(query, params)
            return curs.fetchone() if curs.description is not None else None

    def _rows(self, query: Any, params: Any) -> list[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(query, params)
            return list(curs.fetchall())


def _kept(secrets: list[dict[str, Any]], now: datetime, keep_for: timedelta) -> list[dict[str, Any]]:
    """The secrets still valid, each now expiring within `keep_for` (a rotation)."""
    return [
        {"secret": s["secret"], "expires_at": s.get("expires_at") or (now + keep_for).isoformat()}
        for s in secrets
        if s.get("expires_at") is None or datetime.fromisoformat(s["expires_at"]) > now
    ]


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row["id"],
        user_id=row["user_id"],
        url=row["url"],
        event_types=list(row["event_types"]),
        description=row["description"],
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        failing_since=row["failing_since"],
        created_at=row["created_at"],
        secrets=row["secrets"],
        task_id=row["task_id"],
    )


def _delivery(row: Any, history: list[Attempt] | None = None) -> Delivery:
    return Delivery(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        event_type=row["event_type"],
        position=row["position"],
        payload=row["payload"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        history=history or [],
    )

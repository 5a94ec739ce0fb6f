"""Webhook signing, the retry schedule and event mapping, without I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone
from uuid import uuid4

import pytest
from standardwebhooks.webhooks import Webhook

from infrastructure.postgres.webhook_store import delivery_id, new_secret
from infrastructure.webhooks.sender import (
    DEFAULT_SCHEDULE,
    JITTER,
    next_attempt_delay,
    parse_schedule,
    signature_header,
)


def test_the_signature_is_the_specs_hmac_and_verifies_with_the_library() -> None:
    secret_bytes = b"k" * 32
    secret = "whsec_" + base64.b64encode(secret_bytes).decode()
    at = datetime(2026, 12, 1, tzinfo=timezone.utc)
    expected = base64.b64encode(
        hmac.new(secret_bytes, f"msg_1.{int(at.timestamp())}.{{}}".encode(), hashlib.sha256).digest()
    ).decode()
    assert signature_header([secret], "msg_1", at, "{}") == f"v1,{expected}"
    old, new = new_secret(), new_secret()
    now = datetime.now(timezone.utc)
    both = signature_header([new, old], "msg_2", now, '{"a":1}')
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": both}
    assert Webhook(old).verify('{"a":1}', headers) == {"a": 1}  # a receiver not yet rotated
    assert Webhook(new).verify('{"a":1}', headers) == {"a": 1}


def test_the_schedule_and_its_jitter() -> None:
    assert parse_schedule("0, 5,300") == (0.0, 5.0, 300.0)
    assert DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    for bad in ("", "1,-2", "x"):
        with pytest.raises(ValueError):
            parse_schedule(bad)
    for made in range(1, len(DEFAULT_SCHEDULE)):
        delay = next_attempt_delay(DEFAULT_SCHEDULE, made)
        assert delay is not None
        assert DEFAULT_SCHEDULE[made] * (1 - JITTER) <= delay <= DEFAULT_SCHEDULE[made] * (1 + JITTER)
    assert next_attempt_delay(DEFAULT_SCHEDULE, len(DEFAULT_SCHEDULE)) is None


def test_the_webhook_id_is_stable_per_event_and_endpoint() -> None:
    endpoint, other = uuid4(), uuid4()
    assert delivery_id(endpoint, 7) == delivery_id(endpoint, 7)
    assert len({delivery_id(endpoint, 7), delivery_id(endpoint, 8), delivery_id(other, 7)}) == 3
    assert new_secret().startswith("whsec_") and len(base64.b64decode(new_secret()[6:])) == 32

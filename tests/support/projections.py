"""Waiting for the projection runners of a test: what a fixed sleep only hoped for, as conditions."""

from __future__ import annotations

import time
from typing import Any

from projections.refund_issuer import RefundIssuer


def wait_refunds_projected(app: Any, runners: Any, timeout: float = 20.0) -> None:
    """Until the runners' refund issuer has processed every failure in the log (so each refund it
    writes is written) and their read model has projected the head, those refunds included."""
    failures = app.recorder.select_notifications(start=None, limit=1_000_000, topics=list(RefundIssuer.topics))
    last_failure = failures[-1].id if failures else 0
    deadline = time.monotonic() + timeout
    while (runners.refunds_runner.position() or 0) < last_failure:
        assert time.monotonic() < deadline, f"refund issuer at {runners.refunds_runner.position()} of {last_failure}"
        time.sleep(0.02)
    runners.wait_for(app.recorder.max_notification_id(), timeout=max(0.1, deadline - time.monotonic()))

"""Record a history with the CreditAccount of before issue 19 (charges and refunds kept in the account).

Run with a checkout of that code (commit 5dd3abc) first on the path:
    PYTHONPATH=<checkout> python record_credit_account_v1.py 5dd3abc > credit_account_v1.json
tests/integration/test_credit_account_v1_history.py loads the output and replays it with today's code.
"""

import base64
import json
import sys

from application.mediatasks import MediaTasks

app = MediaTasks(env={"PERSISTENCE_MODULE": "eventsourcing.popo", "MAX_ATTEMPTS": "3"})
URL = "https://vimeo.com/76979871"
app.create_user("olga", 10)


def fail(task_id, attempt):
    app.begin_attempt(task_id, "w")
    assert app.fail(task_id, attempt, "media_not_found", "gone", retryable=False)


def old_refund(task_id, attempt):
    # what the refund issuer of before issue 19 appended: a Refunded on the account only
    account = app.get_account("olga")
    account.refund(task_id, attempt)
    app.save(account)


extracted = app.submit("olga", URL, "subtitles", idempotency_key="extracted").task_id
app.begin_attempt(extracted, "w")
app.complete(extracted, 1, {})
refunded = app.submit("olga", URL, "subtitles", idempotency_key="refunded").task_id
fail(refunded, 1)
retried = app.submit("olga", URL, "video", idempotency_key="retried").task_id
fail(retried, 1)
old_refund(refunded, 1)
old_refund(retried, 1)
issuer_position = max(n.id for n in app.recorder.select_notifications(1, 1000) if n.topic.endswith("MediaTask.Failed"))
app.retry_task("olga", retried)
pending = app.submit("olga", URL, "subtitles", idempotency_key="pending").task_id
fail(pending, 1)
fail(retried, 2)
account = app.get_account("olga")
app.take_snapshot(account.id)
assert account.charges and account.refunded
queued = app.submit("olga", URL, "subtitles", idempotency_key="queued").task_id

notifications = app.recorder.select_notifications(1, 1000)
snapshots = list(app.snapshots.recorder.select_events(account.id))
out = {
    "recorded_with": sys.argv[1],
    "refund_issuer_position": issuer_position,
    "balance": app.get_account("olga").balance,
    "tasks": {
        "extracted": str(extracted),
        "refunded": str(refunded),
        "retried": str(retried),
        "pending": str(pending),
        "queued": str(queued),
    },
    "events": [
        {
            "id": n.id,
            "originator_id": str(n.originator_id),
            "originator_version": n.originator_version,
            "topic": n.topic,
            "state": base64.b64encode(n.state).decode(),
        }
        for n in notifications
    ],
    "snapshots": [
        {
            "originator_id": str(s.originator_id),
            "originator_version": s.originator_version,
            "topic": s.topic,
            "state": base64.b64encode(s.state).decode(),
        }
        for s in snapshots
    ],
}
print(json.dumps(out, indent=1))

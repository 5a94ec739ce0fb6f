"""The caller's credit account."""

from __future__ import annotations

from fastapi import APIRouter, Query

from infrastructure.api.deps import AppDep, CurrentUser, ViewsDep
from infrastructure.api.errors import responses
from infrastructure.api.schemas import AccountOut, LedgerEntryOut
from infrastructure.postgres.own_writes import read_own_writes
from projections.task_views import AccountView, LedgerEntry, TaskViews

router = APIRouter(prefix="/v1/account", tags=["account"])


@router.get("", response_model=AccountOut, responses=responses(401, 422))
def get_account(
    user_id: CurrentUser,
    app: AppDep,
    views: ViewsDep,
    limit: int = Query(50, ge=1, le=200),
    before: int | None = Query(None, ge=1, description="entries older than this position"),
) -> AccountOut:
    """Balance and ledger entries (grants, charges, refunds), newest first; your last change included."""
    account, entries = read_own_writes(
        app, user_id, lambda: _account_at_position(views, user_id, app.name, limit + 1, before)
    )
    page = [e for e in entries if e.kind != "open"][:limit]
    more = len(entries) > limit
    return AccountOut(
        user_id=user_id,
        balance=account.balance if account else 0,
        entries=[
            LedgerEntryOut(
                position=e.position,
                kind=e.kind,
                amount=e.amount,
                balance=e.balance,
                task_id=e.task_id,
                attempt=e.attempt,
                reason=e.reason,
                at=e.at,
            )
            for e in page
        ],
        next_before=page[-1].position if more and page else None,
    )


def _account_at_position(
    views: TaskViews, user_id: str, application_name: str, limit: int, before: int | None
) -> tuple[int | None, tuple[AccountView | None, list[LedgerEntry]]]:
    position, account, entries = views.account_at_position(user_id, application_name, limit=limit, before=before)
    return position, (account, entries)

"""Operators: users and credits (admin token)."""

from __future__ import annotations

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from infrastructure.api.deps import AdminOnly, ApiKeysDep, AppDep, RuntimeDep
from infrastructure.api.errors import responses
from infrastructure.api.schemas import AuditResult, AuditViolation, Balance, CreatedUser, CreateUser, GrantCredits

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminOnly])


@router.post("/users", response_model=CreatedUser, status_code=201, responses=responses(401, 409, 413, 422))
def create_user(body: CreateUser, app: AppDep, keys: ApiKeysDep) -> JSONResponse:
    """Create a user with an initial grant; the API key is shown only in this response."""
    user = app.create_user(body.user_id, body.credits)
    keys.learn(user.api_key, user.user_id)  # its first request looks nothing up
    out = CreatedUser(user_id=user.user_id, api_key=user.api_key, balance=user.balance)
    return JSONResponse(out.model_dump(), status_code=201, headers={"Cache-Control": "no-store"})


@router.post("/users/{user_id}/credits", response_model=Balance, responses=responses(401, 404, 413, 422))
def grant_credits(body: GrantCredits, app: AppDep, user_id: str = Path(max_length=64)) -> Balance:
    """Grant credits to a user."""
    balance, _ = app.grant_credits(user_id, body.amount, body.reason or "grant")
    return Balance(user_id=user_id, balance=balance)


@router.get("/audit/verify", response_model=AuditResult, responses=responses(401))
def audit_verify(runtime: RuntimeDep) -> AuditResult:
    """Replay every event and check the credit and lifecycle invariants, the sealed chain and the read model."""
    from infrastructure.audit.history import verify
    from infrastructure.audit.keys import signer_from_settings

    signer = signer_from_settings(runtime.settings)
    report = verify(runtime.app, runtime.views, verifier=signer.verifier() if signer is not None else None)
    return AuditResult(
        ok=report.ok,
        summary=report.summary(),
        events=report.events,
        tasks=report.tasks,
        accounts=report.accounts,
        pending_refunds=report.pending_refunds,
        violations=[
            AuditViolation(code=v.code, message=v.message, positions=list(v.positions)) for v in report.violations
        ],
    )

"""Operators: a user's rate limits and active-task cap (overrides of the settings' defaults)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from infrastructure.api.deps import AdminOnly, AppDep
from infrastructure.api.errors import responses
from infrastructure.api.rate_limits import RequestLimits, RequestLimitsDep, check_rate
from infrastructure.postgres.user_limits import UserLimits

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminOnly])

Rate = Annotated[str, Field(max_length=40, examples=["10/minute"]), AfterValidator(check_rate)]


class ChangeUserLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate_limit_submissions: Rate | None = Field(default=None, description="null: the default")
    rate_limit_reads: Rate | None = Field(default=None, description="null: the default")
    max_active_tasks: int | None = Field(default=None, ge=1, le=100_000, description="null: the default")


class UserLimitsOut(BaseModel):
    user_id: str
    rate_limit_submissions: str
    rate_limit_reads: str
    max_active_tasks: int
    overridden: list[str] = Field(description="which of these are this user's own (the others are defaults)")


def limits_out(limits: RequestLimits, user_id: str) -> UserLimitsOut:
    own = limits.limits_of(user_id)
    return UserLimitsOut(
        user_id=user_id,
        rate_limit_submissions=own.rate_limit_submissions or limits.defaults["submissions"],
        rate_limit_reads=own.rate_limit_reads or limits.defaults["reads"],
        max_active_tasks=own.max_active_tasks or limits.max_active_tasks,
        overridden=[k for k, v in own.__dict__.items() if v is not None],
    )


@router.get("/users/{user_id}", response_model=UserLimitsOut, responses=responses(401, 404, 422))
def get_user_limits(app: AppDep, limits: RequestLimitsDep, user_id: str = Path(max_length=64)) -> UserLimitsOut:
    """A user's effective rate limits and active-task cap."""
    app.get_account(user_id)  # user_not_found (404) unless the user exists
    return limits_out(limits, user_id)


@router.patch("/users/{user_id}", response_model=UserLimitsOut, responses=responses(401, 404, 413, 422))
def change_user_limits(
    body: ChangeUserLimits, app: AppDep, limits: RequestLimitsDep, user_id: str = Path(max_length=64)
) -> UserLimitsOut:
    """Set (or, with null, clear) a user's own limits; other processes see them within 5 s."""
    app.get_account(user_id)
    limits.overrides.put(user_id, UserLimits(**body.model_dump()))
    limits.forget(user_id)
    return limits_out(limits, user_id)

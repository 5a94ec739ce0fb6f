"""The FastAPI application, built around a Runtime from the composition root."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from infrastructure.api.routes import health


def create_api(runtime: Any, *, projections: Any = None) -> FastAPI:
    api = FastAPI(title="mediatasks", version="1", summary="Video links to stored videos and subtitles, paid in credits.")
    api.state.runtime = runtime
    api.state.projections = projections
    api.include_router(health.router)
    return api

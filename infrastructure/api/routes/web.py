"""The web page: plain HTML, CSS and one JavaScript module, served from the package (no build step)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from infrastructure.api.deps import AppDep
from infrastructure.api.errors import ApiError

router = APIRouter(include_in_schema=False)

STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return files("infrastructure.api").joinpath("web", name).read_bytes()


@router.get("/")
def index() -> Response:
    """The single page."""
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.get("/web/config.json")
def config(app: AppDep) -> dict:
    """What the page needs to know about this deployment: the price of each output type (as charged)."""
    return {"prices": dict(app.prices)}


@router.get("/web/{name}")
def static(name: str) -> Response:
    """The page's script and style sheet."""
    if name not in STATIC:
        raise ApiError(404, "not_found", "There is no such file.")
    return Response(_read(name), media_type=STATIC[name], headers=SECURITY_HEADERS)

"""Routes take everything through the `Annotated` dependencies of infrastructure/api/deps.py."""

from pathlib import Path

ROUTES = Path(__file__).resolve().parents[2] / "infrastructure" / "api" / "routes"


def test_no_route_reads_the_app_state() -> None:
    readers = [p.name for p in ROUTES.glob("*.py") if "app.state" in p.read_text()]
    assert readers == []

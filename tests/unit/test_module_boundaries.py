"""What import-linter cannot check: `opentelemetry` is a namespace package, so its SDK, exporters and
instrumentations cannot be named in a contract. Only infrastructure/observability imports them."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUP_ONLY = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_observability_sets_up_opentelemetry() -> None:
    offenders = []
    for package in ("domain", "application", "projections", "infrastructure"):
        for path in (ROOT / package).rglob("*.py"):
            if path.is_relative_to(ROOT / "infrastructure" / "observability"):
                continue
            offenders += [f"{path.relative_to(ROOT)}: {m}" for m in imported_modules(path) if m.startswith(SETUP_ONLY)]
    assert offenders == []


def test_the_check_sees_the_telemetry_module() -> None:
    telemetry = ROOT / "infrastructure" / "observability" / "telemetry.py"
    assert any(m.startswith(SETUP_ONLY) for m in imported_modules(telemetry))

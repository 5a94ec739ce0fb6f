"""The module map's "only X imports Y", for every module, including ones the import-linter contracts
do not list yet (a new top-level module would escape them), and for `opentelemetry`'s SDK, exporters
and instrumentations, which import-linter cannot name (a namespace package)."""

import ast
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "application", "projections", "infrastructure")

# imported module prefix -> the only folders whose modules may import it directly
ONLY = {
    "psycopg": ("infrastructure/postgres",),
    "psycopg_pool": ("infrastructure/postgres",),
    "eventsourcing.postgres": ("infrastructure/postgres",),
    "opentelemetry.sdk": ("infrastructure/observability",),
    "opentelemetry.exporter": ("infrastructure/observability",),
    "opentelemetry.instrumentation": ("infrastructure/observability",),
    "prometheus_client": ("infrastructure/observability",),
    "yt_dlp": ("infrastructure/providers",),
    "boto3": ("infrastructure/blobs",),
    "cryptography": ("infrastructure/audit",),
    "infrastructure.entrypoints": ("infrastructure/entrypoints",),
    "infrastructure.bootstrap": ("infrastructure/entrypoints",),
}


@cache
def imported_modules(path: Path) -> frozenset[str]:
    # Parsed in a fresh thread: CPython 3.11.7's compiler can raise "AST constructor recursion depth
    # mismatch" in a thread whose recursion counters an earlier test's deep recursion left behind.
    with ThreadPoolExecutor(max_workers=1) as parser:
        tree = parser.submit(ast.parse, path.read_text(), filename=str(path)).result()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return frozenset(names)


@cache
def sources() -> tuple[Path, ...]:
    return tuple(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("prefix", sorted(ONLY))
def test_only_its_package_imports(prefix: str) -> None:
    allowed = tuple(ROOT / folder for folder in ONLY[prefix])
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sources()
        if not any(path.is_relative_to(folder) for folder in allowed)
        for module in imported_modules(path)
        if _matches(module, prefix)
    ]
    assert offenders == []


def test_the_check_sees_real_imports() -> None:
    assert "psycopg.sql" in imported_modules(ROOT / "infrastructure" / "postgres" / "queries.py")
    telemetry = imported_modules(ROOT / "infrastructure" / "observability" / "telemetry.py")
    assert any(_matches(m, "opentelemetry.sdk") for m in telemetry)

"""The domain does no I/O: no persistence, web or network imports (import-linter checks the layers)."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = (
    "eventsourcing.persistence",
    "eventsourcing.postgres",
    "eventsourcing.application",
    "fastapi",
    "psycopg",
    "httpx",
    "socket",
    "requests",
    "boto3",
    "yt_dlp",
)


def test_domain_imports_nothing_that_does_io() -> None:
    domain = Path(__file__).resolve().parents[2] / "domain"
    found = []
    for path in domain.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            found += [(path.name, n) for n in names if n.startswith(FORBIDDEN)]
    assert found == []

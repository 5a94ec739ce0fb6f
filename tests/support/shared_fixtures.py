"""Where the shared real-world fixture files are: $MEDIATASKS_FIXTURES_DIR, else ../shared/fixtures beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def fixtures_dir() -> Path:
    """The shared fixtures folder (it holds subtitles/ and provider-responses/)."""
    configured = os.environ.get("MEDIATASKS_FIXTURES_DIR")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "fixtures"
    if not path.is_dir():
        raise FileNotFoundError(f"shared fixtures not found at {path}; set MEDIATASKS_FIXTURES_DIR")
    return path

"""The `MediaAssembler` port: fetch the chosen formats (files, HLS, DASH) and write one container from them.

The assembler fetches every playlist, manifest, key and segment itself through the SSRF-guarded
`MediaFetcher`, and remuxes (or encodes the audio, when the choice says so) without ever holding
the whole media: `iter_bytes()` yields the output container in bounded chunks as they are made.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from application.format_choice import FormatChoice


class AssembledMedia(Protocol):
    """The output being made: its type, what is known of its size and length, and its bytes."""

    content_type: str
    extension: str
    duration: float | None
    expected_fetch_bytes: int | None
    bytes_fetched: int

    def iter_bytes(self) -> Iterator[bytes]:
        """The output container in chunks; raises Permanent/TransientMediaError."""
        ...


class MediaAssembler(Protocol):
    def assemble(self, choice: FormatChoice, *, max_bytes: int) -> AbstractContextManager[AssembledMedia]:
        """Resolve the chosen formats (manifests fetched and checked here) and get ready to stream the output.

        Raises `live_not_supported`, `drm_protected`, `manifest_too_large`, `too_long` before any segment.
        """
        ...

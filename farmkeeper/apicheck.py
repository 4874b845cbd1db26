"""Is a Prefect API answering? (plain HTTP, no Prefect import: the CLI and the watcher ask it cheaply)."""

from __future__ import annotations

import contextlib
import urllib.request


def api_healthy(api_url: str | None, timeout_s: float = 2.0) -> bool:
    """True when ``{api_url}/health`` answers 200 within ``timeout_s``."""
    if not api_url:
        return False
    with contextlib.suppress(OSError, ValueError), \
            urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as response:
        return bool(response.status == 200)
    return False

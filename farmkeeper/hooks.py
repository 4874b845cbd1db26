"""Named points in the core where a test can stop a flow at an exact step (deterministic interleavings).

The core calls ``reached("apply.servers-locked", ...)`` at the steps where two flows could meet; nothing
happens unless a test installed a callback for that point (``installed``). A callback typically sets an
event and waits for another one, so a second flow can be run "right there" without sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Callback = Callable[..., None]

_callbacks: dict[str, list[Callback]] = {}
_lock = threading.Lock()


def reached(point: str, **context: Any) -> None:
    """The flow is at ``point``: run the callbacks installed there (none in production)."""
    if not _callbacks:
        return
    with _lock:
        found = list(_callbacks.get(point, ()))
    for callback in found:
        callback(**context)


@contextmanager
def installed(point: str, callback: Callback) -> Iterator[None]:
    """Run ``callback(**context)`` every time a flow reaches ``point`` while the block runs."""
    with _lock:
        _callbacks.setdefault(point, []).append(callback)
    try:
        yield
    finally:
        with _lock:
            _callbacks[point].remove(callback)
            if not _callbacks[point]:
                del _callbacks[point]

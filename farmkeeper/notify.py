"""Notifications through apprise: one call per event, to the farm file's URLs.

A failing target is logged and retried a few times; it never raises into the caller, so a
notification can never fail a failover. Messages pass through ``redact`` first.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

_SECRET_RE = re.compile(r"(?i)(password|passwd|pwd|secret|token)(\s*[=:]\s*)(\S+)")
_URL_CRED_RE = re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]+):([^@\s/]+)@", re.IGNORECASE)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secrets and ``password=...``/``user:pass@`` patterns from a text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _SECRET_RE.sub(r"\1\2***", text)
    return _URL_CRED_RE.sub(r"\1:***@", text)


@dataclass
class NotifyResult:
    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # URLs with credentials redacted

    @property
    def ok(self) -> bool:
        return not self.failed


def notify(urls: Sequence[str], title: str, body: str, *, kind: str = "info", retries: int = 2,
           retry_delay_s: float = 1.0, secrets: Iterable[str] = ()) -> NotifyResult:
    """Send ``title``/``body`` to every URL; ``kind`` is info | success | warning | failure."""
    import apprise

    secrets = list(secrets)
    title, body = redact(title, secrets), redact(body, secrets)
    notify_type = {"success": apprise.NotifyType.SUCCESS, "warning": apprise.NotifyType.WARNING,
                   "failure": apprise.NotifyType.FAILURE}.get(kind, apprise.NotifyType.INFO)
    result = NotifyResult()
    for url in urls:
        shown = redact(url)
        target = apprise.Apprise()
        if not target.add(url):
            logger.warning("notification target %s is not a valid apprise URL", shown)
            result.failed.append(shown)
            continue
        for attempt in range(retries + 1):
            if target.notify(title=title, body=body, notify_type=notify_type):
                result.delivered.append(shown)
                break
            if attempt < retries:
                time.sleep(retry_delay_s * (attempt + 1))
        else:
            logger.warning("notification to %s failed after %d attempts: %s", shown, retries + 1, title)
            result.failed.append(shown)
    return result

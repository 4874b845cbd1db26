"""Notifications through apprise: one call per event, to the farm file's URLs.

A failing target is logged and retried a few times; it never raises into the caller, so a
notification can never fail a failover. Messages pass through ``redact`` first.

Secrets: a target is named anywhere (logs, artifacts, exception texts, ``status``) only by
``redact_target`` (apprise's own privacy form of the URL, which knows where each service keeps its
token); the raw URL's secret parts are remembered when a target is resolved and ``redact`` removes
them from any text, apprise's own log records included. Farm-file entries may be references,
``{env: NAME}`` or ``{secret: BLOCK}``, resolved only when a notification is sent (``resolve_targets``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

logger = logging.getLogger(__name__)

NotifyEntry = str | Mapping[str, str]   # an apprise URL, {"env": NAME} or {"secret": BLOCK}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,31})://")
_URL_IN_TEXT_RE = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]{0,31})://[^\s'\"<>`]+")
_SECRET_RE = re.compile(r"(?i)(password|passwd|pwd|secret|token)(\s*[=:]\s*)(\S+)")
_URL_CRED_RE = re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]+):([^@\s/]+)@", re.IGNORECASE)
_known_secrets: set[str] = set()
MIN_SECRET_LEN = 6   # shorter pieces ("mode", "json") are words every message may use, not tokens
_known_lock = threading.Lock()
_quiet = threading.local()   # set while apprise parses a URL: its log records then carry the raw URL


def redact_target(target: NotifyEntry) -> str:
    """How a notification target is shown anywhere: apprise's privacy form of the URL, never the raw string.

    A reference is shown as the reference (``{env: NAME}``); a URL apprise cannot read as its scheme only.
    The parts of the URL the privacy form hides are remembered: ``redact`` removes them from any text.
    """
    if isinstance(target, Mapping):
        return ", ".join(f"{{{k}: {v}}}" for k, v in target.items())
    plugin = _instantiate(target)
    if plugin is None:
        scheme = _SCHEME_RE.match(target)
        return f"{scheme.group(1).lower()}://***" if scheme else "***"
    shown = _mask_query(str(plugin.url(privacy=True)))
    secrets = _url_secrets(target, shown)
    remember_secrets(secrets)
    return _replace_secrets(shown, secrets)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """The one redaction of any text that leaves the process (log line, artifact, notification, exception text).

    Every apprise URL in it becomes its privacy form (``redact_target``); known secrets (``secrets``, and every
    secret part of a notification URL seen so far) and ``password=...`` / ``user:pass@`` patterns become ``***``.
    """
    if "://" in text:
        text = _URL_IN_TEXT_RE.sub(_redact_url_match, text)
    return _scrub(text, secrets)


def _redact_url_match(match: re.Match[str]) -> str:
    return redact_target(match.group(0)) if match.group(1).lower() in _apprise_schemes() else match.group(0)


def _scrub(text: str, secrets: Iterable[str] = ()) -> str:
    with _known_lock:
        known = set(_known_secrets)
    text = _replace_secrets(text, known.union(s for s in secrets if s))
    text = _SECRET_RE.sub(r"\1\2***", text)
    return _URL_CRED_RE.sub(r"\1:***@", text)


_schemes: frozenset[str] | None = None


def _apprise_schemes() -> frozenset[str]:
    global _schemes
    if _schemes is None:
        from apprise.manager_plugins import NotificationManager

        _schemes = frozenset(str(s).lower() for s in NotificationManager().schemas())  # type: ignore[no-untyped-call]
    return _schemes


# apprise's privacy form hides tokens and passwords but shows query arguments as given: HTTP headers
# (``+X-Api-Key=...``) and secret-named arguments are masked here too.
_QUERY_SECRET_RE = re.compile(
    r"([?&](?:\+|%2B)[^=&#]*|[?&][^=&#]*(?:token|key|secret|pass|auth|sig|cred)[^=&#]*)=([^&#]*)", re.IGNORECASE)


def _mask_query(shown: str) -> str:
    return _QUERY_SECRET_RE.sub(lambda m: f"{m.group(1)}=***" if m.group(2) else m.group(0), shown)


@contextmanager
def _apprise_quiet() -> Iterator[None]:
    """apprise's own log records are dropped meanwhile: while it parses a URL they quote the raw URL."""
    install_log_redaction()
    before = getattr(_quiet, "active", False)
    _quiet.active = True
    try:
        yield
    finally:
        _quiet.active = before


def _instantiate(url: str) -> Any:
    """apprise's plugin for ``url`` (None if it cannot read it)."""
    import apprise

    with _apprise_quiet():
        try:
            return apprise.Apprise.instantiate(url, suppress_exceptions=True)
        except Exception:  # noqa: BLE001 - apprise raises anything on odd input; an unreadable URL is shown masked
            return None


def readable_target(url: str) -> bool:
    """Can apprise send to ``url`` (a known service, every part it needs given)?"""
    return _instantiate(url) is not None


def apprise_target(url: str) -> Any:
    """An ``apprise.Apprise`` holding ``url`` (None when apprise cannot read it), parsed without apprise logging
    the raw URL; the URL's secrets are remembered for ``redact`` first."""
    import apprise

    redact_target(url)
    target = apprise.Apprise()
    with _apprise_quiet():
        return target if target.add(url) else None


def _url_secrets(url: str, shown: str) -> set[str]:
    """The parts of a raw URL that its privacy form hides (tokens, passwords, webhook ids)."""
    _, _, rest = url.partition("://")
    rest = re.sub(r"(^|[?&;])[^=&;?#]*=", r"\1", rest)   # query values only: parameter names are no secrets
    pieces = set(re.split(r"[/:@?&=#,;+ ]+", rest)) | set(re.split(r"[/:@?&=#,;+ ]+", unquote(rest)))
    return {p for p in pieces if len(p) >= MIN_SECRET_LEN and p not in shown}


def remember_secrets(secrets: Iterable[str]) -> None:
    """Secrets ``redact`` removes from every text from now on (this process)."""
    with _known_lock:
        _known_secrets.update(s for s in secrets if s)


def _replace_secrets(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


@dataclass
class Resolved:
    """Notify entries resolved to apprise URLs (kept out of sight), with why some could not be."""

    urls: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def resolve_targets(entries: Iterable[NotifyEntry], *, secret_loader: Callable[[str], str] | None = None,
                    environ: Mapping[str, str] | None = None) -> Resolved:
    """The URLs of the farm file's notify entries: plain URLs as they are, ``{env: NAME}`` from the
    environment, ``{secret: BLOCK}`` through ``secret_loader`` (a Prefect Secret block); read now, not stored."""
    env = os.environ if environ is None else environ
    out = Resolved()
    for entry in entries:
        if isinstance(entry, str):
            url: str | None = entry
        elif "env" in entry:
            url = env.get(entry["env"]) or None
            if url is None:
                out.problems.append(f"notify {redact_target(entry)}: environment variable {entry['env']} is not set")
        elif "secret" in entry:
            url = None
            if secret_loader is None:
                out.problems.append(f"notify {redact_target(entry)}: Prefect Secret blocks are read only in flows")
            else:
                try:
                    url = str(secret_loader(entry["secret"])) or None
                except Exception as exc:  # noqa: BLE001 - a missing block is reported, never raised into a failover
                    out.problems.append(f"notify {redact_target(entry)}: cannot read the Secret block "
                                        f"({type(exc).__name__})")
        else:
            out.problems.append(f"notify {redact_target(entry)}: not a reference ({{env: NAME}} or {{secret: BLOCK}})")
            continue
        if url is not None:
            redact_target(url)   # remembers its secrets before anything can log it
            out.urls.append(url)
    return out


class RedactingFilter(logging.Filter):
    """On apprise's logger (its debug lines carry full request URLs): remembered secrets become ``***``, and
    records logged while a URL is being parsed (which quote the raw URL) are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_quiet, "active", False):
            return False
        message = record.getMessage()
        cleaned = _scrub(message)
        if "://" in cleaned and _schemes is not None:   # an apprise URL quoted whole: its scheme only
            cleaned = _URL_IN_TEXT_RE.sub(
                lambda m: f"{m.group(1)}://***" if m.group(1).lower() in _schemes else m.group(0), cleaned)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction() -> None:
    """Redact apprise's own log records (its debug lines carry the full request URL); idempotent."""
    for name in ("apprise",):
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())


@dataclass
class NotifyResult:
    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # URLs with credentials redacted

    @property
    def ok(self) -> bool:
        return not self.failed


RETRY_DELAY_S = 1.0   # seconds before the second attempt, twice that before the third


def notify(urls: Sequence[str], title: str, body: str, *, kind: str = "info", retries: int = 2,
           retry_delay_s: float | None = None, secrets: Iterable[str] = ()) -> NotifyResult:
    """Send ``title``/``body`` to every URL; ``kind`` is info | success | warning | failure."""
    import apprise

    retry_delay_s = RETRY_DELAY_S if retry_delay_s is None else retry_delay_s

    install_log_redaction()
    shown_urls = [redact_target(url) for url in urls]   # remembers every URL's secrets first
    secrets = list(secrets)
    title, body = redact(title, secrets), redact(body, secrets)
    notify_type = {"success": apprise.NotifyType.SUCCESS, "warning": apprise.NotifyType.WARNING,
                   "failure": apprise.NotifyType.FAILURE}.get(kind, apprise.NotifyType.INFO)
    result = NotifyResult()
    for url, shown in zip(urls, shown_urls, strict=True):
        target = apprise_target(url)
        if target is None:
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


# --- delivery: one bounded queue and worker thread per target; the caller never waits ------------------

DELIVERY_TIMEOUT_S = 5.0      # per target and attempt: connect and read timeouts of the apprise plugin
DELIVERY_RETRIES = 2          # attempts after the first, 1 s, 2 s apart
QUEUE_SIZE = 200              # messages waiting per target; beyond it the oldest is dropped (and logged)


@dataclass(frozen=True)
class _Message:
    title: str
    body: str
    kind: str


def _notify_type(kind: str) -> Any:
    import apprise

    return {"success": apprise.NotifyType.SUCCESS, "warning": apprise.NotifyType.WARNING,
            "failure": apprise.NotifyType.FAILURE}.get(kind, apprise.NotifyType.INFO)


def deliver(url: str, title: str, body: str, kind: str = "info", *, retries: int = DELIVERY_RETRIES,
            retry_delay_s: float = 1.0, timeout_s: float = DELIVERY_TIMEOUT_S) -> bool:
    """Deliver one message to one target, each attempt bounded by ``timeout_s``; logs once if it never arrives."""
    shown = redact_target(url)
    target = apprise_target(url)      # parsed without apprise logging the raw URL
    if target is None:
        logger.warning("notification target %s is not a valid apprise URL; not sent: %s", shown, title)
        return False
    for plugin in target:
        plugin.socket_connect_timeout = timeout_s
        plugin.socket_read_timeout = timeout_s
    for attempt in range(retries + 1):
        try:
            if target.notify(title=title, body=body, notify_type=_notify_type(kind)):
                return True
        except Exception as exc:  # noqa: BLE001 - a broken plugin is a failed attempt
            logger.debug("notification to %s raised %s", shown, type(exc).__name__)
        if attempt < retries:
            time.sleep(retry_delay_s * (attempt + 1))
    logger.warning("notification to %s undelivered after %d attempts: %s", shown, retries + 1, title)
    return False


class _Lane:
    """The queue and worker thread of one target: a hung target delays only its own messages."""

    def __init__(self, url: str, outbox: Outbox) -> None:
        self.url, self.outbox = url, outbox
        self.queue: queue.Queue[_Message | None] = queue.Queue(maxsize=outbox.queue_size)
        self.busy = False
        self.thread = threading.Thread(target=self._run, name=f"notify {redact_target(url)[:40]}", daemon=True)
        self.thread.start()

    def put(self, message: _Message) -> None:
        while True:
            try:
                self.queue.put_nowait(message)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    dropped = self.queue.get_nowait()
                    self.queue.task_done()
                    if dropped is not None:
                        logger.warning("notification queue of %s full: dropped %r", redact_target(self.url),
                                       dropped.title)

    def _run(self) -> None:
        while True:
            message = self.queue.get()
            try:
                if message is None:
                    return
                self.busy = True
                ok = deliver(self.url, message.title, message.body, message.kind, retries=self.outbox.retries,
                             retry_delay_s=self.outbox.retry_delay_s, timeout_s=self.outbox.timeout_s)
                self.outbox.count(ok)
            finally:
                self.busy = False
                self.queue.task_done()


class Outbox:
    """Notifications sent from worker threads: ``send`` only queues (bounded), never waits for a target."""

    def __init__(self, *, queue_size: int = QUEUE_SIZE, retries: int = DELIVERY_RETRIES, retry_delay_s: float = 1.0,
                 timeout_s: float = DELIVERY_TIMEOUT_S) -> None:
        self.queue_size, self.retries = queue_size, retries
        self.retry_delay_s, self.timeout_s = retry_delay_s, timeout_s
        self.delivered = 0
        self.undelivered = 0
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()

    def send(self, urls: Sequence[str], title: str, body: str, *, kind: str = "info",
             secrets: Iterable[str] = ()) -> None:
        """Queue ``title``/``body`` (redacted) for every URL and return at once."""
        for url in urls:
            redact_target(url)   # remembers every URL's secrets before the texts are redacted
        secrets = list(secrets)
        message = _Message(redact(title, secrets), redact(body, secrets), kind)
        for url in urls:
            with self._lock:
                lane = self._lanes.get(url)
                if lane is None or not lane.thread.is_alive():
                    lane = self._lanes[url] = _Lane(url, self)
            lane.put(message)

    def count(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.delivered += 1
            else:
                self.undelivered += 1

    def pending(self) -> int:
        with self._lock:
            lanes = list(self._lanes.values())
        return sum(lane.queue.qsize() + (1 if lane.busy else 0) for lane in lanes)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait (at most ``timeout_s``) until every queued message was delivered or given up; True if so."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


def warm_up() -> None:
    """Load apprise and its plugins now (seconds on a busy machine), not inside the first notification's caller."""
    import apprise

    apprise.Apprise.instantiate("json://127.0.0.1/", suppress_exceptions=True)


_outbox: Outbox | None = None
_outbox_lock = threading.Lock()


def outbox() -> Outbox:
    """The process-wide outbox; at exit it waits up to 15 s for queued notifications."""
    global _outbox
    with _outbox_lock:
        if _outbox is None:
            _outbox = Outbox()
            atexit.register(_flush_at_exit, _outbox)
        return _outbox


def _flush_at_exit(box: Outbox) -> None:
    if not box.flush(15.0):
        logger.warning("%d notification(s) still undelivered at exit", box.pending())

"""The project's exceptions: one base, specific subclasses, OSError-compatible storage errors."""

from __future__ import annotations

import errno as _errno


class FarmkeeperError(Exception):
    """Base of every error farmkeeper raises on purpose."""


class SpecError(FarmkeeperError, ValueError):
    """A value (size, duration, path list, days list, footage path) does not parse."""


class FarmFileError(FarmkeeperError):
    """The farm file is invalid; ``problems`` holds one ``file:line: field: message`` per finding."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class InventoryError(FarmkeeperError):
    """The inventory does not allow the requested change (unknown id, refused removal...)."""


class NotFoundError(InventoryError, LookupError):
    """A server, camera or hold named by the caller does not exist."""


class StorageError(FarmkeeperError, OSError):
    """An I/O error on a volume, naming server, share and path (never a credential).

    It is an ``OSError`` so callers can test ``errno``; the message reads
    ``\\\\server\\SHARE\\path: what happened``.
    """

    def __init__(
        self,
        err: int,
        message: str,
        *,
        server: str = "",
        share: str = "",
        path: str = "",
        transient: bool = False,
    ) -> None:
        self.server = server
        self.share = share
        self.path = path
        self.transient = transient
        where = location(server, share, path)
        text = f"{where}: {message}" if where else message
        super().__init__(err, text)
        self.message = text

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:  # keep pickling (Prefect results, process pools) working
        return (_rebuild_storage_error, (type(self), self.errno, self.message, self.server, self.share,
                                         self.path, self.transient))


def _rebuild_storage_error(cls: type[StorageError], err: int, message: str, server: str, share: str,
                           path: str, transient: bool) -> StorageError:
    exc = cls.__new__(cls)
    OSError.__init__(exc, err, message)
    exc.server, exc.share, exc.path, exc.transient, exc.message = server, share, path, transient, message
    return exc


def location(server: str, share: str, path: str) -> str:
    """``\\\\server\\SHARE\\path`` with whatever parts are known."""
    if server and share:
        base = f"\\\\{server}\\{share}"
        return f"{base}\\{path.replace('/', chr(92))}" if path else base
    return path or server


class PathEscapeError(StorageError):
    """A path would leave the share root; rejected before any I/O."""

    def __init__(self, path: str, *, server: str = "", share: str = "") -> None:
        super().__init__(_errno.EACCES, f"path escapes the share root: {path!r}", server=server, share=share)


class StorageNotFound(StorageError):
    """The file, folder or share does not exist."""


class StorageExists(StorageError):
    """The file or folder already exists."""


class StoragePermission(StorageError):
    """Access denied (read-only share, wrong ACL)."""


class StorageAuthError(StorageError):
    """Logon failed: wrong user name or password (the password is never in the message)."""


class StorageFull(StorageError):
    """The destination volume has no space left."""


class StorageUnavailable(StorageError):
    """The server does not answer or dropped the connection; transient, so tasks retry it."""

    def __init__(self, message: str, **where: str) -> None:
        super().__init__(_errno.EHOSTUNREACH, message, transient=True, **where)


class VerificationError(StorageError):
    """A copied file does not match its source."""


_TRANSIENT_ERRNOS = frozenset({
    _errno.EAGAIN, _errno.EBUSY, _errno.ETIMEDOUT, _errno.ECONNRESET, _errno.ECONNREFUSED, _errno.ECONNABORTED,
    _errno.EHOSTUNREACH, _errno.EHOSTDOWN, _errno.ENETUNREACH, _errno.ENETDOWN, _errno.EPIPE,
})


def is_transient(exc: BaseException) -> bool:
    """The one retry policy: may the same call succeed if it is simply tried again?

    Yes for a lost or refused connection, a timeout, a busy or unreachable database, and a
    ``StorageError`` whose ``transient`` flag says so (``StorageUnavailable``); no for every other
    project error (a full volume, bad input, a refusal the user has to act on) and for bugs.
    """
    import sqlalchemy.exc as sa_exc

    if isinstance(exc, StorageError):
        return exc.transient
    if isinstance(exc, FarmkeeperError):
        return getattr(exc, "transient", False) is True   # e.g. footage another flow holds for seconds
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.TimeoutError | sa_exc.InterfaceError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    return False

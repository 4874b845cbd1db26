"""A fast, pipelined SMB2/3 request path on top of smbprotocol's connection, session and tree setup.

smbprotocol negotiates, authenticates (NTLM/Kerberos via SPNEGO) and derives the signing and encryption
keys; this module then sends and receives the hot commands (CREATE, CLOSE, READ, WRITE, QUERY_DIRECTORY,
QUERY_INFO, SET_INFO) itself: headers and bodies packed with ``struct``, responses delivered as raw
``memoryview`` slices, many requests in flight per connection, credits requested generously.
Signing and encryption keep working (the same keys and algorithms), so security is not traded for speed.

Because it bypasses smbprotocol's parsers it owns their robustness: every frame and every field a caller
reads is bounds-checked against the frame and the request (``ProtocolError``, which ends the connection);
when the session signs (or encrypts), a reply that is not signed (encrypted) ends the connection too; every
wait, including negotiate, session setup and tree connect, is bounded by the channel's I/O timeout.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import queue
import socket
import struct
import threading
import uuid
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from cryptography.hazmat.primitives import cmac, hashes, hmac
from cryptography.hazmat.primitives.ciphers import aead, algorithms
from smbprotocol.connection import Connection
from smbprotocol.exceptions import SMBException
from smbprotocol.header import SMB2HeaderResponse
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

log = logging.getLogger(__name__)

# commands
NEGOTIATE, SESSION_SETUP, TREE_CONNECT = 0, 1, 3
CREATE, CLOSE, READ, WRITE, QUERY_DIRECTORY, QUERY_INFO, SET_INFO = 5, 6, 8, 9, 0x0E, 0x10, 0x11
# dialects and signing algorithms (MS-SMB2 2.2.3.1.7)
SMB_3_0_0, SMB_3_1_1 = 0x0300, 0x0311
SIGNING_ALGORITHMS = {0: "hmac", 1: "cmac", 2: "gmac"}   # HMAC-SHA256, AES-CMAC, AES-GMAC
# header flags
F_RESPONSE, F_ASYNC, F_RELATED, F_SIGNED, F_DFS = 0x1, 0x2, 0x4, 0x8, 0x10000000
UNSOLICITED_MID = 0xFFFFFFFFFFFFFFFF  # oplock/lease breaks (never requested here)
# status codes
STATUS_SUCCESS = 0
STATUS_PENDING = 0x00000103
STATUS_NO_MORE_FILES = 0x80000006
STATUS_BUFFER_OVERFLOW = 0x80000005
STATUS_END_OF_FILE = 0xC0000011
STATUS_OBJECT_NAME_INVALID = 0xC0000033
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_OBJECT_NAME_COLLISION = 0xC0000035
STATUS_OBJECT_PATH_NOT_FOUND = 0xC000003A
STATUS_ILLEGAL_CHARACTER = 0xC0000161
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_SHARING_VIOLATION = 0xC0000043
STATUS_QUOTA_EXCEEDED = 0xC0000044
STATUS_DELETE_PENDING = 0xC0000056
STATUS_LOGON_FAILURE = 0xC000006D
STATUS_DISK_FULL = 0xC000007F
STATUS_FILE_IS_A_DIRECTORY = 0xC00000BA
STATUS_NETWORK_NAME_DELETED = 0xC00000C9
STATUS_BAD_NETWORK_NAME = 0xC00000CC
STATUS_DIRECTORY_NOT_EMPTY = 0xC0000101
STATUS_NOT_A_DIRECTORY = 0xC0000103
STATUS_USER_SESSION_DELETED = 0xC0000203
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016
STATUS_FILE_CLOSED = 0xC0000128
STATUS_NETWORK_SESSION_EXPIRED = 0xC000035C
STATUS_CONNECTION_LOST = -1  # ours: the connection dropped before the response came

# access masks, create options and dispositions
FILE_READ_DATA, FILE_WRITE_DATA, FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES = 0x1, 0x2, 0x80, 0x100
DELETE, SYNCHRONIZE = 0x10000, 0x100000
FILE_LIST_DIRECTORY = 0x1
FILE_DIRECTORY_FILE, FILE_NON_DIRECTORY_FILE, FILE_DELETE_ON_CLOSE = 0x1, 0x40, 0x1000
FILE_OPEN, FILE_CREATE, FILE_OPEN_IF, FILE_OVERWRITE_IF = 1, 2, 3, 5
SHARE_ALL = 0x7
FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_REPARSE_POINT = 0x10, 0x400

# info types (MS-SMB2 2.2.37) and information classes (MS-FSCC 2.4 file, 2.5 file system)
SMB2_0_INFO_FILE, SMB2_0_INFO_FILESYSTEM = 1, 2
FILE_DIRECTORY_INFORMATION = 0x01
FILE_BASIC_INFORMATION = 0x04
FILE_RENAME_INFORMATION = 0x0A
FILE_END_OF_FILE_INFORMATION = 0x14
FILE_ID_FULL_DIRECTORY_INFORMATION = 0x26
FILE_FS_FULL_SIZE_INFORMATION = 0x07
# request flags and fixed fields
SMB2_RESTART_SCANS = 0x01            # QUERY_DIRECTORY
SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB = 0x01
IMPERSONATION = 2                    # CREATE ImpersonationLevel
OPLOCK_LEVEL_NONE = 0

RELATED_FID = b"\xff" * 16
FILETIME_EPOCH = 116444736000000000

HEADER = 64                                  # every SMB2 message starts with a 64-byte header
_SMB2_MAGIC = 0x424D53FE                     # b"\xfeSMB" read as little-endian u32
_HDR = struct.Struct("<4sHHIHHIIQIIQ16s")
_HDR_IN = struct.Struct("<IH2xIHHIIQ")       # protocol, structure size, status, command, credits, flags, next, mid
# requests: (StructureSize, ...) as MS-SMB2 2.2 lays them out; a variable part follows at the given offset
_CREATE = struct.Struct("<HBBIQQIIIIIHHII")  # 57; name at HEADER + 56
_CLOSE = struct.Struct("<HHI16s")            # 24
_READ = struct.Struct("<HBBIQ16sIIIHHB")     # 49; Padding asks for the data at READ_DATA_OFFSET
_WRITE = struct.Struct("<HHIQ16sIIHHI")      # 49; data at HEADER + 48
_QDIR = struct.Struct("<HBBI16sHHI")         # 33; pattern at HEADER + 32
_QINFO = struct.Struct("<HBBIHHIII16sB")     # 41
_SETINFO = struct.Struct("<HBBIHHI16s")      # 33; buffer at HEADER + 32
_CREATE_NAME_OFFSET = HEADER + 56
_WRITE_DATA_OFFSET = HEADER + 48
_QDIR_NAME_OFFSET = _SETINFO_BUFFER_OFFSET = HEADER + 32
# responses: the fixed part after the header, and where a variable part may start at the earliest
_CREATE_REPLY = struct.Struct("<24xQ16xQI4x16s")   # last write, end of file, attributes, file id (88 bytes)
_CREATE_REPLY_SIZE = 88
_CLOSE_REPLY = struct.Struct("<24xQ16xQ")          # last write, end of file (60 bytes)
_CLOSE_REPLY_SIZE = 60
_READ_REPLY = struct.Struct("<2xB1xI")             # data offset, data length (16 bytes)
READ_DATA_OFFSET = HEADER + 16
_WRITE_REPLY = struct.Struct("<4xI")               # count (16 bytes)
_WRITE_REPLY_SIZE = 16
_OUT_REPLY = struct.Struct("<2xHI")                # QUERY_DIRECTORY / QUERY_INFO: buffer offset, length (8 bytes)
_OUT_BUFFER_OFFSET = HEADER + 8
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_LEN = struct.Struct(">I")

Message = tuple[int, bytes, int]  # command, body, credit charge
Reply = tuple[Any, int, Any]  # tag (default: message id), status, memoryview of the response (header first)

SMBPROTOCOL_SERIES = "1.17"  # the minor version whose private internals _FastConnection relies on (pyproject pins it)


class ConnectionLost(Exception):
    """The SMB connection dropped or timed out (mapped to StorageUnavailable by the caller)."""


class ProtocolError(ConnectionLost):
    """A reply that breaks MS-SMB2: malformed, out of bounds, unsigned or unencrypted when it must not be.

    The connection is dropped; nothing from it reaches the caller.
    """


class Refused(ConnectionLost):
    """The server refused this client (NetBIOS negative session response, e.g. Samba's ``hosts allow``)."""


def to_filetime(ts: float) -> int:
    return int(round(ts * 10_000_000)) + FILETIME_EPOCH


def from_filetime(ft: int) -> float:
    return (ft - FILETIME_EPOCH) / 10_000_000 if ft else 0.0


def _charge(size: int) -> int:
    return max(1, (size - 1) // 65536 + 1)


def encode_path(path: str) -> bytes:
    """A share-relative path as the UTF-16 the server expects (lone surrogates kept: names read back round-trip)."""
    return path.replace("/", "\\").encode("utf-16-le", "surrogatepass")


# --- requests -------------------------------------------------------------------------------------------

def create(path: str, access: int, disposition: int, options: int, attributes: int = 0) -> Message:
    name = encode_path(path)
    body = _CREATE.pack(57, 0, OPLOCK_LEVEL_NONE, IMPERSONATION, 0, 0, access, attributes, SHARE_ALL, disposition,
                        options, _CREATE_NAME_OFFSET, len(name), 0, 0) + (name or b"\x00")
    return CREATE, body, 1


def close(fid: bytes = RELATED_FID, postquery: bool = False) -> Message:
    return CLOSE, _CLOSE.pack(24, SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB if postquery else 0, 0, fid), 1


def read(fid: bytes, offset: int, length: int) -> Message:
    return READ, _READ.pack(49, READ_DATA_OFFSET, 0, length, offset, fid, 0, 0, 0, 0, 0, 0), _charge(length)


def write(fid: bytes, offset: int, data: bytes | memoryview) -> Message:
    """A WRITE whose payload is kept apart (``Payload``): an unsigned single request is sent without copying it."""
    return WRITE, Payload(_WRITE.pack(49, _WRITE_DATA_OFFSET, len(data), offset, fid, 0, 0, 0, 0, 0), data), \
        _charge(len(data))


class Payload(bytes):
    """A request body (the fixed part, as bytes) followed by a large payload sent as is."""

    data: bytes | memoryview

    def __new__(cls, fixed: bytes, data: bytes | memoryview) -> Payload:
        self = super().__new__(cls, fixed)
        self.data = data
        return self


def query_directory(fid: bytes, out_len: int, restart: bool,
                    info_class: int = FILE_ID_FULL_DIRECTORY_INFORMATION) -> Message:
    pattern = "*".encode("utf-16-le")
    body = _QDIR.pack(33, info_class, SMB2_RESTART_SCANS if restart else 0, 0, fid, _QDIR_NAME_OFFSET, len(pattern),
                      out_len) + pattern
    return QUERY_DIRECTORY, body, _charge(out_len)


def query_info(fid: bytes, info_type: int, info_class: int, out_len: int = 4096) -> Message:
    return QUERY_INFO, _QINFO.pack(41, info_type, info_class, out_len, 0, 0, 0, 0, 0, fid, 0), _charge(out_len)


def set_info(fid: bytes, info_class: int, data: bytes, info_type: int = SMB2_0_INFO_FILE) -> Message:
    return SET_INFO, _SETINFO.pack(33, info_type, info_class, len(data), _SETINFO_BUFFER_OFFSET, 0, 0, fid) + data, 1


def basic_info(mtime: float) -> bytes:
    """FileBasicInformation setting only LastWriteTime (and LastAccessTime to the same)."""
    ft = to_filetime(mtime)
    return struct.pack("<QQQQII", 0, ft, ft, 0, 0, 0)


def rename_info(target: str, replace: bool = False) -> bytes:
    name = encode_path(target)
    return struct.pack("<B7xQI", 1 if replace else 0, 0, len(name)) + name


# --- replies: every field read is checked against the frame and the request --------------------------------

def _short(mv: Any, size: int, what: str) -> None:
    if len(mv) < HEADER + size:
        raise ProtocolError(f"malformed reply: {what} reply of {len(mv)} bytes, shorter than its {HEADER + size}")


def create_reply(mv: Any) -> tuple[bytes, int, float, int]:
    """(file id, end of file, last write time, attributes) of a successful CREATE response."""
    if len(mv) < HEADER + _CREATE_REPLY_SIZE:
        _short(mv, _CREATE_REPLY_SIZE, "CREATE")
    last_write, eof, attrs, fid = _CREATE_REPLY.unpack_from(mv, HEADER)
    return fid, eof, from_filetime(last_write), attrs


def create_fid(mv: Any) -> bytes:
    return create_reply(mv)[0]


def create_stat(mv: Any) -> tuple[int, float, int]:
    """(end of file, last write time, attributes) from a CREATE response."""
    _fid, eof, mtime, attrs = create_reply(mv)
    return eof, mtime, attrs


def close_stat(mv: Any) -> tuple[int, float]:
    """(end of file, last write time) from a CLOSE response sent with postquery."""
    if len(mv) < HEADER + _CLOSE_REPLY_SIZE:
        _short(mv, _CLOSE_REPLY_SIZE, "CLOSE")
    last_write, eof = _CLOSE_REPLY.unpack_from(mv, HEADER)
    return eof, from_filetime(last_write)


def read_data(mv: Any, asked: int) -> memoryview:
    """The data of a READ response: after the fixed part, inside the frame, no more than ``asked`` bytes."""
    n = len(mv)
    if n < READ_DATA_OFFSET:
        _short(mv, READ_DATA_OFFSET - HEADER, "READ")
    offset, length = _READ_REPLY.unpack_from(mv, HEADER)
    if length > asked or (length and (offset < READ_DATA_OFFSET or offset + length > n)):
        raise ProtocolError(f"malformed reply: READ data at {offset} of {length} bytes (asked {asked}) is outside "
                            f"the {n}-byte reply")
    return memoryview(mv)[offset:offset + length]


def write_count(mv: Any, asked: int) -> int:
    """How many bytes a WRITE response says were written (never more than were sent)."""
    if len(mv) < HEADER + _WRITE_REPLY_SIZE:
        _short(mv, _WRITE_REPLY_SIZE, "WRITE")
    count: int = _WRITE_REPLY.unpack_from(mv, HEADER)[0]
    if count > asked:
        raise ProtocolError(f"malformed reply: WRITE of {asked} bytes answered with a count of {count}")
    return count


def out_buffer(mv: Any, asked: int) -> memoryview:
    """The output buffer of a QUERY_DIRECTORY or QUERY_INFO response (inside the frame, at most ``asked``)."""
    n = len(mv)
    if n < _OUT_BUFFER_OFFSET:
        _short(mv, _OUT_BUFFER_OFFSET - HEADER, "QUERY")
    offset, length = _OUT_REPLY.unpack_from(mv, HEADER)
    if not length:
        return memoryview(b"")
    if length > asked or offset < _OUT_BUFFER_OFFSET or offset + length > n:
        raise ProtocolError(f"malformed reply: output buffer at {offset} of {length} bytes (asked {asked}) is "
                            f"outside the {n}-byte reply")
    return memoryview(mv)[offset:offset + length]


_DIRINFO = struct.Struct("<I4x8x8xQ8xQ8xII4x4xQ")  # FileIdFullDirectoryInformation: next, last write, end of
_DIRINFO_SIZE = _DIRINFO.size                      # file, attributes, name length, file id; the name follows
Folder = tuple[str, int, int]  # a sub-folder met in a listing: name, file id, attributes


def parse_directory(buf: memoryview, files: list[tuple[str, int, float]], dirs: list[Folder],
                    dots: dict[str, int]) -> int:
    """Parse a FileIdFullDirectoryInformation chain into files, sub-folders and the ids of ``.`` and ``..``.

    Returns the number of entries. Entries must lie inside ``buf``, each strictly after the previous one's
    name; names are UTF-16 (lone surrogates kept, as NTFS allows them) without ``/``, ``\\`` or NUL.
    """
    off = 0
    unpack = _DIRINFO.unpack_from
    n = len(buf)
    count = 0
    while True:
        if off + _DIRINFO_SIZE > n:
            raise ProtocolError(f"malformed reply: directory entry at {off} overruns the {n}-byte listing")
        nxt, last_write, eof, attrs, name_len, file_id = unpack(buf, off)
        start = off + _DIRINFO_SIZE
        end = start + name_len
        if end > n or not name_len or name_len & 1:
            raise ProtocolError(f"malformed reply: directory entry at {off} has a name of {name_len} bytes "
                                f"(listing of {n} bytes)")
        name = str(buf[start:end], "utf-16-le", "surrogatepass")
        if "/" in name or "\\" in name or "\x00" in name:
            raise ProtocolError(f"malformed reply: directory entry name {name!r} contains a path separator")
        count += 1
        if attrs & FILE_ATTRIBUTE_DIRECTORY:
            if name == "." or name == "..":
                dots[name] = file_id
            else:
                dirs.append((name, file_id, attrs))
        else:
            files.append((name, eof, (last_write - FILETIME_EPOCH) / 10_000_000))
        if not nxt:
            return count
        if nxt < end - off:
            raise ProtocolError(f"malformed reply: directory entry at {off} points back into itself "
                                f"(next entry offset {nxt})")
        off += nxt


# --- the connection ---------------------------------------------------------------------------------------

def smbprotocol_problems() -> list[str]:
    """What of smbprotocol's private internals ``_FastConnection`` uses is missing or changed (empty: all there)."""
    from smbprotocol.connection import Request, SMB2TransformHeader
    from smbprotocol.transport import Tcp

    problems: list[str] = []
    version = metadata.version("smbprotocol")
    if not version.startswith(SMBPROTOCOL_SERIES + "."):
        problems.append(f"smbprotocol {version} is installed; farmkeeper's SMB path is built on {SMBPROTOCOL_SERIES}.x")
    conn = Connection(uuid.uuid4(), "127.0.0.1", 445)
    for attr in ("sequence_window", "sequence_lock", "outstanding_requests", "session_table", "_t_exc",
                 "preauth_integrity_hash_value", "preauth_integrity_session_hash_value", "require_signing",
                 "transport", "server_name", "dialect", "signing_algorithm_id", "supports_multi_credit",
                 "max_read_size", "max_write_size", "max_transact_size"):
        if not hasattr(conn, attr):
            problems.append(f"Connection.{attr} is gone")
    if set(getattr(conn, "sequence_window", {})) != {"low", "high"}:
        problems.append("Connection.sequence_window is no longer {'low', 'high'}")
    for method, params in (("_decrypt", ["message"]), ("_encrypt", ["b_data", "session"]),
                           ("verify_signature", ["header", "session_id", "force"]),
                           ("receive", ["request", "wait", "timeout", "resolve_symlinks"]),
                           ("_process_message_thread", []), ("disconnect", ["close", "timeout"])):
        fn = getattr(Connection, method, None)
        if fn is None or list(inspect.signature(fn).parameters)[1:] != params:
            problems.append(f"Connection.{method}({', '.join(params)}) changed")
    tcp = Tcp("127.0.0.1", 445, 1)
    for attr in ("_sock", "_sock_lock", "connected"):
        if not hasattr(tcp, attr):
            problems.append(f"transport.Tcp.{attr} is gone")
    init = inspect.getsource(Request.__init__)
    for attr in ("response_event", "response_event_lock", "async_id", "response", "session_id"):
        if f"self.{attr} =" not in init:
            problems.append(f"Request.{attr} is gone")
    if not hasattr(SMB2TransformHeader, "unpack"):
        problems.append("SMB2TransformHeader.unpack is gone")
    for cls, attrs in ((Session, ("signing_key", "signing_required", "encrypt_data", "session_id")),
                       (TreeConnect, ("tree_connect_id", "encrypt_data", "is_dfs_share"))):
        text = inspect.getsource(cls)
        problems += [f"{cls.__name__}.{a} is gone" for a in attrs if f"self.{a} =" not in text]
    return problems


class _FastConnection(Connection):  # type: ignore[misc]
    """smbprotocol's Connection with its receive loop replaced: setup messages go the original way (checked
    for signing and encryption as the session requires), our fast requests get raw responses on their queues."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast: dict[int, tuple[queue.SimpleQueue[Reply] | None, Any, int]] = {}  # mid → (queue, tag, command)
        self.credit_cond = threading.Condition(self.sequence_lock)
        self.dead = False
        self.failure: ConnectionLost | None = None  # why the receive loop ended
        self.verifier: Any = None  # set by Channel once the session key is known
        self.signed_only = False   # every reply (but negotiate, session setup, interim) must be signed
        self.encrypted_only = False
        self.io_timeout: float | None = None

    def receive(self, request: Any, wait: bool = True, timeout: float | None = None,
                resolve_symlinks: bool = True) -> Any:
        """smbprotocol's receive, never untimed: session setup and tree connect wait at most ``io_timeout``."""
        return super().receive(request, wait=wait, timeout=self.io_timeout if timeout is None else timeout,
                               resolve_symlinks=resolve_symlinks)

    def _process_message_thread(self) -> None:
        sock = self.transport._sock
        pend = bytearray()
        host = self.server_name
        try:
            while True:
                frame = _read_frame(sock, pend, host)
                if frame is None:
                    raise ConnectionLost(f"{host} closed the connection")
                encrypted = _U32.unpack_from(frame, 0)[0] == 0x424D53FD   # b"\xfdSMB": a transform header
                if encrypted:
                    frame = self._decrypt_frame(frame)
                elif self.encrypted_only:
                    raise ProtocolError(f"unencrypted reply from {host} on an encrypted session")
                off = 0
                n = len(frame)
                while True:
                    if n - off < HEADER:
                        raise ProtocolError(f"malformed reply: a message of {n - off} bytes is shorter than a header")
                    proto, size, status, command, credits, flags, next_cmd, mid = _HDR_IN.unpack_from(frame, off)
                    if proto != _SMB2_MAGIC or size != HEADER or not flags & F_RESPONSE:
                        raise ProtocolError("malformed reply: not an SMB2 response header")
                    if next_cmd:
                        if next_cmd < HEADER or next_cmd & 7 or next_cmd > n - off - HEADER:
                            raise ProtocolError(f"malformed reply: next command offset {next_cmd} at {off} is "
                                                f"outside the {n}-byte frame")
                        end = off + next_cmd
                    else:
                        end = n
                    self._dispatch(frame, off, end, encrypted, status, command, credits, flags, mid)
                    if not next_cmd:
                        break
                    off = end
        except Exception as exc:  # same contract as smbprotocol: the caller sees it on its next call
            if not isinstance(exc, ConnectionLost):
                exc = (ConnectionLost(f"connection to {host} failed: {exc}") if isinstance(exc, OSError) or self.dead
                       else ProtocolError(f"malformed reply from {host}: {type(exc).__name__}: {exc}"))
            if not self.dead:
                log.debug("SMB receive loop for %s ended: %s", host, exc)
            if self.failure is None:
                self.failure = exc
            self._t_exc = self.failure
            with contextlib.suppress(Exception):  # already broken
                self.disconnect(False)
        finally:
            self.dead = True
            with self.credit_cond:
                self.credit_cond.notify_all()
            for request in list(self.outstanding_requests.values()):
                request.response_event.set()
            for q, tag, _ in list(self.fast.values()):
                if q is not None:
                    q.put((tag, STATUS_CONNECTION_LOST, None))
            self.fast.clear()

    def _decrypt_frame(self, frame: bytearray) -> bytearray:
        from smbprotocol.connection import SMB2TransformHeader

        try:
            header = SMB2TransformHeader()
            header.unpack(bytes(frame))
            return bytearray(self._decrypt(header))
        except Exception as exc:
            raise ProtocolError(f"encrypted reply from {self.server_name} does not decrypt "
                                f"({type(exc).__name__})") from None

    def _dispatch(self, frame: bytearray, off: int, end: int, encrypted: bool, status: int, command: int,
                  credits: int, flags: int, mid: int) -> None:
        with self.credit_cond:
            if credits == 0 and not self.supports_multi_credit:
                credits = 1
            self.sequence_window["high"] += credits
            self.credit_cond.notify_all()
        entry = self.fast.get(mid)
        if entry is not None:
            if status == STATUS_PENDING and flags & F_ASYNC:
                return  # interim response; the final one follows
            if command != entry[2]:
                raise ProtocolError(f"malformed reply: message {mid} answered with command {command}, "
                                    f"not {entry[2]}")
            if not encrypted:
                if flags & F_SIGNED:
                    if self.verifier is not None:
                        self.verifier(frame, off, end, mid, command)
                elif self.signed_only:
                    raise ProtocolError(f"unsigned reply to message {mid} (command {command}) from "
                                        f"{self.server_name} while the session signs")
            del self.fast[mid]
            q, tag, _ = entry
            if q is not None:
                q.put((tag, status, memoryview(frame)[off:end]))
            return
        if mid == UNSOLICITED_MID:
            return  # an oplock or lease break: never asked for, nothing waits for it
        # a message smbprotocol sent itself (negotiate, session setup, tree connect, logoff)
        request = self.outstanding_requests.get(mid)
        if request is None:
            raise ProtocolError(f"malformed reply: message {mid} was never sent")
        b_header = bytes(frame[off:end])
        header = SMB2HeaderResponse()
        header.unpack(b_header)
        session_id = header["session_id"].get_value() if command == SESSION_SETUP else request.session_id
        if not encrypted:
            if (self.signed_only and not flags & F_SIGNED and status != STATUS_PENDING
                    and command not in (NEGOTIATE, SESSION_SETUP)):
                raise ProtocolError(f"unsigned reply to message {mid} (command {command}) from "
                                    f"{self.server_name} while the session signs")
            try:
                self.verify_signature(header, session_id)
            except SMBException as exc:
                raise ProtocolError(f"reply signature from {self.server_name} does not verify: {exc}") from None
        if command == NEGOTIATE:
            self.preauth_integrity_hash_value.append(b_header)
        elif command == SESSION_SETUP and status == STATUS_MORE_PROCESSING_REQUIRED:
            self.preauth_integrity_session_hash_value[mid].append(b_header)
        with request.response_event_lock:
            if flags & F_ASYNC:
                request.async_id = b_header[32:40]
            request.response = header
            request.response_event.set()


_NETBIOS_SESSION_MESSAGE, _NETBIOS_NEGATIVE_RESPONSE, _NETBIOS_KEEPALIVE = 0x00, 0x83, 0x85


def _read_frame(sock: socket.socket, pend: bytearray, host: str) -> bytearray | None:
    """The next SMB2 frame (direct TCP: a NetBIOS session message with a 24-bit length), ``None`` at EOF."""
    while True:
        while len(pend) < 4:
            chunk = sock.recv(262144)
            if not chunk:
                return None
            pend += chunk
        kind = pend[0]
        size = _LEN.unpack_from(pend, 0)[0] & 0xFFFFFF
        if kind == _NETBIOS_SESSION_MESSAGE:
            break
        if kind == _NETBIOS_KEEPALIVE and size == 0:
            del pend[:4]
            continue
        if kind == _NETBIOS_NEGATIVE_RESPONSE:
            code = f" 0x{pend[4]:02x}" if len(pend) > 4 else ""
            raise Refused(f"the server {host} refused this client (NetBIOS negative session response{code}); "
                          "check the server's 'hosts allow' / firewall for this machine's address")
        raise ProtocolError(f"malformed reply from {host}: not an SMB2 frame (NetBIOS message type 0x{kind:02x})")
    if size < HEADER:
        raise ProtocolError(f"malformed reply from {host}: a frame of {size} bytes is shorter than a header")
    total = 4 + size
    if len(pend) >= total:
        frame = pend[4:total]
        del pend[:total]
        return frame
    frame = bytearray(size)
    have = len(pend) - 4
    frame[:have] = pend[4:]
    del pend[:]
    view = memoryview(frame)
    while have < size:
        n = sock.recv_into(view[have:])
        if n == 0:
            return None
        have += n
    return frame


class _Signer:
    """Signs requests and verifies responses with the session's key and negotiated algorithm."""

    def __init__(self, key: bytes, algorithm: str) -> None:
        self.key = key
        self.algorithm = algorithm
        self.gmac = aead.AESGCM(key) if algorithm == "gmac" else None

    def sign(self, msg: bytearray | memoryview, mid: int, response: bool, command: int) -> bytes:
        if self.gmac is not None:
            nonce = mid.to_bytes(8, "little") + (1 if response else 0).to_bytes(4, "little")
            return self.gmac.encrypt(nonce, b"", msg)   # bytes-like: no copy of a large message
        if self.algorithm == "cmac":
            c = cmac.CMAC(algorithms.AES(self.key))
            c.update(bytes(msg))
            return c.finalize()
        h = hmac.HMAC(self.key, hashes.SHA256())
        h.update(msg)
        return h.finalize()[:16]

    def verify(self, frame: bytearray, off: int, end: int, mid: int, command: int) -> None:
        expected = bytes(frame[off + 48:off + 64])
        frame[off + 48:off + 64] = bytes(16)
        actual = self.sign(memoryview(frame)[off:end], mid, True, command)
        if actual != expected:
            raise ProtocolError(f"response signature of message {mid} does not verify")


def _send_timeout(sock: socket.socket, seconds: float) -> None:
    """Bound blocking sends too (a server that stops reading must not hang a writer)."""
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", whole, int((seconds - whole) * 1e6)))


class Channel:
    """One SMB connection, session and tree connect to a share, with a pipelined request API.

    Thread-safe for sending; each reply goes to the queue given at submit time. Every wait is bounded by
    ``timeout`` (no reply for that long closes the connection).
    """

    def __init__(self, host: str, port: int, share: str, username: str, password: str, *,
                 require_signing: bool = True, encrypt: bool = False, timeout: float = 30.0) -> None:
        self.host = host
        self.timeout = timeout
        self.conn = _FastConnection(uuid.uuid4(), host, port, require_signing=require_signing)
        self.conn.io_timeout = timeout
        try:
            self.conn.connect(timeout=timeout)
            _send_timeout(self.conn.transport._sock, timeout)
            self.session = Session(self.conn, username, password, require_encryption=encrypt)
            self.session.connect()
            signing = bool(self.session.signing_required)
            key = self.session.signing_key
            self.conn.encrypted_only = bool(self.session.encrypt_data)
            if signing and not key and not self.conn.encrypted_only:
                raise ProtocolError(f"{host} gave no signing key although signing is required")
            self.tree = TreeConnect(self.session, rf"\\{host}\{share}")
            if not self.conn.encrypted_only and (signing or self.conn.dialect >= SMB_3_1_1):
                self.session.signing_required = True  # SMB 3.1.1 requires a signed TREE_CONNECT
                self.conn.signed_only = bool(key)       # ... and so its signed reply
            self.tree.connect()
            self.session.signing_required = signing
        except (ConnectionLost, SMBException, OSError):
            self.close()
            raise
        except Exception as exc:  # smbprotocol parsing a malformed setup reply
            self.close()
            raise ProtocolError(f"malformed reply from {host} during connection setup: "
                                f"{type(exc).__name__}: {exc}") from None
        except BaseException:
            self.close()
            raise
        self.sid = self.session.session_id
        self.tid = self.tree.tree_connect_id
        self.encrypt = bool(self.session.encrypt_data or self.tree.encrypt_data)
        self.signer: _Signer | None = None
        if self.session.signing_required and self.session.signing_key and not self.encrypt:
            self.signer = _Signer(self.session.signing_key, self._algorithm())
        if self.session.signing_key:
            self.conn.verifier = _Signer(self.session.signing_key, self._algorithm()).verify
        self.conn.signed_only = self.signer is not None
        self.conn.encrypted_only = self.encrypt
        self.max_read = int(self.conn.max_read_size)
        self.max_write = int(self.conn.max_write_size)
        self.max_transact = int(self.conn.max_transact_size)
        self.multi_credit = bool(self.conn.supports_multi_credit)
        self.dfs = bool(self.tree.is_dfs_share)
        self._send_lock = threading.Lock()

    def _algorithm(self) -> str:
        if self.conn.dialect >= SMB_3_1_1 and self.conn.signing_algorithm_id is not None:
            return SIGNING_ALGORITHMS[int(self.conn.signing_algorithm_id)]
        return "cmac" if self.conn.dialect >= SMB_3_0_0 else "hmac"

    @property
    def signing(self) -> bool:
        return self.signer is not None

    @property
    def alive(self) -> bool:
        return not self.conn.dead and self.conn.transport.connected

    def _lost(self) -> ConnectionLost:
        return self.conn.failure or ConnectionLost(f"connection to {self.host} was lost")

    def _stalled(self) -> ConnectionLost:
        exc = ConnectionLost(f"no answer from {self.host} within {self.timeout:g} s")
        if self.conn.failure is None:
            self.conn.failure = exc
        self.close()
        return exc

    def submit(self, messages: Sequence[Message], q: queue.SimpleQueue[Reply] | None,
               related: bool = False, tags: Sequence[Any] | None = None) -> list[int]:
        """Send messages (as one compound if several) and return their message ids.

        Each reply goes to ``q`` as ``(tag, status, response)``; the tag defaults to the message id.
        """
        conn = self.conn
        count = len(messages)
        charges = [m[2] if self.multi_credit else 1 for m in messages]
        total = sum(charges)
        parts: list[bytes | bytearray] = []
        mids: list[int] = []
        with self._send_lock:
            with conn.credit_cond:
                window = conn.sequence_window
                starved = False
                while window["high"] - window["low"] < total:
                    if conn.dead:
                        raise self._lost()
                    if not conn.credit_cond.wait(self.timeout):
                        starved = True
                        break
                if not starved:
                    first = window["low"]
                    window["low"] += total
                    available = window["high"] - window["low"]
            if starved:
                exc = ConnectionLost(f"no SMB credits granted by {self.host} within {self.timeout:g} s")
                conn.failure = conn.failure or exc
                self.close()
                raise exc
            if conn.dead:
                raise self._lost()
            mid = first
            tail: bytes | memoryview = b""    # a single unsigned WRITE's payload, sent without a copy
            for i, (command, body, _) in enumerate(messages):
                charge = charges[i]
                payload: bytes | memoryview = b""   # copied once, into the message (signed, compound, encrypted)
                if isinstance(body, Payload):
                    if count == 1 and self.signer is None and not self.encrypt:
                        tail = body.data
                    else:
                        payload = body.data
                length = HEADER + len(body) + len(payload) + len(tail)
                if i < count - 1:
                    pad = (8 - length % 8) % 8
                    next_cmd = length + pad
                else:
                    pad = next_cmd = 0
                flags = (F_RELATED if related and i else 0) | (F_DFS if self.dfs else 0)
                if self.signer is not None:
                    flags |= F_SIGNED
                want = charge + (64 if available < 4096 else 0)
                msg = bytearray(_HDR.pack(b"\xfeSMB", HEADER, charge if self.multi_credit else 0, 0, command, want,
                                          flags, next_cmd, mid, 0, self.tid, self.sid, bytes(16)))
                msg += body
                if payload:
                    msg += payload
                if pad:
                    msg += bytes(pad)
                if self.signer is not None:
                    msg[48:64] = self.signer.sign(msg, mid, False, command)
                parts.append(msg)
                conn.fast[mid] = (q, mid if tags is None else tags[i], command)
                mids.append(mid)
                mid += charge
            data = b"".join(parts) if count > 1 else parts[0]
            if self.encrypt:
                data = conn._encrypt(bytes(data), self.session).pack()
            try:
                with conn.transport._sock_lock:
                    size = len(data) + len(tail)
                    conn.transport._sock.sendall(_LEN.pack(size) + data if len(data) < 65536 else _LEN.pack(size))
                    if len(data) >= 65536:
                        conn.transport._sock.sendall(data)
                    if tail:
                        conn.transport._sock.sendall(tail)
            except OSError as exc:
                for m in mids:
                    conn.fast.pop(m, None)
                exc2 = ConnectionLost(f"sending to {self.host} failed: {exc}")
                conn.failure = conn.failure or exc2
                self.close()
                raise conn.failure from None   # the first cause: the receive loop may have closed it (bad reply)
        return mids

    def wait(self, q: queue.SimpleQueue[Reply], n: int) -> dict[Any, tuple[int, Any]]:
        """Collect ``n`` replies from ``q`` (raises ``ConnectionLost`` if the connection drops or stalls)."""
        out: dict[Any, tuple[int, Any]] = {}
        for _ in range(n):
            tag, status, mv = self.get(q)
            out[tag] = (status, mv)
        return out

    def call(self, messages: Sequence[Message], related: bool = False) -> list[tuple[int, Any]]:
        """Send and wait: one (status, response) per message, in order."""
        q: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        mids = self.submit(messages, q, related)
        got = self.wait(q, len(mids))
        return [got[m] for m in mids]

    def get(self, q: queue.SimpleQueue[Reply]) -> Reply:
        """One reply from ``q`` (raises ``ConnectionLost`` on a dropped connection or no reply within the timeout)."""
        try:
            reply = q.get(timeout=self.timeout)
        except queue.Empty:
            raise self._stalled() from None
        if reply[1] == STATUS_CONNECTION_LOST:
            raise self._lost()
        return reply

    def close(self) -> None:
        conn = self.conn
        conn.dead = True
        try:
            if conn.transport is not None and conn.transport.connected:
                conn.disconnect(False)
        except Exception as exc:  # closing a broken connection
            log.debug("closing SMB connection to %s: %s", self.host, exc)

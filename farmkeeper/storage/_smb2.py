"""A fast, pipelined SMB2/3 request path on top of smbprotocol's connection, session and tree setup.

smbprotocol negotiates, authenticates (NTLM/Kerberos via SPNEGO) and derives the signing and encryption
keys; this module then sends and receives the hot commands (CREATE, CLOSE, READ, WRITE, QUERY_DIRECTORY,
QUERY_INFO, SET_INFO) itself: headers and bodies packed with ``struct``, responses delivered as raw
``memoryview`` slices, many requests in flight per connection, credits requested generously.
Signing and encryption keep working (the same keys and algorithms), so security is not traded for speed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import struct
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import cmac, hashes, hmac
from cryptography.hazmat.primitives.ciphers import aead, algorithms
from smbprotocol.connection import Connection
from smbprotocol.header import SMB2HeaderResponse
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

log = logging.getLogger(__name__)

# commands
CREATE, CLOSE, READ, WRITE, QUERY_DIRECTORY, QUERY_INFO, SET_INFO = 5, 6, 8, 9, 0x0E, 0x10, 0x11
# header flags
F_RESPONSE, F_ASYNC, F_RELATED, F_SIGNED, F_DFS = 0x1, 0x2, 0x4, 0x8, 0x10000000
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
STATUS_CONNECTION_LOST = -1  # ours: the connection dropped before the response came

# access masks, create options and dispositions
FILE_READ_DATA, FILE_WRITE_DATA, FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES = 0x1, 0x2, 0x80, 0x100
DELETE, SYNCHRONIZE = 0x10000, 0x100000
FILE_LIST_DIRECTORY = 0x1
FILE_DIRECTORY_FILE, FILE_NON_DIRECTORY_FILE, FILE_DELETE_ON_CLOSE = 0x1, 0x40, 0x1000
FILE_OPEN, FILE_CREATE, FILE_OPEN_IF, FILE_OVERWRITE_IF = 1, 2, 3, 5
SHARE_ALL = 0x7
FILE_ATTRIBUTE_DIRECTORY = 0x10

RELATED_FID = b"\xff" * 16
FILETIME_EPOCH = 116444736000000000

_HDR = struct.Struct("<4sHHIHHIIQIIQ16s")
_CREATE = struct.Struct("<HBBIQQIIIIIHHII")
_CLOSE = struct.Struct("<HHI16s")
_READ = struct.Struct("<HBBIQ16sIIIHHB")
_WRITE = struct.Struct("<HHIQ16sIIHHI")
_QDIR = struct.Struct("<HBBI16sHHI")
_QINFO = struct.Struct("<HBBIHHIII16sB")
_SETINFO = struct.Struct("<HBBIHHI16s")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_LEN = struct.Struct(">I")

Message = tuple[int, bytes, int]  # command, body, credit charge
Reply = tuple[Any, int, Any]  # tag (default: message id), status, memoryview of the response (header first)


def to_filetime(ts: float) -> int:
    return int(round(ts * 10_000_000)) + FILETIME_EPOCH


def from_filetime(ft: int) -> float:
    return (ft - FILETIME_EPOCH) / 10_000_000 if ft else 0.0


def _charge(size: int) -> int:
    return max(1, (size - 1) // 65536 + 1)


def create(path: str, access: int, disposition: int, options: int, attributes: int = 0) -> Message:
    name = path.replace("/", "\\").encode("utf-16-le")
    body = _CREATE.pack(57, 0, 0, 2, 0, 0, access, attributes, SHARE_ALL, disposition, options,
                        120, len(name), 0, 0) + (name or b"\x00")
    return CREATE, body, 1


def close(fid: bytes = RELATED_FID, postquery: bool = False) -> Message:
    return CLOSE, _CLOSE.pack(24, 1 if postquery else 0, 0, fid), 1


def read(fid: bytes, offset: int, length: int) -> Message:
    return READ, _READ.pack(49, 0x50, 0, length, offset, fid, 0, 0, 0, 0, 0, 0), _charge(length)


def write(fid: bytes, offset: int, data: bytes | memoryview) -> Message:
    """A WRITE whose payload is kept apart (``Payload``): an unsigned single request is sent without copying it."""
    return WRITE, Payload(_WRITE.pack(49, 112, len(data), offset, fid, 0, 0, 0, 0, 0), data), _charge(len(data))


class Payload(bytes):
    """A request body (the fixed part, as bytes) followed by a large payload sent as is."""

    data: bytes | memoryview

    def __new__(cls, fixed: bytes, data: bytes | memoryview) -> Payload:
        self = super().__new__(cls, fixed)
        self.data = data
        return self


def query_directory(fid: bytes, out_len: int, restart: bool, info_class: int = 1) -> Message:
    pattern = "*".encode("utf-16-le")
    body = _QDIR.pack(33, info_class, 1 if restart else 0, 0, fid, 96, len(pattern), out_len) + pattern
    return QUERY_DIRECTORY, body, _charge(out_len)


def query_info(fid: bytes, info_type: int, info_class: int, out_len: int = 4096) -> Message:
    return QUERY_INFO, _QINFO.pack(41, info_type, info_class, out_len, 0, 0, 0, 0, 0, fid, 0), _charge(out_len)


def set_info(fid: bytes, info_class: int, data: bytes, info_type: int = 1) -> Message:
    return SET_INFO, _SETINFO.pack(33, info_type, info_class, len(data), 96, 0, 0, fid) + data, 1


def basic_info(mtime: float) -> bytes:
    """FileBasicInformation setting only LastWriteTime (and LastAccessTime to the same)."""
    ft = to_filetime(mtime)
    return struct.pack("<QQQQII", 0, ft, ft, 0, 0, 0)


def rename_info(target: str, replace: bool = False) -> bytes:
    name = target.replace("/", "\\").encode("utf-16-le")
    return struct.pack("<B7xQI", 1 if replace else 0, 0, len(name)) + name


def create_fid(mv: Any) -> bytes:
    return bytes(mv[64 + 64:64 + 80])


def create_stat(mv: Any) -> tuple[int, float, int]:
    """(end of file, last write time, attributes) from a CREATE response."""
    last_write = _U64.unpack_from(mv, 64 + 24)[0]
    eof = _U64.unpack_from(mv, 64 + 48)[0]
    attrs = _U32.unpack_from(mv, 64 + 56)[0]
    return eof, from_filetime(last_write), attrs


def close_stat(mv: Any) -> tuple[int, float]:
    """(end of file, last write time) from a CLOSE response sent with postquery."""
    last_write = _U64.unpack_from(mv, 64 + 24)[0]
    eof = _U64.unpack_from(mv, 64 + 48)[0]
    return eof, from_filetime(last_write)


def read_data(mv: Any) -> memoryview:
    offset = mv[64 + 2]
    length = _U32.unpack_from(mv, 64 + 4)[0]
    return memoryview(mv)[offset:offset + length]


def out_buffer(mv: Any) -> memoryview:
    """The output buffer of a QUERY_DIRECTORY or QUERY_INFO response."""
    offset = struct.unpack_from("<H", mv, 64 + 2)[0]
    length = _U32.unpack_from(mv, 64 + 4)[0]
    return memoryview(mv)[offset:offset + length]


_DIRINFO = struct.Struct("<I4x8x8xQ8xQ8xII")  # next, last write, end of file, attributes, name length


def parse_directory(buf: memoryview, files: list[tuple[str, int, float]], dirs: list[str]) -> None:
    """Parse a FileDirectoryInformation chain (NextEntryOffset) into files and sub-folder names."""
    off = 0
    unpack = _DIRINFO.unpack_from
    n = len(buf)
    while off < n:
        nxt, last_write, eof, attrs, name_len = unpack(buf, off)
        name = str(buf[off + 64:off + 64 + name_len], "utf-16-le")
        if attrs & FILE_ATTRIBUTE_DIRECTORY:
            if name != "." and name != "..":
                dirs.append(name)
        else:
            files.append((name, eof, (last_write - FILETIME_EPOCH) / 10_000_000))
        if not nxt:
            break
        off += nxt


class ConnectionLost(Exception):
    """The SMB connection dropped or timed out (mapped to StorageUnavailable by the caller)."""


class _FastConnection(Connection):  # type: ignore[misc]
    """smbprotocol's Connection with its receive loop replaced: setup messages go the original way,
    our fast requests get raw responses on their reply queues."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast: dict[int, tuple[queue.SimpleQueue[Reply] | None, Any]] = {}
        self.credit_cond = threading.Condition(self.sequence_lock)
        self.dead = False
        self.verifier: Any = None  # set by Channel once the session key is known

    def _process_message_thread(self) -> None:
        sock = self.transport._sock
        pend = bytearray()
        try:
            while True:
                frame = _read_frame(sock, pend)
                if frame is None:
                    return
                encrypted = frame[:4] == b"\xfdSMB"
                if encrypted:
                    from smbprotocol.connection import SMB2TransformHeader

                    header = SMB2TransformHeader()
                    header.unpack(bytes(frame))
                    frame = bytearray(self._decrypt(header))
                off = 0
                while True:
                    next_cmd = _U32.unpack_from(frame, off + 20)[0]
                    end = off + next_cmd if next_cmd else len(frame)
                    self._dispatch(frame, off, end, encrypted)
                    if not next_cmd:
                        break
                    off = end
        except Exception as exc:  # same contract as smbprotocol: the caller sees it on its next call
            if not self.dead:
                log.debug("SMB receive loop for %s ended: %s", self.server_name, exc)
            self._t_exc = exc
            with contextlib.suppress(Exception):  # already broken
                self.disconnect(False)
        finally:
            self.dead = True
            with self.credit_cond:
                self.credit_cond.notify_all()
            for request in list(self.outstanding_requests.values()):
                request.response_event.set()
            for q, tag in list(self.fast.values()):
                if q is not None:
                    q.put((tag, STATUS_CONNECTION_LOST, None))
            self.fast.clear()

    def _dispatch(self, frame: bytearray, off: int, end: int, encrypted: bool) -> None:
        status, command, credits, flags, _next, mid = struct.unpack_from("<8xIHHIIQ", frame, off)
        with self.credit_cond:
            if credits == 0 and not self.supports_multi_credit:
                credits = 1
            self.sequence_window["high"] += credits
            self.credit_cond.notify_all()
        if mid in self.fast:
            if status == STATUS_PENDING and flags & F_ASYNC:
                return  # interim response; the final one follows
            if flags & F_SIGNED and not encrypted and self.verifier is not None:
                self.verifier(frame, off, end, mid, command)
            q, tag = self.fast.pop(mid)
            if q is not None:
                q.put((tag, status, memoryview(frame)[off:end]))
            return
        # a message smbprotocol sent itself (negotiate, session setup, tree connect, logoff)
        b_header = bytes(frame[off:end])
        header = SMB2HeaderResponse()
        header.unpack(b_header)
        request = self.outstanding_requests.get(mid)
        if request is None:
            return
        session_id = header["session_id"].get_value() if command == 1 else request.session_id
        if not encrypted:
            self.verify_signature(header, session_id)
        if command == 0:
            self.preauth_integrity_hash_value.append(b_header)
        elif command == 1 and status == 0xC0000016:
            self.preauth_integrity_session_hash_value[mid].append(b_header)
        with request.response_event_lock:
            if flags & F_ASYNC:
                request.async_id = b_header[32:40]
            request.response = header
            request.response_event.set()


def _read_frame(sock: socket.socket, pend: bytearray) -> bytearray | None:
    while len(pend) < 4:
        chunk = sock.recv(262144)
        if not chunk:
            return None
        pend += chunk
    size = _LEN.unpack_from(pend, 0)[0] & 0xFFFFFF
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
            raise ConnectionLost(f"response signature of message {mid} does not verify")


class Channel:
    """One SMB connection, session and tree connect to a share, with a pipelined request API.

    Thread-safe for sending; each reply goes to the queue given at submit time.
    """

    def __init__(self, host: str, port: int, share: str, username: str, password: str, *,
                 require_signing: bool = True, encrypt: bool = False, timeout: float = 30.0) -> None:
        self.host = host
        self.timeout = timeout
        self.conn = _FastConnection(uuid.uuid4(), host, port, require_signing=require_signing)
        self.conn.connect(timeout=timeout)
        try:
            self.session = Session(self.conn, username, password, require_encryption=encrypt)
            self.session.connect()
            self.tree = TreeConnect(self.session, rf"\\{host}\{share}")
            signing = bool(self.session.signing_required)
            if not signing and self.conn.dialect >= 0x0311 and not self.session.encrypt_data:
                self.session.signing_required = True  # SMB 3.1.1 requires a signed TREE_CONNECT
            self.tree.connect()
            self.session.signing_required = signing
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
        self.max_read = int(self.conn.max_read_size)
        self.max_write = int(self.conn.max_write_size)
        self.max_transact = int(self.conn.max_transact_size)
        self.multi_credit = bool(self.conn.supports_multi_credit)
        self.dfs = bool(self.tree.is_dfs_share)
        self._send_lock = threading.Lock()

    def _algorithm(self) -> str:
        if self.conn.dialect >= 0x0311 and self.conn.signing_algorithm_id is not None:
            return {0: "hmac", 1: "cmac", 2: "gmac"}[int(self.conn.signing_algorithm_id)]
        return "cmac" if self.conn.dialect >= 0x0300 else "hmac"

    @property
    def signing(self) -> bool:
        return self.signer is not None

    @property
    def alive(self) -> bool:
        return not self.conn.dead and self.conn.transport.connected

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
                while window["high"] - window["low"] < total:
                    if conn.dead:
                        raise ConnectionLost(f"connection to {self.host} is closed")
                    if not conn.credit_cond.wait(self.timeout):
                        raise ConnectionLost(f"no SMB credits granted by {self.host} within {self.timeout:.0f}s")
                first = window["low"]
                window["low"] += total
                available = window["high"] - window["low"]
            if conn.dead:
                raise ConnectionLost(f"connection to {self.host} is closed")
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
                length = 64 + len(body) + len(payload) + len(tail)
                if i < count - 1:
                    pad = (8 - length % 8) % 8
                    next_cmd = length + pad
                else:
                    pad = next_cmd = 0
                flags = (F_RELATED if related and i else 0) | (F_DFS if self.dfs else 0)
                if self.signer is not None:
                    flags |= F_SIGNED
                want = charge + (64 if available < 4096 else 0)
                msg = bytearray(_HDR.pack(b"\xfeSMB", 64, charge if self.multi_credit else 0, 0, command, want,
                                          flags, next_cmd, mid, 0, self.tid, self.sid, bytes(16)))
                msg += body
                if payload:
                    msg += payload
                if pad:
                    msg += bytes(pad)
                if self.signer is not None:
                    msg[48:64] = self.signer.sign(msg, mid, False, command)
                parts.append(msg)
                conn.fast[mid] = (q, mid if tags is None else tags[i])
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
                raise ConnectionLost(f"sending to {self.host} failed: {exc}") from exc
        return mids

    def wait(self, q: queue.SimpleQueue[Reply], n: int) -> dict[Any, tuple[int, Any]]:
        """Collect ``n`` replies from ``q`` (raises ``ConnectionLost`` if the connection drops)."""
        out: dict[Any, tuple[int, Any]] = {}
        for _ in range(n):
            try:
                mid, status, mv = q.get(timeout=self.timeout * 4)
            except queue.Empty:
                raise ConnectionLost(f"no answer from {self.host} within {self.timeout * 4:.0f}s") from None
            if status == STATUS_CONNECTION_LOST:
                raise ConnectionLost(f"connection to {self.host} was lost")
            out[mid] = (status, mv)
        return out

    def call(self, messages: Sequence[Message], related: bool = False) -> list[tuple[int, Any]]:
        """Send and wait: one (status, response) per message, in order."""
        q: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        mids = self.submit(messages, q, related)
        got = self.wait(q, len(mids))
        return [got[m] for m in mids]

    def get(self, q: queue.SimpleQueue[Reply]) -> Reply:
        """One reply from ``q`` (raises ``ConnectionLost`` on a dropped connection or timeout)."""
        try:
            reply = q.get(timeout=self.timeout * 4)
        except queue.Empty:
            raise ConnectionLost(f"no answer from {self.host} within {self.timeout * 4:.0f}s") from None
        if reply[1] == STATUS_CONNECTION_LOST:
            raise ConnectionLost(f"connection to {self.host} was lost")
        return reply

    def close(self) -> None:
        conn = self.conn
        conn.dead = True
        try:
            if conn.transport is not None and conn.transport.connected:
                conn.disconnect(False)
        except Exception as exc:  # closing a broken connection
            log.debug("closing SMB connection to %s: %s", self.host, exc)

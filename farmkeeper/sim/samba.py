"""Real Samba servers on loopback for the demo, the tests and the benchmarks.

``SambaFarm`` is a plain class (usable outside pytest, e.g. by ``bench/``): it starts N independent
``smbd`` processes on 127.0.0.2, 127.0.0.3, ... port 445, each with its own ``smb.conf`` and state
directories, exporting ``DATAD`` and ``DATAE``. The pytest fixtures in ``tests/fixtures/samba.py`` wrap it:

* ``samba_farm`` (session): a started ``SambaFarm`` with 3 servers; ``samba_farm.servers[0].access('D')``
  gives a ``farmkeeper.storage.VolumeAccess`` for ``\\\\127.0.0.2\\DATAD``.
* ``samba_full_share`` (session): an 8 MiB tmpfs exported as ``DATAF`` (drive F) on the last server.

If smbd cannot start the fixture fails (never skips) and says how to fix it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

USERNAME = "fktest"
PASSWORD = "fk-Test-pw-1"  # test-only credential of a throwaway local user
HOW_TO_FIX = "install Samba with `make system-deps` (or `make test`, which installs samba, smbclient, rclone)"


class SambaError(RuntimeError):
    """smbd could not be started; the message says why and how to fix it."""


@dataclass
class Share:
    name: str
    path: Path
    read_only: bool = False


@dataclass
class SambaServer:
    """One smbd on ``host``:``port`` with its own configuration and state under ``root``."""

    host: str
    root: Path
    port: int = 445
    username: str = USERNAME
    password: str = field(default=PASSWORD, repr=False)
    shares: dict[str, Share] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    extra_global: dict[str, str] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "smb.conf"

    @property
    def log_file(self) -> Path:
        return self.root / "log" / "smbd.log"

    def share_path(self, name: str) -> Path:
        return self.shares[name].path

    def add_share(self, name: str, path: str | Path, read_only: bool = False) -> None:
        """Export ``path`` as ``name`` (rewrites smb.conf and reloads a running smbd)."""
        Path(path).mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o777)
        self.shares[name] = Share(name, Path(path), read_only)
        self.write_conf()
        if self.running:
            self._reload()

    def _reload(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGHUP)
            time.sleep(0.3)

    def write_conf(self) -> None:
        for sub in ("private", "lock", "state", "cache", "pid", "log", "ncalrpc"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        glob = {
            "server role": "standalone server",
            "workgroup": "FARM",
            "netbios name": f"FK{self.host.replace('.', '')[-6:]}",
            "interfaces": f"{self.host}/32",
            "bind interfaces only": "yes",
            "smb ports": str(self.port),
            "private dir": str(self.root / "private"),
            "lock directory": str(self.root / "lock"),
            "state directory": str(self.root / "state"),
            "cache directory": str(self.root / "cache"),
            "pid directory": str(self.root / "pid"),
            "ncalrpc dir": str(self.root / "ncalrpc"),
            "log file": str(self.log_file),
            "log level": "1",
            "max log size": "10000",
            "passdb backend": f"tdbsam:{self.root / 'private' / 'passdb.tdb'}",
            "load printers": "no",
            "printing": "bsd",
            "printcap name": "/dev/null",
            "disable spoolss": "yes",
            "disable netbios": "yes",
            "map to guest": "never",
            "server signing": "auto",
            "server min protocol": "SMB2_10",
            "usershare path": "",
            "dns proxy": "no",
        } | self.extra_global
        lines = ["[global]", *(f"  {k} = {v}" for k, v in glob.items())]
        for share in self.shares.values():
            lines += [
                f"[{share.name}]",
                f"  path = {share.path}",
                f"  read only = {'yes' if share.read_only else 'no'}",
                f"  valid users = {self.username}",
                "  force user = root",
                "  case sensitive = yes",
                "  preserve case = yes",
                "  short preserve case = yes",
                "  store dos attributes = no",
                "  ea support = no",
                "  strict sync = no",
            ]
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start smbd and wait until port 445 on ``host`` accepts connections."""
        if self.running:
            return
        self.write_conf()
        ensure_address(self.host)
        if _port_open(self.host, self.port):
            raise SambaError(f"{self.host}:{self.port} is already in use by another process; stop it "
                             f"(e.g. `systemctl stop smbd`) or pick other addresses")
        log = open(self.root / "log" / "smbd.stdout", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            ["smbd", "--foreground", "--no-process-group", "-s", str(self.conf), "--debug-stdout"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SambaError(f"smbd for {self.host} exited with code {self.process.returncode}: "
                                 f"{self._log_tail()}\n{HOW_TO_FIX}")
            if _port_open(self.host, self.port):
                return
            time.sleep(0.05)
        self.kill()
        raise SambaError(f"smbd for {self.host} did not listen on port {self.port} within {timeout:.0f}s: "
                         f"{self._log_tail()}")

    def _log_tail(self) -> str:
        texts = []
        for p in (self.root / "log" / "smbd.stdout", self.log_file):
            with contextlib.suppress(OSError):
                texts.append(p.read_text(errors="replace")[-2000:])
        return "\n".join(texts)

    def stop(self) -> None:
        """Stop smbd (SIGTERM, then SIGKILL) and its per-connection children."""
        if self.process is None:
            return
        if self.process.poll() is None:
            _kill_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                _kill_group(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        else:
            _kill_group(self.process.pid, signal.SIGKILL)
        self.process = None
        _wait_port_closed(self.host, self.port)

    def kill(self) -> None:
        """SIGKILL smbd and every child serving a connection (a crash, for fault tests)."""
        if self.process is None:
            return
        _kill_group(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self.process = None
        _wait_port_closed(self.host, self.port)

    def restart(self) -> None:
        self.stop()
        self.start()

    def access(self, drive: str = "D", **overrides: Any) -> Any:
        """A ``farmkeeper.storage.VolumeAccess`` for share ``DATA<drive>`` of this server (over SMB)."""
        from farmkeeper.storage import VolumeAccess

        values: dict[str, Any] = dict(server=self.host, drive=drive, host=self.host, port=self.port,
                                      username=self.username, password=self.password)
        values.update(overrides)
        return VolumeAccess(**values)

    def local_access(self, drive: str = "D", **overrides: Any) -> Any:
        """The same volume through its local directory (the local backend)."""
        return self.access(drive, local_path=str(self.share_path(f"DATA{drive.upper()}")), **overrides)


def _kill_group(pid: int, sig: int) -> None:
    # smbd forks one child per connection; they share the session started for smbd.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _wait_port_closed(host: str, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _port_open(host, port):
        time.sleep(0.05)


def ensure_address(host: str) -> None:
    """Samba binds only to addresses of an interface: add ``host``/32 to ``lo`` if missing (needs root)."""
    shown = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True)
    if f"inet {host}/" in shown.stdout:
        return
    result = subprocess.run(["ip", "addr", "add", f"{host}/32", "dev", "lo"], capture_output=True, text=True)
    if result.returncode != 0 and "File exists" not in result.stderr:
        raise SambaError(f"cannot add {host} to the loopback interface (run as root, or add it with "
                         f"`ip addr add {host}/32 dev lo`): {result.stderr.strip()}")


def ensure_user(username: str = USERNAME) -> None:
    """Create the Unix account Samba maps the test user to (needs root)."""
    if shutil.which("smbd") is None:
        raise SambaError(f"smbd is not installed; {HOW_TO_FIX}")
    if subprocess.run(["id", username], capture_output=True).returncode == 0:
        return
    result = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", username],
                            capture_output=True, text=True)
    if result.returncode != 0 and subprocess.run(["id", username], capture_output=True).returncode != 0:
        raise SambaError(f"cannot create Unix user {username!r} for Samba (run the tests as root): "
                         f"{result.stderr.strip()}")


class SambaFarm:
    """N smbd servers on 127.0.0.2.. with shares DATAD and DATAE each; use as a context manager."""

    def __init__(self, count: int = 3, root: str | Path | None = None, first_host: int = 2,
                 shares: tuple[str, ...] = ("DATAD", "DATAE")) -> None:
        self._tmp = None if root else tempfile.mkdtemp(prefix="fk-samba-")
        self.root = Path(root or self._tmp or "")
        self.servers: list[SambaServer] = []
        self._mounts: list[Path] = []
        for i in range(count):
            host = f"127.0.0.{first_host + i}"
            server = SambaServer(host=host, root=self.root / host)
            for name in shares:
                path = self.root / host / "shares" / name
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o777)
                server.shares[name] = Share(name, path)
            self.servers.append(server)

    def start(self) -> SambaFarm:
        ensure_user()
        try:
            for server in self.servers:
                server.write_conf()
                _set_password(server)
                server.start()
        except BaseException:
            self.close()
            raise
        return self

    def tmpfs_share(self, server: SambaServer, name: str = "DATAF", size: str = "8m") -> Path:
        """Mount a small tmpfs and export it as ``name`` on ``server`` (for full-disk tests)."""
        path = self.root / server.host / "mounts" / name
        path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SambaError(f"cannot mount a tmpfs at {path} (needs root / CAP_SYS_ADMIN): {result.stderr}")
        self._mounts.append(path)
        server.add_share(name, path)
        return path

    def close(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.kill()
        for path in reversed(self._mounts):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        self._mounts.clear()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> SambaFarm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _set_password(server: SambaServer) -> None:
    result = subprocess.run(["smbpasswd", "-c", str(server.conf), "-s", "-a", server.username],
                            input=f"{server.password}\n{server.password}\n", capture_output=True, text=True)
    if result.returncode != 0:
        raise SambaError(f"smbpasswd failed for {server.host}: {result.stderr.strip() or result.stdout.strip()}; "
                         f"{HOW_TO_FIX}")

"""Flows that touch many servers isolate one server's unexpected error: it is reported for that server and
the others are still counted or validated (real Samba for the healthy servers; the fault is injected)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from farmkeeper import ownership, validation
from farmkeeper.ownership import count_footage
from farmkeeper.validation import GroupSnapshot, ServerInfo, check_group
from farmkeeper.volumes import ServerVolume
from tests.fixtures.samba import SambaFarm, reset_shares

pytestmark = pytest.mark.samba

FOOTAGE = "video/cam-1/0/2024-03-01/10/20240301T100000Z.mkv"


@pytest.fixture
def farm(samba_farm: SambaFarm) -> Iterator[SambaFarm]:
    reset_shares(samba_farm)
    for server in samba_farm.servers[:2]:
        path = server.share_path("DATAD") / FOOTAGE
        os.makedirs(path.parent, exist_ok=True)
        path.write_bytes(b"x")
    yield samba_farm
    reset_shares(samba_farm)


def test_count_reports_one_servers_surprise_and_counts_the_others(farm: SambaFarm,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = farm.servers[0], farm.servers[1]
    real = ownership.count_volume

    def count_volume(volume: ServerVolume, **kw: Any) -> Any:
        if volume.server == bad.host:
            raise RuntimeError("a bug nobody expected")
        return real(volume, **kw)

    monkeypatch.setattr(ownership, "count_volume", count_volume)
    result = count_footage([ServerVolume(s.host, "D", s.access("D")) for s in (good, bad)], prefer="smb")
    assert set(result.errors) == {bad.host} and "RuntimeError" in result.errors[bad.host]
    assert result.frame.groupby("server")["files"].sum().to_dict() == {good.host: 1}


def test_validation_reports_one_servers_surprise_and_validates_the_others(farm: SambaFarm,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = farm.servers[0], farm.servers[1]
    real = validation.probe_share

    def probe_share(access: Any, **kw: Any) -> Any:
        if access.server == bad.host:
            raise RuntimeError(f"a bug nobody expected ({access.password})")
        return real(access, **kw)

    monkeypatch.setattr(validation, "probe_share", probe_share)
    servers = tuple(ServerInfo(s.host, s.host, s.port, s.username, "PW", None, True, (s.access("D"),))
                    for s in (good, bad))
    report = check_group(GroupSnapshot(servers, 5.0), prefer="smb")
    shares = {f.server: f for f in report.findings if f.requirement.name == "share"}
    assert shares[good.host].status == "ok", shares[good.host]
    assert shares[bad.host].status == "fail" and "RuntimeError" in shares[bad.host].message
    assert bad.password not in shares[bad.host].message

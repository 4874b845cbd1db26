"""One notification per failover, with several watchers (issue 19, point 5).

A second watcher computed ``pending_failovers`` before the first one's failover committed and ran a
second ``failover`` that moved nothing but notified "failover of rec1 retried: 0 cameras moved".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from farmkeeper import failover as core
from flows.failover import FailoverParams, failover
from tests.concurrency.conftest import Inventory, apply_spec, farm_spec
from tests.concurrency.test_one_master import probe
from tests.fixtures.receivers import HttpReceiver

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.mark.parametrize(("inv", "first"), [("sqlite", "newly-down"), ("postgres", "retry")], indirect=["inv"])
def test_two_watchers_notify_one_failover_once(inv: Inventory, tmp_path: Path, http_receiver: HttpReceiver,
                                               first: str) -> None:
    apply_spec(inv, farm_spec(tmp_path, notify=[http_receiver.url]))
    for name in ("rec1", "rec2", "spare1", "spare2"):
        probe(inv, name, True)
    probe(inv, "rec1", False)                      # watcher A: the transition to down is A's
    with inv.session() as session:                 # watcher B's sweep, before A's failover commits
        assert core.pending_failovers(session) == ["rec1"]
    runs = {"newly-down": lambda: failover(FailoverParams(server="rec1"), newly_down=True),
            "retry": lambda: failover(FailoverParams(server="rec1", reason="stranded, retried"))}
    second = "retry" if first == "newly-down" else "newly-down"
    moved = runs[first]()["moved"]
    assert sorted(m["camera"] for m in moved) == ["cam-1", "cam-2"]
    assert runs[second]()["moved"] == []
    http_receiver.wait_for(lambda m: "rec1" in m.get("title", ""))
    failover(FailoverParams(server="rec1", reason="stranded, retried"))   # a third watcher, later: nothing new
    titles = [t for t in http_receiver.titles() if "rec1" in t and "master" not in t]
    assert len(titles) == 1, titles
    assert "2 cameras moved" in titles[0] and "1 offline" in titles[0]


@pytest.mark.parametrize("inv", ["sqlite"], indirect=True)
def test_an_outage_with_nothing_to_move_is_told_once(inv: Inventory, tmp_path: Path,
                                                     http_receiver: HttpReceiver) -> None:
    """rec2's only camera cannot move anywhere (no redundant server up): the newly-down run tells it."""
    apply_spec(inv, farm_spec(tmp_path, notify=[http_receiver.url]))
    for name in ("rec1", "rec2"):
        probe(inv, name, True)
    probe(inv, "rec2", False)
    result = failover(FailoverParams(server="rec2"), newly_down=True)
    assert result["moved"] == [] and result["stranded"] == ["cam-3"]
    failover(FailoverParams(server="rec2", reason="stranded, retried"))
    message = http_receiver.wait_for(lambda m: "rec2 is down" in m.get("title", ""))
    assert "1 stranded" in message["title"]
    assert [t for t in http_receiver.titles() if "rec2" in t] == [message["title"]]

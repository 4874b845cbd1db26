"""The Prefect UI drives a swap-back: headless Chromium (Debian's, driven by playwright) opens the UI of a real
``prefect server start``, starts a swap-back from the deployment's form (a real form: the flow's parameters are a
pydantic model with descriptions), and sees the run complete with its progress artifact.

The farm runs on its own real Samba servers (127.0.0.90-92: rec1 home, spare1 redundant, rec2), the inventory on
a temp SQLite, and the swap-back deployment is served by ``prefect serve`` in a subprocess. Screenshots (the
form, the finished run with its artifacts) are saved under the test's temp folder; on failure a screenshot and
the page's HTML too, plus the tails of the server and serve logs in the failure message.

Chromium missing is a failure that says how to install it, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlmodel import select

from deployments.embedded import local_server
from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.farmfile import apply_farm_file, parse_farm_file
from farmkeeper.models import Camera, FailoverEvent
from farmkeeper.sim.samba import PASSWORD, USERNAME, SambaFarm
from tests.fixtures.samba import running
from tests.helpers import tree_hashes, wait_for, write_footage
from tests.swapback.conftest import fail_over

pytestmark = [pytest.mark.samba, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOW_TO_INSTALL = ("install Debian's Chromium: `apt-get update && apt-get install -y chromium` (or `make system-deps`);"
                  " playwright drives /usr/bin/chromium (`playwright install` browser builds are not used)")
PASSWORD_ENV = "FK_UI_SMB_PASSWORD"
NAMES = ("rec1", "spare1", "rec2")
CAMERA = "cam-ui"


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@pytest.fixture
def ui_samba(tmp_path: Path) -> Iterator[SambaFarm]:
    farm = SambaFarm(3, root=tmp_path / "samba", first_host=90, shares=("DATAD",))
    with running(farm):
        yield farm


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``prefect server start`` with its UI, on loopback: (API URL, log file)."""
    log = tmp_path / "prefect-server.log"
    with local_server(tmp_path / "prefect", log_path=log) as api_url:
        yield api_url, log


@pytest.fixture
def api(ui_server: tuple[str, Path]) -> Iterator[httpx.Client]:
    """A client of the test server's REST API."""
    with httpx.Client(base_url=ui_server[0], timeout=10) as client:
        yield client


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian Chromium under playwright; fails (never skips) when it cannot start."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        pytest.fail(f"the playwright Python package is missing ({exc}): `make install`", pytrace=False)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: {HOW_TO_INSTALL}", pytrace=False)
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        except Error as exc:
            pytest.fail(f"Chromium ({CHROMIUM}) could not start: {exc}\n{HOW_TO_INSTALL}", pytrace=False)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``served(api_url, inventory_url)``: the swap-back deployment served by ``prefect serve`` in a subprocess."""
    procs: list[subprocess.Popen[bytes]] = []

    def _serve(api_url: str, inventory_url: str) -> Path:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env |= {"PREFECT_API_URL": api_url, "PREFECT_HOME": str(tmp_path / "serve-home"),
                "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "FARMKEEPER_DATABASE_URL": inventory_url, PASSWORD_ENV: PASSWORD, "PYTHONPATH": str(REPO)}
        code = ("from deployments.embedded import runner_deployments; from deployments import DEPLOYMENTS; "
                "from prefect import serve; "
                "serve(*runner_deployments([s for s in DEPLOYMENTS if s.flow_name == 'swap-back']))")
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        return log

    yield _serve
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def apply_farm(samba: SambaFarm, path: Path) -> None:
    servers = []
    for i, (name, srv) in enumerate(zip(NAMES, samba.servers, strict=True)):
        servers.append({
            "name": name, "host": srv.host, "role": "redundant" if name.startswith("spare") else "primary",
            "master": i == 0, "health": "smb", "san_failover_mode": True,
            "smb": {"port": 445, "username": USERNAME, "password_env": PASSWORD_ENV},
            "volumes": [{"drive": "D"}]})
    data = {"farm": {"name": "ui", "notify": []}, "storage": {"default_path": "D:\\Data"}, "servers": servers,
            "cameras": [{"id": CAMERA, "home": "rec1", "movable": True, "streams": 2}]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = parse_farm_file(path.read_text(), str(path))
    with session_scope(ensure_schema(get_engine())) as session:
        apply_farm_file(session, spec)


@contextlib.contextmanager
def diagnostics(page: Any, out: Path, logs: dict[str, Path]) -> Iterator[None]:
    """On failure: screenshot + HTML of the page under ``out``, log tails in the message."""
    try:
        yield
    except BaseException as exc:
        shot, html = out / "failure.png", out / "failure.html"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shot), full_page=True)
        with contextlib.suppress(Exception):
            html.write_text(page.content())
        where = f"page {page.url}; screenshot {shot}; html {html}"
        tails = "\n".join(f"--- {name} ({path}):\n{tail(path)}" for name, path in logs.items())
        raise AssertionError(f"{exc}\n{where}\n{tails}") from exc


def submit(page: Any, attempts: int = 3) -> Any:
    """Click the form's Submit; the create_flow_run response. Prefect's server on SQLite answers 503 ("Service
    Unavailable", its own "retry this" status, logged with PREFECT_SERVER_LOG_RETRYABLE_ERRORS) when a concurrent
    writer (the runner's poll marking the deployment ready) wins the database; the UI leaves the form filled
    and an operator clicks Submit again, so does this test, up to ``attempts`` times. Any other status fails."""
    for _ in range(attempts):
        with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/create_flow_run"),
                                  timeout=60_000) as created:
            page.get_by_role("button", name="Submit", exact=True).click()
        if created.value.status != 503:
            break
        page.wait_for_timeout(1000)
    return created.value


def field(page: Any, label: str) -> Any:
    """The form field (label, description, input) whose label reads ``label``."""
    return page.locator(f"xpath=//label[normalize-space()='{label}']"
                        "/ancestor::div[contains(concat(' ', @class, ' '), ' group ')][1]")


def test_swap_back_from_the_ui_form(tmp_path: Path, inventory_url: str, ui_samba: SambaFarm,
                                    ui_server: tuple[str, Path], served: Callable[[str, str], Path],
                                    api: httpx.Client, browser: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    api_url, server_log = ui_server
    ui_url = api_url.removesuffix("/api")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    apply_farm(ui_samba, tmp_path / "farm.yaml")
    home_d, spare_d = ui_samba.servers[0].share_path("DATAD"), ui_samba.servers[1].share_path("DATAD")
    want = write_footage(spare_d, CAMERA, 8, size=256 << 10)
    fail_over(CAMERA)
    serve_log = served(api_url, inventory_url)

    def deployment() -> dict[str, Any] | None:
        response = api.get("/deployments/name/swap-back/swap-back")
        return response.json() if response.status_code == 200 else None

    dep = wait_for("the swap-back deployment served", deployment, 90)
    assert "description" in str(dep["parameter_openapi_schema"]), "the form would have no descriptions"

    page = browser.new_page(viewport={"width": 1400, "height": 1700})  # tall: the whole form in one screenshot
    page.set_default_timeout(30_000)
    with diagnostics(page, tmp_path, {"prefect server": server_log, "prefect serve": serve_log}):
        # the UI's home, then Deployments → swap-back → Run → Custom run
        page.goto(f"{ui_url}/")
        page.get_by_role("link", name="Deployments", exact=True).click()
        page.get_by_role("link", name="swap-back", exact=True).first.click()
        page.wait_for_url(re.compile(rf"/deployments/deployment/{dep['id']}"))
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run", exact=True).click()
        page.wait_for_url(re.compile(r"/run(\?|$)"))

        # the form shows the model's fields with their descriptions
        page.get_by_text("Parameters", exact=True).wait_for()
        for label, description in (("Server (Optional)", "Home server: swap back every camera"),
                                   ("Max Mbps (Optional)", "Bandwidth cap of the copy in megabits per second"),
                                   ("Verify (Optional)", "the copy is read back and its BLAKE2b compared")):
            assert description in field(page, label).inner_text()
        server = field(page, "Server (Optional)")
        server.get_by_role("tab", name="str", exact=True).click()
        server.get_by_role("textbox").fill("rec1")
        cap = field(page, "Max Mbps (Optional)")
        cap.get_by_role("tab", name="float", exact=True).click()
        cap.get_by_role("spinbutton").fill("200")
        page.get_by_role("button", name="Select Verify").click()
        page.get_by_role("option", name="hash", exact=True).click()
        page.get_by_label("Wait Closed S (Optional)", exact=True).fill("10")
        notify = page.get_by_role("switch", name="Notify (Optional)", exact=True)
        notify.click()
        assert notify.get_attribute("aria-checked") == "false"
        run_name = page.get_by_label("Run Name", exact=True).input_value()
        assert run_name
        page.screenshot(path=str(tmp_path / "01-swap-back-form.png"), animations="disabled")
        response = submit(page)
        assert response.ok, response.text()
        run_id = response.json()["id"]

        # the toast links to the new run (it fades after a few seconds: on a loaded machine, go there directly)
        try:
            page.get_by_role("button", name="View run").or_(page.get_by_role("link", name="View run")).first.click(
                timeout=15_000)
        except PlaywrightTimeoutError:
            page.goto(f"{ui_url}/v2/runs/flow-run/{run_id}")
        page.wait_for_url(re.compile(rf"/runs/flow-run/{run_id}"))
        run = api.get(f"/flow_runs/{run_id}").json()
        assert run["name"] == run_name
        params = run["parameters"]["params"]
        assert {k: params.get(k) for k in ("server", "max_mbps", "verify", "wait_closed_s", "notify", "dry_run")} \
            == {"server": "rec1", "max_mbps": 200, "verify": "hash", "wait_closed_s": 10, "notify": False,
                "dry_run": False}, run["parameters"]

        def finished() -> str | None:
            state = api.get(f"/flow_runs/{run_id}").json()["state"]
            return state["type"] if state["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

        final = wait_for(f"flow run {run_name} finished", finished, 150, every=1)
        assert final == "COMPLETED", api.get(f"/flow_runs/{run_id}").json()["state"]

        # the API has the run's progress artifact at 100 %
        artifacts = api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
        progress = [a for a in artifacts if a["type"] == "progress"]
        assert len(progress) == 1 and float(progress[0]["data"]) == 100.0, artifacts
        assert progress[0]["description"].startswith("Copy job #"), progress[0]
        assert progress[0]["key"] == "swap-back-progress-rec1", progress[0]

        # the run page shows Completed and, on its Artifacts tab, that progress artifact
        page.get_by_text("Completed", exact=True).first.wait_for(timeout=60_000)
        page.get_by_role("tab", name="Artifacts", exact=True).click()
        card = page.get_by_role("link").filter(has=page.get_by_text("PROGRESS", exact=True))
        card.first.wait_for(timeout=60_000)
        assert card.count() == 1
        assert progress[0]["id"] in (card.get_attribute("href") or "")
        assert "swap-back-progress-rec1" in card.inner_text(), card.inner_text()  # a keyed artifact shows its key
        page.wait_for_timeout(500)  # let the other cards finish rendering
        page.screenshot(path=str(tmp_path / "02-swap-back-run-artifacts.png"), animations="disabled")
        # and the artifact's own page
        card.click()
        page.wait_for_url(re.compile(rf"/artifacts/artifact/{progress[0]['id']}"))
        page.get_by_text("Progress: 100%").first.wait_for()
        page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "03-progress-artifact.png"), animations="disabled")

    # the footage is home, byte for byte, and gone from spare1; the camera records at home again
    assert tree_hashes(home_d, CAMERA) == want
    assert tree_hashes(spare_d, CAMERA) == {}
    with session_scope(ensure_schema(get_engine())) as session:
        cam = session.get(Camera, CAMERA)
        assert cam is not None and cam.current == "rec1"
        events = list(session.exec(select(FailoverEvent).where(FailoverEvent.camera_id == CAMERA)))
        assert events and all(e.ended_at is not None for e in events)
    for name in ("01-swap-back-form.png", "02-swap-back-run-artifacts.png", "03-progress-artifact.png"):
        assert (tmp_path / name).stat().st_size > 10_000


"""The web UI in a real Chromium (Debian's, driven by Playwright): log in, watch, act, see failures live.

Screenshots of each step go to ``artifacts/webui/`` at the repository root.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

from tests.api.conftest import TOKEN, start_cluster
from tests.integration.cluster import LocalCluster

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "webui"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: scripts/bootstrap installs Debian's chromium"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    # NB: Playwright's sync API keeps an event loop running in this thread, and LocalCluster's status
    # helpers use asyncio.run: start (and wait for) the cluster in a worker thread.
    with ThreadPoolExecutor(1) as pool:
        c = pool.submit(start_cluster, tmp_path / "c").result()
    try:
        yield c
    finally:
        c.close()
    c.assert_no_overlap()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_login_move_and_see_a_node_die(browser: Browser, cluster: LocalCluster) -> None:
    c = cluster
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(15000)
    dialogs: list[str] = []
    answer = {"accept": True}

    def on_dialog(d: Dialog) -> None:
        dialogs.append(d.message)
        d.accept() if answer["accept"] else d.dismiss()

    page.on("dialog", on_dialog)
    errors: list[Any] = []
    page.on("pageerror", lambda e: errors.append(e))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)

    page.goto(c.api_url("n1") + "/")
    expect(page.locator("#login-form")).to_be_visible()
    shot(page, "01-login")
    page.fill("#token", "not-the-token")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_have_text("wrong token")
    page.fill("#token", TOKEN)
    page.click("#login-button")

    # both nodes up, the group online on n1
    expect(page.locator('#nodes .card[data-node="n1"]')).to_have_attribute("data-state", "up")
    expect(page.locator('#nodes .card[data-node="n2"]')).to_have_attribute("data-state", "up")
    grp = page.locator('#groups .card[data-group="webotx1"]')
    expect(grp).to_have_attribute("data-node", "n1")
    expect(grp).to_have_attribute("data-state", "online")
    expect(grp.locator('[data-resource="exec1"]')).to_have_attribute("data-state", "online")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#events tbody tr").first).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('kagemusha.token')") == TOKEN
    page.evaluate("window.__noReload = 1")  # survives only if the page is never reloaded
    shot(page, "02-cluster-group-on-n1")

    # a dismissed confirmation does nothing
    answer["accept"] = False
    grp.locator('button[data-action="stop"]').click()
    assert dialogs[-1] == "Stop group webotx1? It stays offline until started."
    page.wait_for_timeout(500)
    expect(grp).to_have_attribute("data-state", "online")

    # move to n2, confirmed: the page shows it on n2 without a reload
    answer["accept"] = True
    grp.locator('button[data-action="move"][data-to="n2"]').click()
    assert dialogs[-1] == "Move group webotx1 to n2?"
    expect(grp).to_have_attribute("data-node", "n2")
    expect(grp).to_have_attribute("data-state", "online")
    expect(page.locator('#events tbody tr[data-kind="move_requested"]').first).to_contain_text("api token@127.0.0.1")
    assert page.evaluate("window.__noReload") == 1
    shot(page, "03-moved-to-n2")

    # suspend the monitor (confirmed): it shows as suspended
    grp.locator('button[data-action="suspend"][data-monitor="svcmon"]').click()
    assert dialogs[-1].startswith("Suspend monitor svcmon of webotx1?")
    expect(grp.locator('li[data-monitor="svcmon"]')).to_have_attribute("data-state", "suspended")
    shot(page, "04-monitor-suspended")

    # n2's agent is killed (kill -9): the page marks n2 down and shows the group failed over to n1
    c.crash("n2")
    expect(page.locator('#nodes .card[data-node="n2"]')).to_have_attribute("data-state", "down")
    expect(grp).to_have_attribute("data-node", "n1")
    expect(grp).to_have_attribute("data-state", "online")
    expect(page.locator('#events tbody tr[data-kind="failover"]').first).to_be_visible()
    assert page.evaluate("window.__noReload") == 1
    shot(page, "05-n2-down-failed-over-to-n1")

    # the page's own agent is killed: the page says the connection is lost
    c.crash("n1")
    expect(page.locator("#conn")).to_have_attribute("data-state", "lost")
    expect(page.locator("#banner")).to_contain_text("Lost the connection")
    shot(page, "06-connection-lost")
    assert not errors, errors
    page.close()


def test_logout_and_a_refused_token(browser: Browser, cluster: LocalCluster) -> None:
    page = browser.new_page()
    page.set_default_timeout(15000)
    page.goto(cluster.api_url("n2") + "/")
    page.fill("#token", TOKEN)
    page.click("#login-button")
    expect(page.locator('#groups .card[data-group="webotx1"]')).to_have_attribute("data-node", "n1")
    expect(page.locator("footer")).to_contain_text("served by n2")
    page.reload()  # the token is kept for the tab's session
    expect(page.locator('#groups .card[data-group="webotx1"]')).to_be_visible()
    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('kagemusha.token')") is None
    # a stale token in the session is refused: back to the login form
    page.evaluate("sessionStorage.setItem('kagemusha.token', 'stale')")
    page.reload()
    expect(page.locator("#login-error")).to_contain_text("refused")
    page.close()

"""The portal in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, nothing
downloaded) against ``medaudit web`` served by uvicorn on the loopback address.

A clerk signs in and appeals two findings at once with an attachment; a reviewer signs in,
overturns one and upholds the other; the month is finalized; the clerk downloads the statement
and opens the report, which show both outcomes and the reasons. Screenshots of the main pages
at 1400 px wide are saved under the test's temporary folder (``screens/``), not committed.
"""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from pathlib import Path

import openpyxl
import pytest

from medaudit import db
from kit import set_wall_clock
from test_web import PDF, PW, portal_db  # noqa: F401  (the module's screened database with its users)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path, monkeypatch, portal_db):  # noqa: F811
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium; .ci/run does)")
    pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
    import uvicorn

    from medaudit.web.app import create_app

    src, v = portal_db
    shutil.copy(src, tmp_path / "loop.duckdb")
    set_wall_clock(monkeypatch, "2026-04-01")
    con = db.connect(tmp_path / "loop.duckdb")
    # sessions of 30 days: the walk-through moves the clock past the appeal deadline
    app = create_app(con, tmp_path / "files", session_hours=24 * 30)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("medaudit web did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", con, v
    server.should_exit = True
    t.join(10)
    con.close()


def test_the_whole_loop_in_chromium(served, tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    base, con, v = served
    fid = lambda visit, rule: con.execute(  # noqa: E731
        "SELECT finding_id FROM findings WHERE mdtrt_id = ? AND rule_id = ?", [v[visit], rule]
    ).fetchall()[0][0]
    sex, bed = fid("sex", "R-SEX-001"), fid("bed", "R-FRQ-001")
    screens = tmp_path / "screens"
    screens.mkdir()
    record = tmp_path / "病程记录.pdf"
    record.write_bytes(PDF)

    def shot(page, name):
        page.screenshot(path=str(screens / f"{name}.png"), full_page=True)

    def sign_in(page, user):
        page.goto(f"{base}/login")
        page.fill("#username", user)
        page.fill("#password", PW)
        page.click("#login")
        page.wait_for_load_state()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            viewport = {"width": 1400, "height": 900}
            clerk = browser.new_context(viewport=viewport, accept_downloads=True).new_page()
            clerk.goto(f"{base}/login")
            shot(clerk, "01_login")
            sign_in(clerk, "wangfang")
            assert "王芳" in clerk.inner_text("#who")
            assert clerk.locator("#findings tbody tr[data-finding]").count() == 5
            # two findings at once, with a scanned record
            clerk.check(f'tr[data-finding="{sex}"] input.pick')
            clerk.check(f'tr[data-finding="{bed}"] input.pick')
            clerk.fill("#reason", "患者为女性，HIS 登记错误；两张床位费为不同床位")
            clerk.set_input_files("#files", str(record))
            clerk.click("#submit-appeal")
            clerk.wait_for_load_state()
            assert "已提交 2 条申诉（附件 1 个）" in clerk.inner_text("#flash")
            shot(clerk, "02_hospital_findings_after_appeal")

            reviewer = browser.new_context(viewport=viewport).new_page()
            sign_in(reviewer, "li")
            reviewer.goto(f"{base}/r/queue?sort=amount")
            assert reviewer.locator("#queue tbody tr[data-finding]").count() == 3
            shot(reviewer, "03_reviewer_queue")
            reviewer.click(f'tr[data-finding="{sex}"] a.fid')
            reviewer.wait_for_load_state()
            assert "病程记录.pdf" in reviewer.inner_text("#history")
            shot(reviewer, "04_reviewer_finding")
            reviewer.check("#decision-overturn")
            reviewer.fill("#decide-reason", "病历证实患者为女性，编码登记错误")
            reviewer.click("#submit-decision")
            reviewer.wait_for_load_state()
            assert "申诉成立" in reviewer.inner_text("#status")
            reviewer.goto(f"{base}/findings/{bed}")
            reviewer.check("#decision-uphold")
            reviewer.fill("#decide-reason", "同日两次床位费无转床记录")
            reviewer.click("#submit-decision")
            reviewer.wait_for_load_state()
            assert "申诉驳回" in reviewer.inner_text("#status")

            # the deadline passes; the reviewer finalizes March
            set_wall_clock(monkeypatch, "2026-04-16")
            reviewer.goto(f"{base}/r/finalize")
            reviewer.select_option("#period", "2026-03")
            reviewer.click("#finalize")
            reviewer.wait_for_load_state()
            assert "新扣款单 2 张" in reviewer.inner_text("#flash")
            shot(reviewer, "05_finalize")

            # the clerk: decisions in the list, the statement, the report
            clerk.goto(f"{base}/h/findings?period=2026-03")
            text = clerk.inner_text("#findings")
            assert "病历证实患者为女性，编码登记错误" in text and "同日两次床位费无转床记录" in text
            shot(clerk, "06_hospital_decisions")
            with clerk.expect_download() as dl:
                clerk.click("a.dl-statement")
            data = Path(dl.value.path()).read_bytes()
            cells = " ".join(
                str(c.value)
                for ws in openpyxl.load_workbook(io.BytesIO(data)).worksheets
                for row in ws.iter_rows()
                for c in row
                if c.value is not None
            )
            assert "同日两次床位费无转床记录" in cells
            clerk.goto(f"{base}/report?period=2026-03")
            details = clerk.inner_text("#details")
            assert "撤销扣款 (overturn)：病历证实患者为女性，编码登记错误" in details
            assert "驳回申诉 (uphold)：同日两次床位费无转床记录" in details
            shot(clerk, "07_report")
            # by URL, another institution's finding is not there for this clerk
            other = fid("other", "R-SEX-001")
            resp = clerk.goto(f"{base}/findings/{other}")
            assert resp.status == 404
        finally:
            browser.close()
    shots = sorted(p.name for p in screens.glob("*.png"))
    assert len(shots) == 7 and all((screens / s).stat().st_size > 5000 for s in shots)

"""The deduction report: xlsx and a self-contained HTML page, checked as Chromium renders it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from decimal import Decimal as D

import openpyxl
import pytest

from medaudit.hospital_loop import deduct, lifecycle, report
from kit import set_wall_clock
from test_lifecycle import clock, finding, loop_batch, loop_db

PROBE = """<script>
// what a reader sees: rendered text (innerText follows the layout), the charts' bars, and overflow
window.addEventListener('load', () => {
  const bars = [...document.querySelectorAll('svg rect.bar')].map(r => {
    const b = r.getBoundingClientRect(); return [r.closest('svg').getAttribute('aria-label'), b.width, b.height]; });
  const scroll = document.querySelector('.scroll');
  const out = {text: document.body.innerText, bars,
               details_overflow: scroll ? scroll.scrollWidth - scroll.clientWidth : null,
               page_overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
               fonts: document.fonts.status};
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def chromium_args(tmp_path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,1000",
    ]


def rendered(tmp_path, page) -> dict:
    exe = find_chromium()
    if not exe:
        pytest.skip("chromium not found (apt-get install -y chromium); the HTML report cannot be rendered")
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    out = subprocess.run(
        [exe, *chromium_args(tmp_path), "--virtual-time-budget=3000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    m = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout, re.S)
    assert m, f"chromium rendered nothing: {out.stderr[-2000:]}"
    import html as h

    return json.loads(h.unescape(m.group(1)))


#: the bureau's reference table of names (code_names): D02's name is H001's own, D03's holds for every
#: institution, DR02 has a name, D01 and DR01/DR03 have none (shown as the code alone)
CODE_NAMES = [
    {"kind": "dept", "code": "D02", "code_name": "妇产科", "fixmedins_code": "H001"},
    {"kind": "dept", "code": "D02", "code_name": "别家的科室", "fixmedins_code": "H002"},
    {"kind": "dept", "code": "D03", "code_name": "普通外科", "fixmedins_code": ""},
    {"kind": "doctor", "code": "DR02", "code_name": "孙医生", "fixmedins_code": "H001"},
]


@pytest.fixture
def loop(tmp_path, monkeypatch):
    b, v = loop_batch()
    b.rows["code_names"] += CODE_NAMES
    con = loop_db(tmp_path, monkeypatch, b)
    lifecycle.transition(
        con, finding(con, v["both"], "R-SEX-001")["id"], "appeal", "王芳", "登记错误", clock=clock("2026-04-02")
    )
    deduct.finalize(con, "2026-03", "H001", clock=clock("2026-04-20"))
    return con, v


def test_masking():
    assert report.mask_name("张三") == "张*"
    assert report.mask_name("欧阳娜娜") == "欧***"
    assert report.mask_name("王") == "王*"
    assert report.mask_name(None) == ""
    assert report.mask_certno("11010119900303567X") == "**************567X"
    assert report.mask_certno("1234") == "****"
    assert report.mask_certno("") == ""


def test_report_numbers(loop, tmp_path):
    con, v = loop
    d = report.gather(con, "H001", "2026-03", clock("2026-04-20"))
    t = d.totals
    # sex 180 (final) + both: gender 180 (appealed, provisional) / frequency 0 + bed 30 (final) + suspect 24.70 at risk
    assert (t["n"], t["n_visits"]) == (5, 4)
    assert (t["flagged"], t["deduction"], t["final"], t["at_risk"]) == (
        D("594.70"),
        D("390.00"),
        D("210.00"),
        D("24.70"),
    )
    assert (
        t["deduction"]
        == con.execute(
            "SELECT sum(deduction_amt) FROM findings WHERE fixmedins_code = 'H001' AND period = '2026-03'"
        ).fetchall()[0][0]
    )
    assert [(r[0], r[4], r[6], r[7]) for r in d.by_rule] == [
        ("R-SEX-001", 2, D("360.00"), D("180.00")),
        ("R-FRQ-001", 2, D("30.00"), D("30.00")),
        ("R-AGE-001", 1, D("0.00"), D("0.00")),
    ]
    assert sum(r[3] for r in d.by_dept) == sum(r[4] for r in d.by_doctor) == t["deduction"]
    assert [(s[0], s[4]) for s in d.statements] == [(1, D("210.00"))]
    assert d.trend == [("2026-03", 5, D("594.70"), D("390.00"))]


def test_xlsx_has_every_sheet_masked(loop, tmp_path):
    con, v = loop
    xlsx, page, d = report.build(con, "H001", "2026-03", tmp_path / "out", clock("2026-04-20"))
    wb = openpyxl.load_workbook(xlsx)
    assert wb.sheetnames == ["汇总", "按规则", "按科室", "按医生", "月度趋势", "明细", "明细行"]
    summary = {r[0]: r[1] for r in wb["汇总"].iter_rows(min_row=3, max_row=12, values_only=True)}
    assert summary["扣款金额（元）"] == 390.0 and summary["其中已结算扣款（元）"] == 210.0 and summary["疑点数"] == 5
    details = list(wb["明细"].iter_rows(values_only=True))
    head, rows = details[0], details[1:]
    assert {"依据", "证据", "违规明细", "状态", "申诉截止日"} <= set(head)
    by = {(r[head.index("就诊ID")], r[head.index("规则编号")]): r for r in rows}
    sex = by[(v["sex"], "R-SEX-001")]
    assert sex[head.index("参保人")] == "张*" and sex[head.index("证件号")] == "**************1234"
    assert sex[head.index("状态")] == "逾期未申诉（维持扣款），已列入扣款单 1"
    assert by[(v["both"], "R-SEX-001")][head.index("申诉截止日")] in ("", None)  # appealed: no window open
    text = " ".join(str(c) for s in wb.worksheets for r in s.iter_rows(values_only=True) for c in r)
    for secret in ("张三", "李四", "王小明", "赵敏", "110101198001011234", "11010119900303567X"):
        assert secret not in text
    assert sum(r[head.index("扣款金额（元）")] for r in rows) == pytest.approx(390.0)


def test_html_is_self_contained_and_renders_in_chromium(loop, tmp_path):
    con, v = loop
    # a reviewer's decision after the statement: the page shows it beside the hospital's reason
    lifecycle.transition(
        con,
        finding(con, v["both"], "R-SEX-001")["id"],
        "uphold",
        "审核员甲",
        "性别登记无误，维持扣款",
        clock=clock("2026-04-20"),
    )
    xlsx, page, d = report.build(con, "H001", "2026-03", tmp_path / "out", clock("2026-04-20"))
    src = page.read_text(encoding="utf-8")
    assert "<script" not in src and "http://" not in src and "https://" not in src and "<link" not in src
    for secret in ("张三", "李四", "王小明", "赵敏", "110101198001011234", "1101011980"):
        assert secret not in src
    seen = rendered(tmp_path, page)
    text = seen["text"]
    for shown in (
        "医保基金审核扣款依据报表",
        "2026-03",
        "扣款金额（元）\n390.00",
        "已结算扣款（元）\n210.00",
        "待复核疑点金额（元）\n24.70",
        "按规则汇总",
        "按科室汇总",
        "按医生汇总",
        "疑点明细",
        "月度趋势",
        "R-SEX-001 限女性使用的检查项目",
        "张*",
        "**************1234",
        "逾期未申诉（维持扣款），已列入扣款单 1",
        "2026-04-15",
        "患者性别为男",
        "依据：国家医保局第一批规则库（限定性别对象）",
        # names beside codes, the hospital's reason, the reviewer's decision and reason, the deadline
        "机构：测试医院 (H001)",
        "妇产科 (D02)\n孙医生 (DR02)",
        "普通外科 (D03)",
        "D01\nDR01",
        "医院申诉理由：登记错误（王芳，2026-04-02）",
        "复核结论：驳回申诉 (uphold)：性别登记无误，维持扣款（审核员甲，2026-04-20）",
        "已列入扣款单 1\n(expired)\t2026-04-15",
    ):
        assert shown in text, shown
    assert "张三" not in text
    assert "别家的科室" not in text  # H002's own name for D02 is not H001's
    # charts: money by rule, by department, the trend; bars as long/high as their amounts
    bars = {}
    for label, w, h in seen["bars"]:
        bars.setdefault(label, []).append((round(w, 1), round(h, 1)))
    assert set(bars) == {"扣款金额（按规则）", "扣款金额（按科室）", "月度扣款趋势"}
    rule_w = [w for w, _ in bars["扣款金额（按规则）"]]
    assert rule_w[0] > 0 and rule_w[1] == pytest.approx(rule_w[0] * 30 / 360, abs=1.0) and rule_w[2] == 0
    assert bars["月度扣款趋势"][0][1] > 50
    # nothing spills over the page; the wide details table fits its box
    assert seen["page_overflow"] <= 0
    assert seen["details_overflow"] <= 0


def test_cli_report(loop, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medaudit.cli import app

    con, v = loop
    con.close()
    set_wall_clock(monkeypatch, "2026-04-20")
    r = CliRunner().invoke(
        app,
        [
            "report",
            "--institution",
            "H001",
            "--period",
            "2026-03",
            "--out-dir",
            str(tmp_path / "rep"),
            "--db",
            str(tmp_path / "loop.duckdb"),
        ],
    )
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "5 findings, flagged 594.70, deduction 390.00 (final 210.00), at risk in review 24.70" in flat
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == [
        "扣款依据报表_H001_2026-03.html",
        "扣款依据报表_H001_2026-03.xlsx",
    ]


def test_detail_lines_give_quantity_price_and_units_beyond_the_limit(tmp_path):
    """明细行: a line of 3 units against a daily limit of 1 shows 3, its price and 2 beyond the limit,
    as numbers (issue 11: a clerk checks the excess against the hospital's own records)."""
    from kit import Batch, write_rules
    from medaudit import db as dbm
    from medaudit.engine import screen
    from medaudit.library import load_library
    from medaudit.loader import load_batch
    from medaudit.hospital_loop.report import gather, write_xlsx

    bed = "001102000010000"
    b = Batch()
    v = b.visit(mdtrt_id="VQ", med_type="21", begntime="2026-03-02 08:00:00", endtime="2026-03-05 08:00:00")
    b.line(v, bed, cnt="3", pric="50", bkkp_sn="BED3")
    con = dbm.connect(tmp_path / "t.duckdb")
    load_batch(b.write(tmp_path / "batch"), con)
    rules = write_rules(
        tmp_path / "rules",
        f"""
- id: R-FRQ
  version: 1
  name: 床位费每日限1次
  type: frequency_limit
  items: {{codes: ["{bed}"]}}
  params: {{max_per_day: 1}}
""",
    )
    screen(con, load_library(rules))
    xlsx = write_xlsx(gather(con, "H001", "2026-03"), tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(xlsx)["明细行"]
    head = [c.value for c in ws[1]]
    row = next(r for r in ws.iter_rows(min_row=2, values_only=True) if r[1] == "BED3")
    got = dict(zip(head, row))
    assert (got["数量"], got["单价（元）"], got["超出数量"]) == (3, 50, 2)

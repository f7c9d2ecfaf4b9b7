"""End to end: a generated batch through screen, Excel appeals, review, deadlines, finalize, report.

Every step goes through the ``medaudit`` command with the computer's clock moved to the step's
day (the test-only ``lifecycle.wall_now`` patch; production has no such switch), and after the last step every finding's state and every amount is checked
against an independent recomputation of the money rules.
"""

from __future__ import annotations

import datetime as dt
import shutil
from decimal import ROUND_HALF_UP, Decimal as D
from pathlib import Path

import openpyxl
import pytest
from typer.testing import CliRunner

from medaudit import db
from medaudit.hospital_loop import deduct, report
from medaudit.cli import app
from medaudit.sample.generate import generate

REPO = Path(__file__).resolve().parents[1]

# suspect twins of two sample rules: the same lines, claimed only once a reviewer confirms
SUSPECTS = """
rules:
  - id: R-SUS-001
    version: 1
    name: 限定性别项目（人工复核）
    type: restrict_gender
    severity: suspect
    basis: 稽核科：性别与项目不符需人工复核
    items: {table: tables/gender_items.csv}
  - id: R-SUS-002
    version: 1
    name: 超频次（人工复核）
    type: frequency_limit
    severity: suspect
    stages: [post_hoc]
    basis: 稽核科：频次超限需人工复核
    items: {table: tables/frequency_items.csv}
"""

HOLIDAYS = """# 2026 国庆节、中秋节
2026-10-01 国庆节
2026-10-02 国庆节
2026-10-05 国庆节
2026-10-06 国庆节
2026-10-07 国庆节
2026-10-08 国庆节
2026-10-10 调休上班
"""


def cli(tmp, today: str, *args: str, code: int = 0) -> str:
    from unittest import mock

    from medaudit.hospital_loop import lifecycle

    with mock.patch.object(lifecycle, "wall_now", lifecycle.fixed_clock(today)):
        r = CliRunner().invoke(app, [*args, "--db", str(tmp / "loop.duckdb")])
    assert r.exit_code == code, r.output
    return " ".join(r.output.split())


def q(tmp, sql, args=()):
    con = db.connect(tmp / "loop.duckdb")
    try:
        return con.execute(sql, list(args)).fetchall()
    finally:
        con.close()


def expected_money(tmp) -> dict[str, D]:
    """The never-twice rule recomputed in Python from the stored claims and states."""
    rows = q(
        tmp,
        """SELECT f.finding_id, f.rule_id, f.severity, f.status, coalesce(s.confirmed, FALSE), fl.bkkp_sn, fl.claim
                     FROM findings f JOIN finding_state s USING (finding_id)
                     LEFT JOIN finding_lines fl ON fl.finding_id = f.finding_id AND fl.role = 'violating'""",
    )
    ded = {r[0]: D(0) for r in rows}
    best: dict[str, tuple] = {}
    for fid, rule, sev, status, confirmed, sn, claim in rows:
        if sn is None or claim is None or claim <= 0:
            continue
        if not (sev == "violation" or confirmed) or status in ("overturned", "dismissed", "superseded"):
            continue
        key = (-claim, rule, fid)
        if sn not in best or key < best[sn][0]:
            best[sn] = (key, fid, claim)
    for _, fid, claim in best.values():
        ded[fid] += claim
    return {k: v.quantize(D("0.01"), rounding=ROUND_HALF_UP) for k, v in ded.items()}


def fill_workbook(path: Path, out: Path, reasons: dict[str, tuple[str, str | None]], extra: list[dict]) -> Path:
    wb = openpyxl.load_workbook(path)
    ws = wb["申诉"]
    header = [c.value for c in ws[1]]
    for row in ws.iter_rows(min_row=2):
        fid = row[header.index("疑点编号")].value
        if fid in reasons:
            row[header.index("申诉理由")].value, row[header.index("附件")].value = reasons[fid]
    for e in extra:
        ws.append([e.get(h) for h in header])
    wb.save(out)
    return out


@pytest.mark.slow
def test_the_hospital_loop_end_to_end(tmp_path):
    tmp = tmp_path
    generate(tmp / "batch", visits=400, seed=3)
    shutil.copytree(REPO / "rules", tmp / "rules")
    (tmp / "rules" / "e2e_suspects.yaml").write_text(SUSPECTS, encoding="utf-8")
    (tmp / "holidays.txt").write_text(HOLIDAYS, encoding="utf-8")

    # 0. settings: the holiday calendar and 复议 allowed (5 working days)
    out = cli(
        tmp,
        "2026-10-09",
        "appeal",
        "settings",
        "--holidays",
        str(tmp / "holidays.txt"),
        "--second-appeal",
        "--second-window-days",
        "5",
    )
    assert (
        "appeal window 10 working days; second appeal (复议) allowed, window 5 working days; calendar: 6 holidays, 1 make-up"
        in out
    )

    # 1. screen on Fri 2026-10-09: windows open, 10 working days with Sat Oct 10 a make-up day -> Thu Oct 22
    out = cli(tmp, "2026-10-09", "screen", str(tmp / "batch"), "--rules", str(tmp / "rules"))
    states = dict(q(tmp, "SELECT status, count(*) FROM findings GROUP BY 1"))
    # profiling findings (peer_outlier) are warnings: no money, no appeal; they stay as they are
    warnings = {r[0] for r in q(tmp, "SELECT finding_id FROM findings WHERE status = 'warning'")}
    assert set(states) - {"warning"} == {"pending_appeal", "pending_review"} and states["pending_review"] >= 2
    assert q(
        tmp,
        "SELECT DISTINCT s.deadline FROM findings f JOIN finding_state s USING (finding_id) "
        "WHERE f.status = 'pending_appeal'",
    ) == [(dt.date(2026, 10, 22),)]
    # the month and hospital with the most findings that also has a suspect
    H, P = q(
        tmp,
        """SELECT fixmedins_code, period FROM findings GROUP BY ALL
                     HAVING count(*) FILTER (WHERE severity = 'suspect' AND status <> 'warning') >= 1 AND count(*) FILTER (WHERE severity = 'violation') >= 3
                     ORDER BY count(*) DESC, 1, 2 LIMIT 1""",
    )[0]
    viol = [
        r[0]
        for r in q(
            tmp,
            """SELECT finding_id FROM findings WHERE fixmedins_code = ? AND period = ?
                                    AND severity = 'violation' ORDER BY rule_id, mdtrt_id, finding_id""",
            [H, P],
        )
    ]
    sus = [
        r[0]
        for r in q(
            tmp,
            """SELECT finding_id FROM findings WHERE fixmedins_code = ? AND period = ?
                                   AND severity = 'suspect' AND status <> 'warning' ORDER BY rule_id, mdtrt_id, finding_id""",
            [H, P],
        )
    ]
    other_inst = q(
        tmp,
        "SELECT finding_id FROM findings WHERE fixmedins_code <> ? AND severity = 'violation' ORDER BY 1 LIMIT 1",
        [H],
    )[0][0]
    a_over, a_uphold, a_reappeal = viol[:3]
    s_confirm = sus[0]
    s_dismiss = q(
        tmp,
        "SELECT finding_id FROM findings WHERE severity = 'suspect' AND status <> 'warning' AND finding_id <> ? ORDER BY 1 LIMIT 1",
        [s_confirm],
    )[0][0]

    # 2. the bureau sends the hospital its workbook
    wb = tmp / "hospital" / "申诉.xlsx"
    out = cli(tmp, "2026-10-12", "appeal", "export", "--institution", H, "--period", P, "--out", str(wb))
    n_open = len(viol) + len(sus)
    assert f"{n_open} open findings of {H} for {P}, {len(viol)} of them open for appeal" in out

    # 3. the hospital fills three appeals (one with a scanned record) and pastes a row that is not its own
    (tmp / "hospital" / "病程记录.pdf").write_bytes(b"%PDF scanned progress notes")
    reasons = {
        a_over: ("收费项目编码对照错误，实际为另一项目", "病程记录.pdf"),
        a_uphold: ("医嘱如此", None),
        a_reappeal: ("临床需要", None),
    }
    filled = fill_workbook(
        wb, tmp / "hospital" / "申诉_已填写.xlsx", reasons, [{"疑点编号": other_inst, "申诉理由": "不是本院的"}]
    )
    n_events = q(tmp, "SELECT count(*) FROM finding_events")
    out = cli(tmp, "2026-10-15", "appeal", "import", str(filled), "--by", "医保办 王芳", "--institution", H, code=2)
    assert f"refused whole, nothing was filed: row {n_open + 2}: finding {other_inst} belongs to institution" in out
    assert q(tmp, "SELECT count(*) FROM finding_events") == n_events
    # the hospital sends it again without the foreign row
    filled = fill_workbook(wb, tmp / "hospital" / "申诉_已填写.xlsx", reasons, [])
    out = cli(tmp, "2026-10-15", "appeal", "import", str(filled), "--by", "医保办 王芳", "--institution", H)
    assert f"3 appeals filed for {H}, 0 rows refused, {n_open - 3} findings not appealed" in out

    # 4. review: overturn one, uphold two, confirm one suspect, dismiss another
    cli(
        tmp,
        "2026-10-16",
        "review",
        "decide",
        a_over,
        "--decision",
        "overturn",
        "--by",
        "审核员 李",
        "--reason",
        "编码对照错误属实",
    )
    cli(
        tmp,
        "2026-10-16",
        "review",
        "decide",
        a_uphold,
        "--decision",
        "uphold",
        "--by",
        "审核员 李",
        "--reason",
        "无病历支持",
    )
    cli(
        tmp,
        "2026-10-16",
        "review",
        "decide",
        a_reappeal,
        "--decision",
        "uphold",
        "--by",
        "审核员 李",
        "--reason",
        "无病历支持",
    )
    cli(tmp, "2026-10-16", "review", "decide", s_confirm, "--decision", "confirm", "--by", "审核员 李")
    cli(
        tmp,
        "2026-10-16",
        "review",
        "decide",
        s_dismiss,
        "--decision",
        "dismiss",
        "--by",
        "审核员 李",
        "--reason",
        "病历记载合理",
    )
    # 复议 within its 5 working days (Oct 19..23), upheld again
    cli(tmp, "2026-10-21", "appeal", "submit", a_reappeal, "--by", "医保办 王芳", "--reason", "补充会诊记录")
    cli(
        tmp,
        "2026-10-22",
        "review",
        "decide",
        a_reappeal,
        "--decision",
        "uphold",
        "--by",
        "科长 赵",
        "--reason",
        "复议维持",
    )

    # 5. a finalize before the deadline writes nothing for the hospital's open findings
    cli(tmp, "2026-10-22", "deduct", "finalize", "--period", P, "--institution", H)
    assert q(
        tmp,
        "SELECT count(*) FROM findings f JOIN finding_state s USING (finding_id) WHERE s.statement_id IS NOT NULL "
        "AND f.fixmedins_code = ? AND f.status <> 'upheld'",
        [H],
    ) == [(0,)]

    # 6. the deadline passes; the confirmed suspect's window (opened Oct 16) closes Oct 30
    out = cli(tmp, "2026-11-02", "deduct", "finalize", "--period", P)
    finals = q(
        tmp,
        "SELECT fixmedins_code, total, statement_id FROM deduction_statements WHERE period = ? ORDER BY statement_id",
        [P],
    )
    assert finals and "Deduction statements" in out

    # every state
    status = dict(q(tmp, "SELECT finding_id, status FROM findings"))
    rounds = dict(q(tmp, "SELECT finding_id, appeal_round FROM finding_state"))
    expect = {}
    for fid, sev in q(tmp, "SELECT finding_id, severity FROM findings"):
        expect[fid] = "warning" if fid in warnings else "expired" if sev == "violation" else "pending_review"
    expect.update(
        {a_over: "overturned", a_uphold: "upheld", a_reappeal: "upheld", s_confirm: "expired", s_dismiss: "dismissed"}
    )
    assert status == expect
    assert (rounds[a_uphold], rounds[a_reappeal], rounds[a_over]) == (1, 2, 1)
    # the upheld one without 复议: its second window (Oct 19..23) closed, so it is final too
    assert (
        q(
            tmp,
            "SELECT statement_id IS NOT NULL FROM finding_state WHERE finding_id IN (?, ?, ?) ORDER BY finding_id",
            [a_uphold, a_reappeal, s_confirm],
        )
        == [(True,)] * 3
    )

    # every amount, to the cent: the findings table against the rule recomputed independently
    money = expected_money(tmp)
    stored = {fid: amt for fid, amt in q(tmp, "SELECT finding_id, deduction_amt FROM findings")}
    assert stored == money
    assert money[a_over] == 0 and money[s_dismiss] == 0 and money[s_confirm] >= 0
    # the statements hold exactly the standing findings of the month, per institution (H has two:
    # the 复议 finding went final on Oct 22, the rest after the deadline)
    assert [i for i, _, _ in finals].count(H) == 2
    rows = q(tmp, "SELECT finding_id, fixmedins_code, period, status FROM findings")
    for inst in {i for i, _, _ in finals}:
        standing = sorted(fid for fid, i, p, st in rows if i == inst and p == P and st in ("expired", "upheld"))
        assert sum(t for i, t, _ in finals if i == inst) == sum(money[f] for f in standing), inst
        assert (
            sorted(
                r[0]
                for r in q(
                    tmp,
                    """SELECT i.finding_id FROM deduction_items i JOIN deduction_statements s
                                             USING (statement_id) WHERE s.fixmedins_code = ?""",
                    [inst],
                )
            )
            == standing
        )
    con = db.connect(tmp / "loop.duckdb")
    assert deduct.reconcile(con) == []
    con.close()
    # never twice: no line in two statements, and a line's deduction is at most its largest claim
    assert q(tmp, "SELECT count(*) FROM (SELECT bkkp_sn FROM deduction_lines GROUP BY 1 HAVING count(*) > 1)") == [(0,)]

    # 7. running finalize again changes nothing
    before = q(tmp, "SELECT * FROM deduction_statements ORDER BY 1"), q(tmp, "SELECT count(*) FROM finding_events")
    out = cli(tmp, "2026-11-03", "deduct", "finalize", "--period", P)
    assert "Nothing new stands" in out
    assert (
        q(tmp, "SELECT * FROM deduction_statements ORDER BY 1"),
        q(tmp, "SELECT count(*) FROM finding_events"),
    ) == before

    # 8. the report: the same totals in the xlsx and the HTML page
    out = cli(tmp, "2026-11-03", "report", "--institution", H, "--period", P, "--out-dir", str(tmp / "report"))
    mine = {fid for (fid,) in q(tmp, "SELECT finding_id FROM findings WHERE fixmedins_code = ? AND period = ?", [H, P])}
    total = sum(money[f] for f in mine)
    final_total = sum(t for i, t, _ in finals if i == H)
    flagged = q(tmp, "SELECT sum(flagged_amt) FROM findings WHERE fixmedins_code = ? AND period = ?", [H, P])[0][0]
    assert f"{len(mine)} findings, flagged {flagged:,.2f}, deduction {total:,.2f} (final {final_total:,.2f})" in out
    assert total == final_total  # everything of the month is decided and final now
    wbk = openpyxl.load_workbook(tmp / "report" / f"扣款依据报表_{H}_{P}.xlsx")
    summary = {r[0]: r[1] for r in wbk["汇总"].iter_rows(min_row=3, max_row=12, values_only=True)}
    assert D(str(summary["扣款金额（元）"])).quantize(D("0.01")) == total
    details = list(wbk["明细"].iter_rows(values_only=True))
    h = details[0]
    assert {r[h.index("疑点编号")]: r[h.index("状态")] for r in details[1:]}[a_over] == "申诉成立（撤销扣款）"
    names = {r[0] for r in q(tmp, "SELECT psn_name FROM mdtrt_d WHERE psn_name IS NOT NULL")}
    text = " ".join(str(c) for s in wbk.worksheets for r in s.iter_rows(values_only=True) for c in r)
    page = (tmp / "report" / f"扣款依据报表_{H}_{P}.html").read_text(encoding="utf-8")
    assert not any(n in text or n in page for n in names if len(n) > 1)
    assert f"{total:,.2f}" in page
    from test_report import find_chromium, rendered

    if find_chromium():  # as the hospital sees it (the report test covers the page when chromium is missing)
        seen = rendered(tmp, tmp / "report" / f"扣款依据报表_{H}_{P}.html")
        assert (
            f"扣款金额（元）\n{total:,.2f}" in seen["text"] and f"已结算扣款（元）\n{final_total:,.2f}" in seen["text"]
        )
        assert seen["page_overflow"] <= 0 and seen["details_overflow"] <= 0
    d = report.gather(db.connect(tmp / "loop.duckdb"), H, P)
    assert (d.totals["deduction"], d.totals["final"]) == (total, final_total)

    # 9. the audit trail of the 复议 finding tells its story
    log = q(
        tmp,
        "SELECT actor, action, from_status, to_status FROM finding_events WHERE finding_id = ? ORDER BY event_id",
        [a_reappeal],
    )
    assert log == [
        ("screen run 1", "create", None, "pending_appeal"),
        ("医保办 王芳", "appeal", "pending_appeal", "appealed"),
        ("审核员 李", "uphold", "appealed", "upheld"),
        ("医保办 王芳", "appeal", "upheld", "appealed"),
        ("科长 赵", "uphold", "appealed", "upheld"),
        ("medaudit", "finalize", "upheld", "upheld"),
    ]
    att = q(tmp, "SELECT attachments FROM finding_events WHERE finding_id = ? AND action = 'appeal'", [a_over])[0][0]
    import hashlib

    assert hashlib.sha256(b"%PDF scanned progress notes").hexdigest() in att

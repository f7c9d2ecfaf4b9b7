"""The deduction report (扣款依据报表) a bureau sends one institution for one settlement month.

Two files with the same content: an xlsx (汇总, 按规则, 按科室, 按医生, 明细, 明细行) and a
self-contained HTML page (no script, no web font, no CDN: inline CSS and SVG charts drawn
here) with money by rule, money by department and the monthly trend. Personal data is masked
in both: the name keeps its first character (张*), the ID number its last four digits.

Which findings: the institution's post-hoc findings of the month, except those superseded by
a newer rule version. Money columns: 违规金额 (the flagged lines' amount), 扣款金额 (what the
finding carries under the never-twice rule now: provisional while the appeal is open, 0 once
overturned or dismissed), 已结算扣款 (the part in final deduction statements) and 待复核金额
(the amount at risk of suspects still awaiting review).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import duckdb

from .. import db, money, names, xlsx
from . import lifecycle
from ..prealert import store as prealert_store

PERSON_SQL = """(SELECT mdtrt_id, any_value(psn_name) AS psn_name, any_value(certno) AS certno,
                        any_value(fixmedins_name) AS fixmedins_name FROM mdtrt_d GROUP BY mdtrt_id)"""


#: the last appeal and the last review decision of each finding (``?`` a list of finding ids):
#: finding_id, appeal reason, appeal by, appeal day, attachment names, decision action, by, day, reason
HISTORY_SQL = """
    WITH e AS (SELECT * FROM finding_events WHERE list_contains(?, finding_id))
    SELECT finding_id,
           arg_max(reason, event_id) FILTER (WHERE action = 'appeal'),
           arg_max(actor, event_id) FILTER (WHERE action = 'appeal'),
           arg_max(strftime(coalesce(as_of, CAST(event_at AS DATE)), '%Y-%m-%d'), event_id) FILTER (WHERE action = 'appeal'),
           arg_max(attachments, event_id) FILTER (WHERE action = 'appeal'),
           arg_max(action, event_id) FILTER (WHERE action IN ('uphold', 'overturn', 'confirm', 'dismiss')),
           arg_max(actor, event_id) FILTER (WHERE action IN ('uphold', 'overturn', 'confirm', 'dismiss')),
           arg_max(strftime(coalesce(as_of, CAST(event_at AS DATE)), '%Y-%m-%d'), event_id)
               FILTER (WHERE action IN ('uphold', 'overturn', 'confirm', 'dismiss')),
           arg_max(reason, event_id) FILTER (WHERE action IN ('uphold', 'overturn', 'confirm', 'dismiss'))
    FROM e GROUP BY finding_id
"""


def history(con: duckdb.DuckDBPyConnection, finding_ids: list[str]) -> dict[str, dict]:
    """finding id -> {appeal, decision}: what the hospital said (理由, who, day, attachment names)
    and what the reviewer decided (``驳回申诉 (uphold)``, who, day, reason), as texts a clerk reads;
    "" where there was none."""
    import json

    out: dict[str, dict] = {}
    if not finding_ids:
        return out
    for fid, a_reason, a_by, a_day, a_files, d_action, d_by, d_day, d_reason in con.execute(
        HISTORY_SQL, [list(finding_ids)]
    ).fetchall():
        appeal = decision = ""
        if a_reason is not None:
            files = [f.get("name", "") for f in json.loads(a_files or "[]")]
            appeal = f"{a_reason}（{a_by}，{a_day}" + (f"；附件：{'、'.join(files)}" if files else "") + "）"
        if d_action is not None:
            decision = f"{lifecycle.action_label(d_action)}：{d_reason or '（未写理由）'}（{d_by}，{d_day}）"
        out[fid] = {"appeal": appeal, "decision": decision}
    return out


def line_text_sql(fe: str, fl: str) -> str:
    """One line as a clerk finds it in the hospital's system: 流水号 项目【名称】(编码) 日期 数量×单价，金额."""
    return (
        f"{fl}.bkkp_sn || ' ' || item_ref({fe}.list_type, {fe}.hilist_name, {fe}.hilist_code) || ' ' || "
        f"strftime({fe}.fee_ocur_time, '%Y-%m-%d %H:%M') || ' ' || qty({fe}.cnt) || '×' || yuan({fe}.pric) || "
        f"'，金额 ' || yuan({fl}.line_amt)"
    )


#: a line's billed quantity, unit price and units beyond the limit (numbers; ``fl`` is its
#: finding_lines row), for the 明细行 sheets
LINE_FIGURES_SQL = "fe.cnt, fe.pric, fl.excess_units"
#: their headers and cell kinds (columns from ``first`` on)
LINE_FIGURES_HEAD = ["数量", "单价（元）", "超出数量"]


def line_figure_kinds(first: int) -> dict[int, str]:
    return {first: "qty", first + 1: "price", first + 2: "qty"}


def mask_name(name) -> str:
    """张三 -> 张*, 欧阳娜娜 -> 欧***; empty stays empty."""
    name = ("" if name is None else str(name)).strip()
    return name[0] + "*" * max(1, len(name) - 1) if name else ""


def mask_certno(certno) -> str:
    """Only the last four characters of an ID number stay: **************123X."""
    c = ("" if certno is None else str(certno)).strip()
    if not c:
        return ""
    return "*" * max(len(c) - 4, 0) + c[-4:] if len(c) > 4 else "*" * len(c)


def _d(x) -> Decimal:
    return Decimal(0) if x is None else Decimal(str(x))


def fmt(x) -> str:
    # quantized half-up first: Decimal's own "{:.2f}" would round half-even (10.005 -> 10.00)
    return f"{money.yuan(_d(x)):,.2f}"


@dataclass
class ReportData:
    institution: str
    institution_name: str
    period: str
    generated: dt.datetime
    totals: dict = field(default_factory=dict)
    by_status: list = field(default_factory=list)  # (cn, status, n, deduction)
    by_rule: list = field(default_factory=list)  # (rule_id, name, nature, basis, n, flagged, deduction, final)
    by_dept: list = field(default_factory=list)  # (dept, n, flagged, deduction, final)
    by_doctor: list = field(default_factory=list)  # (doctor, dept, n, flagged, deduction, final)
    trend: list = field(default_factory=list)  # (period, n, flagged, deduction)
    details: list = field(default_factory=list)  # dicts
    lines: list = field(default_factory=list)  # tuples
    statements: list = field(default_factory=list)  # (statement_id, seq, created, n, total)
    watch: str = "否"  # 重点监控 status of the institution (and its watched doctors)


def gather(
    con: duckdb.DuckDBPyConnection, institution: str, period: str, clock: lifecycle.Clock | None = None
) -> ReportData:
    clock = clock or lifecycle.default_clock
    now = clock()
    with db.transaction(con):
        lifecycle.expire_due(con, clock)
        money.settle_deductions(con)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE __rep AS
            SELECT f.*, coalesce(s.deadline, (SELECT max(i.deadline) FROM deduction_items i WHERE i.finding_id = f.finding_id))
                       AS deadline,
                   s.statement_id, coalesce(s.confirmed, FALSE) AS confirmed,
                   CASE WHEN s.statement_id IS NOT NULL THEN f.deduction_amt ELSE 0 END AS final_amt,
                   CASE WHEN f.status = 'pending_review' THEN f.claimed_amt ELSE 0 END AS at_risk,
                   p.psn_name, p.certno, p.fixmedins_name
            FROM findings f LEFT JOIN finding_state s USING (finding_id)
            LEFT JOIN {PERSON_SQL} p ON p.mdtrt_id = f.mdtrt_id
            WHERE f.stage = 'post_hoc' AND f.fixmedins_code = ? AND f.period = ? AND f.status <> 'superseded'""",
        [institution, period],
    )
    q = lambda sql, a=(): con.execute(sql, list(a)).fetchall()  # noqa: E731
    nm = names.Names(con)
    d = ReportData(institution, nm.name("institution", institution), period, now)
    t = q("""SELECT count(*), coalesce(sum(flagged_amt), 0), coalesce(sum(deduction_amt), 0), coalesce(sum(final_amt), 0),
                    coalesce(sum(at_risk), 0), count(*) FILTER (WHERE status = 'pending_appeal'),
                    count(*) FILTER (WHERE status = 'pending_review'), count(DISTINCT mdtrt_id) FROM __rep""")[0]
    d.totals = dict(
        zip(("n", "flagged", "deduction", "final", "at_risk", "n_pending_appeal", "n_pending_review", "n_visits"), t)
    )
    d.by_status = [
        (lifecycle.STATUS_CN.get(s, s), s, n, ded)
        for s, n, ded in q("SELECT status, count(*), sum(deduction_amt) FROM __rep GROUP BY 1 ORDER BY 2 DESC, 1")
    ]
    d.by_rule = q("""SELECT rule_id, any_value(rule_name), any_value(nature), any_value(basis), count(*),
                            sum(flagged_amt), sum(deduction_amt), sum(final_amt)
                     FROM __rep GROUP BY rule_id ORDER BY 7 DESC, 6 DESC, 1""")
    unfilled = "（未填）"
    d.by_dept = [
        (nm.dept(institution, r[0]) or unfilled, *r[1:])
        for r in q(
            """SELECT dept_code, count(*), sum(flagged_amt), sum(deduction_amt), sum(final_amt)
           FROM __rep GROUP BY 1 ORDER BY 4 DESC, 3 DESC, 1 NULLS LAST"""
        )
    ]
    d.by_doctor = [
        (nm.doctor(institution, r[0]) or unfilled, nm.dept(institution, r[1]), *r[2:])
        for r in q(
            """SELECT dr_code, any_value(dept_code), count(*), sum(flagged_amt), sum(deduction_amt), sum(final_amt)
           FROM __rep GROUP BY 1 ORDER BY 5 DESC, 4 DESC, 1 NULLS LAST"""
        )
    ]
    d.trend = q(
        """SELECT period, count(*), sum(flagged_amt), sum(deduction_amt) FROM findings
                   WHERE stage = 'post_hoc' AND fixmedins_code = ? AND status <> 'superseded' AND period <= ?
                   GROUP BY 1 ORDER BY 1 DESC LIMIT 12""",
        [institution, period],
    )[::-1]
    rows = q(f"""SELECT r.finding_id, r.rule_id, r.rule_name, r.nature, r.severity, r.status, r.confirmed, r.deadline,
                        r.statement_id, r.mdtrt_id, r.setl_id, r.psn_name, r.certno, r.dept_code, r.dr_code,
                        r.flagged_amt, r.deduction_amt, r.at_risk, r.basis, r.evidence,
                        (SELECT string_agg({line_text_sql("fe", "fl")}, '\n' ORDER BY fe.fee_ocur_time, fl.bkkp_sn)
                         FROM finding_lines fl JOIN fee_list_d fe ON fe.bkkp_sn = fl.bkkp_sn
                         WHERE fl.finding_id = r.finding_id AND fl.role = 'violating') AS lines
                 FROM __rep r ORDER BY r.rule_id, r.mdtrt_id, r.finding_id""")
    keys = (
        "finding_id",
        "rule_id",
        "rule_name",
        "nature",
        "severity",
        "status",
        "confirmed",
        "deadline",
        "statement_id",
        "mdtrt_id",
        "setl_id",
        "psn_name",
        "certno",
        "dept_code",
        "dr_code",
        "flagged",
        "deduction",
        "at_risk",
        "basis",
        "evidence",
        "lines",
    )
    # the doctor's answer to a pre-alert on the same rule, visit and item, as part of the evidence
    prealert = prealert_store.evidence_for(con, [r[0] for r in rows])
    hist = history(con, [r[0] for r in rows])
    for r in rows:
        x = dict(zip(keys, r))
        x.update(hist.get(x["finding_id"], {"appeal": "", "decision": ""}))
        x["dept"] = nm.dept(institution, x["dept_code"])
        x["doctor"] = nm.doctor(institution, x["dr_code"])
        if x["finding_id"] in prealert:
            x["evidence"] = f"{x['evidence']}\n{prealert[x['finding_id']]}"
        x["patient"] = mask_name(x.pop("psn_name"))
        x["certno"] = mask_certno(x["certno"])
        x["status_cn"] = status_text(x["status"], x["confirmed"], x["statement_id"])
        d.details.append(x)
    d.lines = q(f"""SELECT fl.finding_id, fl.bkkp_sn, CASE fl.role WHEN 'violating' THEN '违规项' ELSE '涉及项' END,
                          fe.hilist_code, fe.hilist_name, strftime(fe.fee_ocur_time, '%Y-%m-%d %H:%M'),
                          {LINE_FIGURES_SQL}, fl.line_amt,
                          CAST(round(fl.claim, 2) AS DECIMAL(18,2)), CAST(round(fl.carried, 2) AS DECIMAL(18,2))
                   FROM finding_lines fl JOIN __rep r USING (finding_id) LEFT JOIN fee_list_d fe ON fe.bkkp_sn = fl.bkkp_sn
                   ORDER BY r.rule_id, r.mdtrt_id, fl.finding_id, fl.role DESC, fe.fee_ocur_time, fl.bkkp_sn""")
    d.statements = q(
        """SELECT statement_id, seq, strftime(created_at, '%Y-%m-%d'), n_findings, total
                        FROM deduction_statements WHERE fixmedins_code = ? AND period = ? ORDER BY 1""",
        [institution, period],
    )
    con.execute("DROP TABLE __rep")
    # 重点监控: the institution's own entry and its doctors' (medaudit/supervision/watch.py)
    w = q(
        """SELECT entity, entity_kind, entered_on, reason FROM watchlist
             WHERE left_on IS NULL AND fixmedins_code = ? ORDER BY entity_kind DESC, entity""",
        [institution],
    )
    if w:
        d.watch = "；".join(
            f"{'机构' if k == 'institution' else '医生 ' + e.split('/', 1)[1]}自 {on} 起重点监控（{why}）"
            for e, k, on, why in w
        )
    return d


def status_text(status: str, confirmed: bool = False, statement_id=None) -> str:
    s = lifecycle.STATUS_CN.get(status, status)
    if confirmed and status in ("pending_appeal", "appealed", "upheld", "overturned", "expired"):
        s += "（疑点经复核确认）"
    if statement_id is not None:
        s += f"，已列入扣款单 {statement_id}"
    return s


# ---------------------------------------------------------------------------- xlsx


def write_xlsx(d: ReportData, path: Path) -> Path:
    """The report as a workbook; counts, quantities and amounts are number cells (:class:`xlsx.Cells`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb = xlsx.workbook(path)
    title = wb.add_format({"bold": True, "font_size": 14})
    head = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True, "valign": "vcenter"})
    cells = xlsx.Cells(wb)

    def table(ws, r0, cols, rows, kinds=None, widths=None):
        for j, c in enumerate(cols):
            ws.write_string(r0, j, c, head)
            if widths and j in widths:
                ws.set_column(j, j, widths[j])
        for i, r in enumerate(rows, r0 + 1):
            cells.row(ws, i, r, kinds)
        return r0 + len(rows) + 1

    ws = wb.add_worksheet("汇总")
    ws.set_column(0, 0, 22)
    ws.set_column(1, 4, 16)
    inst = names.label(d.institution_name, d.institution)
    ws.write_string(0, 0, f"扣款依据报表 {inst} {d.period}", title)
    t = d.totals
    kv = [
        ("机构", inst),
        ("结算月份", d.period),
        ("生成时间", d.generated.strftime("%Y-%m-%d %H:%M")),
        ("疑点数", t["n"]),
        ("涉及就诊人次", t["n_visits"]),
        ("违规金额（元）", t["flagged"]),
        ("扣款金额（元）", t["deduction"]),
        ("其中已结算扣款（元）", t["final"]),
        ("待复核疑点金额（元）", t["at_risk"]),
        ("待申诉疑点数", t["n_pending_appeal"]),
        ("重点监控", d.watch),
    ]
    for i, (k, v) in enumerate(kv, 2):
        ws.write_string(i, 0, k, head)
        cells.put(ws, i, 1, v)
    r = len(kv) + 3
    ws.write_string(r, 0, "按状态", title)
    r = table(ws, r + 1, ["状态", "状态代码", "疑点数", "扣款金额（元）"], d.by_status)
    if d.statements:
        ws.write_string(r + 1, 0, "扣款单", title)
        table(ws, r + 2, ["扣款单号", "第几次", "生成日期", "疑点数", "扣款合计（元）"], d.statements)

    ws = wb.add_worksheet("按规则")
    end = table(
        ws,
        0,
        ["规则编号", "规则名称", "问题性质", "依据", "疑点数", "违规金额（元）", "扣款金额（元）", "已结算扣款（元）"],
        d.by_rule,
        widths={0: 14, 1: 28, 2: 12, 3: 36, 5: 14, 6: 14, 7: 14},
    )
    if d.by_rule:
        chart = wb.add_chart({"type": "bar"})
        chart.add_series(
            {"name": "扣款金额", "categories": ["按规则", 1, 1, end - 1, 1], "values": ["按规则", 1, 6, end - 1, 6]}
        )
        chart.set_title({"name": "扣款金额（按规则）"})
        chart.set_legend({"none": True})
        ws.insert_chart(end + 1, 1, chart)
    ws = wb.add_worksheet("按科室")
    end = table(
        ws,
        0,
        ["科室", "疑点数", "违规金额（元）", "扣款金额（元）", "已结算扣款（元）"],
        d.by_dept,
        widths={0: 22, 2: 14, 3: 14, 4: 14},
    )
    if d.by_dept:
        chart = wb.add_chart({"type": "column"})
        chart.add_series(
            {"name": "扣款金额", "categories": ["按科室", 1, 0, end - 1, 0], "values": ["按科室", 1, 3, end - 1, 3]}
        )
        chart.set_title({"name": "扣款金额（按科室）"})
        chart.set_legend({"none": True})
        ws.insert_chart(end + 1, 0, chart)
    ws = wb.add_worksheet("按医生")
    table(
        ws,
        0,
        ["医生", "科室", "疑点数", "违规金额（元）", "扣款金额（元）", "已结算扣款（元）"],
        d.by_doctor,
        widths={0: 18, 1: 22, 3: 14, 4: 14, 5: 14},
    )
    ws = wb.add_worksheet("月度趋势")
    table(ws, 0, ["结算月份", "疑点数", "违规金额（元）", "扣款金额（元）"], d.trend, widths={0: 12, 2: 14, 3: 14})
    ws = wb.add_worksheet("明细")
    cols = [
        "疑点编号",
        "规则编号",
        "规则名称",
        "问题性质",
        "状态",
        "状态代码",
        "申诉截止日",
        "就诊ID",
        "结算ID",
        "参保人",
        "证件号",
        "科室",
        "医生",
        "违规明细",
        "违规金额（元）",
        "扣款金额（元）",
        "待复核金额（元）",
        "依据",
        "证据",
        "医院申诉理由",
        "复核结论及理由",
    ]
    rows = [
        (
            x["finding_id"],
            x["rule_id"],
            x["rule_name"],
            x["nature"],
            x["status_cn"],
            x["status"],
            x["deadline"],
            x["mdtrt_id"],
            x["setl_id"],
            x["patient"],
            x["certno"],
            x["dept"],
            x["doctor"],
            x["lines"],
            x["flagged"],
            x["deduction"],
            x["at_risk"],
            x["basis"],
            x["evidence"],
            x["appeal"],
            x["decision"],
        )
        for x in d.details
    ]
    table(ws, 0, cols, rows, widths={0: 34, 2: 22, 4: 20, 11: 18, 12: 16, 13: 48, 17: 28, 18: 60, 19: 40, 20: 40})
    ws.freeze_panes(1, 1)
    ws = wb.add_worksheet("明细行")
    table(
        ws,
        0,
        [
            "疑点编号",
            "明细流水号",
            "角色",
            "医保目录编码",
            "名称",
            "收费时间",
            *LINE_FIGURES_HEAD,
            "净金额（元）",
            "主张扣款（元）",
            "承担扣款（元）",
        ],
        d.lines,
        kinds=line_figure_kinds(6),
        widths={0: 34, 3: 26, 4: 24, 5: 17},
    )
    wb.close()
    return path


# ---------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:"Noto Sans CJK SC","Noto Sans SC","Source Han Sans SC","Microsoft YaHei","PingFang SC",sans-serif;
     margin:0;background:#f4f6f9;color:#1f2933;font-size:14px}
header{background:#1f4e79;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:22px} header p{margin:0;opacity:.85}
main{padding:20px 32px;max-width:1440px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:18px}
.card{background:#fff;border-radius:6px;padding:12px 16px;flex:1;min-width:120px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card .k{color:#52606d;font-size:13px} .card .v{font-size:22px;font-weight:600;margin-top:4px}
.card.hi .v{color:#b42318}
section{background:#fff;border-radius:6px;padding:14px 18px;margin-bottom:18px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:17px;margin:0 0 10px;color:#1f4e79}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:18px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border:1px solid #d9e2ec;padding:5px 7px;vertical-align:top;text-align:left}
th{background:#e8f0f8;font-weight:600} td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.ev{max-width:420px;overflow-wrap:anywhere} td.ln{white-space:pre-line;overflow-wrap:anywhere;font-size:12px;color:#323f4b;max-width:360px}
tr.dead td{color:#7b8794} .st{white-space:nowrap}
#details td:nth-child(2){min-width:150px} .basis{color:#52606d;font-size:12px;margin-top:3px} #details td:nth-child(3){min-width:70px}
#details td:nth-child(4){min-width:100px} #details td:nth-child(5){min-width:84px}
.scroll{overflow-x:auto}
#details td:nth-child(12){min-width:150px}
#details tr.evrow td{background:#fbfcfe;border-top:none;color:#323f4b;padding:4px 7px 10px;white-space:pre-line}
#details tbody tr:not(.evrow) td{border-bottom:none} #details td.ln{min-width:150px} #details td:nth-child(7){overflow-wrap:anywhere;min-width:120px}
.note{color:#52606d;font-size:12px} .code{color:#52606d;font-size:12px}
svg text{font-family:inherit}
@media print{body{background:#fff} header{background:#fff;color:#1f2933;border-bottom:2px solid #1f4e79}
  section,.card{box-shadow:none;border:1px solid #d9e2ec} .scroll{overflow:visible} .charts{display:block}}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _hbar_svg(items: list[tuple[str, Decimal]], title: str, width: int = 560) -> str:
    """Horizontal bars, one per item, labelled with the name and the amount."""
    items = items[:12]
    if not items:
        return f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="40"><text x="0" y="24">无数据</text></svg>'
    top = max((_d(v) for _, v in items), default=Decimal(0)) or Decimal(1)
    label_w, row_h, bar_max = 250, 26, width - 250 - 90
    h = row_h * len(items) + 10
    out = [f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="{h}" viewBox="0 0 {width} {h}">']
    for i, (name, v) in enumerate(items):
        y = 5 + i * row_h
        w = max(float(_d(v) / top) * bar_max, 1 if _d(v) > 0 else 0)
        short = name if len(name) <= 20 else name[:19] + "…"
        out.append(
            f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end" font-size="12"><title>{_e(name)}</title>{_e(short)}</text>'
        )
        out.append(
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="#2e75b6" rx="2"/>'
        )
        out.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" font-size="12" fill="#323f4b">{fmt(v)}</text>')
    out.append("</svg>")
    return "".join(out)


def _trend_svg(trend: list, title: str, width: int = 1180, height: int = 220) -> str:
    if not trend:
        return f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="40"><text x="0" y="24">无数据</text></svg>'
    top = max((_d(r[3]) for r in trend), default=Decimal(0)) or Decimal(1)
    left, bottom, plot_h = 60, 40, height - 40 - 30
    slot = (width - left - 10) / max(len(trend), 1)
    bw = min(60, slot * 0.6)
    out = [
        f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#9aa5b1"/>',
    ]
    for i, (period, n, flagged, ded) in enumerate(trend):
        x = left + i * slot + (slot - bw) / 2
        h = float(_d(ded) / top) * plot_h
        y = height - bottom - h
        out.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{h:.1f}" fill="#2e75b6" rx="2"/>'
        )
        out.append(f'<text x="{x + bw / 2:.1f}" y="{y - 5:.1f}" text-anchor="middle" font-size="12">{fmt(ded)}</text>')
        out.append(
            f'<text x="{x + bw / 2:.1f}" y="{height - bottom + 18}" text-anchor="middle" font-size="12">{_e(period)}（{n} 条）</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _table(cols: list[str], rows: list[list], num: AbstractSet[int] = frozenset(), row_class=None) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cls = f' class="{row_class(r)}"' if row_class and row_class(r) else ""
        tds = []
        for j, v in enumerate(r):
            if j in num:
                tds.append(f'<td class="n">{fmt(v) if not isinstance(v, int) else f"{v:,}"}</td>')
            else:
                tds.append(f"<td>{_e(v)}</td>")
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(d: ReportData) -> str:
    t = d.totals
    cards = [
        ("疑点数", f"{t['n']:,}", False),
        ("涉及就诊", f"{t['n_visits']:,}", False),
        ("违规金额（元）", fmt(t["flagged"]), False),
        ("扣款金额（元）", fmt(t["deduction"]), True),
        ("已结算扣款（元）", fmt(t["final"]), False),
        ("待复核疑点金额（元）", fmt(t["at_risk"]), False),
        ("待申诉疑点", f"{t['n_pending_appeal']:,}", False),
    ]
    cards_html = "".join(
        f'<div class="card{" hi" if hi else ""}"><div class="k">{_e(k)}</div><div class="v">{v}</div></div>'
        for k, v, hi in cards
    )
    rule_chart = _hbar_svg([(f"{r[0]} {r[1]}", r[6]) for r in d.by_rule], "扣款金额（按规则）")
    dept_chart = _hbar_svg([(r[0], r[3]) for r in d.by_dept], "扣款金额（按科室）")
    trend_chart = _trend_svg(d.trend, "月度扣款趋势")
    dead = {"overturned", "dismissed"}
    details = []
    for x in d.details:
        cls = ' class="dead"' if x["status"] in dead else ""
        details.append(
            f"<tr{cls}><td>{_e(x['finding_id'][:12])}</td><td>{_e(x['rule_id'])}<br>{_e(x['rule_name'])}"
            f'<div class="basis">依据：{_e(x["basis"])}</div></td>'
            f'<td>{_e(x["nature"])}</td><td>{_e(x["status_cn"])}<br><span class="code">({_e(x["status"])})</span></td>'
            f'<td class="st">{_e(x["deadline"] or "")}</td>'
            f"<td>{_e(x['mdtrt_id'])}</td><td>{_e(x['patient'])}<br>{_e(x['certno'])}</td>"
            f'<td>{_e(x["dept"])}<br>{_e(x["doctor"])}</td><td class="ln">{_e(x["lines"] or "")}</td>'
            f'<td class="n">{fmt(x["flagged"])}</td><td class="n">{fmt(x["deduction"])}</td></tr>'
            f'<tr class="evrow{" dead" if x["status"] in dead else ""}"><td colspan="11"><b>证据：</b>{_e(x["evidence"])}'
            + (f"\n<b>医院申诉理由：</b>{_e(x['appeal'])}" if x["appeal"] else "")
            + (f"\n<b>复核结论：</b>{_e(x['decision'])}" if x["decision"] else "")
            + "</td></tr>"
        )
    detail_head = "".join(
        f"<th>{c}</th>"
        for c in (
            "疑点编号",
            "规则及依据",
            "问题性质",
            "状态",
            "申诉截止日",
            "就诊ID",
            "参保人 / 证件号",
            "科室 / 医生",
            "违规明细",
            "违规金额（元）",
            "扣款金额（元）",
        )
    )
    statements = ""
    if d.statements:
        statements = (
            "<section><h2>扣款单</h2>"
            + _table(
                ["扣款单号", "第几次", "生成日期", "疑点数", "扣款合计（元）"], [list(s) for s in d.statements], num={4}
            )
            + "</section>"
        )
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>扣款依据报表 {_e(d.institution)} {_e(d.period)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body><header><h1>医保基金审核扣款依据报表</h1>
<p>机构：{_e(names.label(d.institution_name, d.institution))} ｜ 结算月份：{_e(d.period)} ｜ 生成时间：{
        d.generated:%Y-%m-%d %H:%M}</p>
<p id="watch">重点监控：{_e(d.watch)}</p></header>
<main>
<div class="cards" id="totals">{cards_html}</div>
<section><h2>按状态</h2>{
        _table(["状态", "状态代码", "疑点数", "扣款金额（元）"], [list(s) for s in d.by_status], num={2, 3})
    }
<p class="note">扣款金额：每条明细只扣一次（多条规则命中同一明细时取最高主张）；申诉期内为暂定金额，申诉成立或疑点排除后为 0。个人信息已脱敏。</p></section>
{statements}
<section class="charts"><div><h2>扣款金额（按规则）</h2>{rule_chart}</div><div><h2>扣款金额（按科室）</h2>{
        dept_chart
    }</div></section>
<section><h2>月度趋势（扣款金额）</h2>{trend_chart}</section>
<section><h2>按规则汇总</h2>{
        _table(
            [
                "规则编号",
                "规则名称",
                "问题性质",
                "依据",
                "疑点数",
                "违规金额（元）",
                "扣款金额（元）",
                "已结算扣款（元）",
            ],
            [list(r) for r in d.by_rule],
            num={4, 5, 6, 7},
        )
    }</section>
<section><h2>按科室汇总</h2>{
        _table(
            ["科室", "疑点数", "违规金额（元）", "扣款金额（元）", "已结算扣款（元）"],
            [list(r) for r in d.by_dept],
            num={1, 2, 3, 4},
        )
    }</section>
<section><h2>按医生汇总</h2>{
        _table(
            ["医生", "科室", "疑点数", "违规金额（元）", "扣款金额（元）", "已结算扣款（元）"],
            [list(r) for r in d.by_doctor],
            num={2, 3, 4, 5},
        )
    }</section>
<section><h2>疑点明细</h2><div class="scroll"><table id="details"><thead><tr>{detail_head}</tr></thead><tbody>{
        "".join(details)
    }</tbody></table></div></section>
</main></body></html>
"""


def build(
    con: duckdb.DuckDBPyConnection, institution: str, period: str, out_dir: Path, clock: lifecycle.Clock | None = None
) -> tuple[Path, Path, ReportData]:
    d = gather(con, institution, period, clock)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"扣款依据报表_{institution}_{period}"
    xlsx = write_xlsx(d, out_dir / f"{stem}.xlsx")
    page = out_dir / f"{stem}.html"
    page.write_text(render_html(d), encoding="utf-8")
    return xlsx, page, d

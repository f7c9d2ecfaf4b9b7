"""Final deductions: the deduction statement (扣款单) of a settlement month.

``finalize`` takes the post-hoc findings of a period (and institution) whose deduction stands
and can no longer change — ``expired`` (no appeal in time, confirmed suspects included) and
``upheld`` (appeal rejected, with no 复议 window still open) — and writes them into one
statement per institution: the findings with their deduction (``deduction_items``) and the
lines that carry the money (``deduction_lines``). Those findings are final from then on:
nothing moves them, re-screening does not touch them, and :mod:`medaudit.money` keeps a line
that a statement deducted away from every other finding (never twice, across statements too).

A standing finding waits when one of its lines carries money for a finding still open (the
line's deduction is the largest claim, and that claim is not decided yet): it is finalized by
a later run, once the other finding is decided. Running ``finalize`` again with nothing newly
standing writes nothing; newly standing findings go into a supplementary statement.

The statement total is the sum of its findings' deductions (each rounded half-up to 0.01
once), which is exactly ``findings.deduction_amt`` of the same findings: :func:`reconcile`
checks it, and ``finalize`` refuses to commit a statement that does not reconcile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import duckdb

from .. import db, money, xlsx
from . import lifecycle

SCHEMA = """
CREATE TABLE IF NOT EXISTS deduction_statements (
    statement_id INTEGER PRIMARY KEY,
    period VARCHAR,
    fixmedins_code VARCHAR,
    seq INTEGER,                 -- 1 the month's statement, 2.. supplementary ones
    created_at TIMESTAMP,
    created_by VARCHAR,
    n_findings INTEGER,
    n_lines INTEGER,
    total DECIMAL(18,2),
    as_of DATE                   -- finalize --as-of: the day the statement was judged on (NULL: its creation day)
);
ALTER TABLE deduction_statements ADD COLUMN IF NOT EXISTS as_of DATE;
CREATE TABLE IF NOT EXISTS deduction_items (
    statement_id INTEGER, finding_id VARCHAR, status VARCHAR, amount DECIMAL(18,2),
    deadline DATE                -- the last day of its appeal window (the state forgets it once final)
);
ALTER TABLE deduction_items ADD COLUMN IF NOT EXISTS deadline DATE;
CREATE TABLE IF NOT EXISTS deduction_lines (
    statement_id INTEGER, finding_id VARCHAR, bkkp_sn VARCHAR, amount DECIMAL(38,12)
);
"""


class DeductError(Exception):
    pass


@dataclass
class Statement:
    statement_id: int
    period: str
    institution: str
    seq: int
    n_findings: int
    n_lines: int
    total: Decimal


@dataclass
class FinalizeResult:
    statements: list[Statement] = field(default_factory=list)
    held: list[tuple[str, str]] = field(default_factory=list)  # (finding_id, why it waits)
    not_final: dict[str, int] = field(default_factory=dict)  # status -> findings still open in scope
    expired_now: int = 0


def _scope(period: str, institution: str | None) -> tuple[str, list]:
    where, args = "f.stage = 'post_hoc' AND f.period = ?", [period]
    if institution:
        where += " AND f.fixmedins_code = ?"
        args.append(institution)
    return where, args


def finalize(
    con: duckdb.DuckDBPyConnection,
    period: str,
    institution: str | None = None,
    by: str = "medaudit",
    clock: lifecycle.Clock | None = None,
) -> FinalizeResult:
    clock = clock or lifecycle.default_clock
    today = clock().date()
    at, as_of = lifecycle.wall_now(), lifecycle.as_of_of(clock)
    res = FinalizeResult()
    with db.transaction(con):
        res.expired_now = lifecycle.expire_due(con, clock)
        money.settle_deductions(con)
        where, args = _scope(period, institution)
        second = lifecycle.settings(con)["second_appeal"] == "true"
        rows = con.execute(
            f"""SELECT f.finding_id, f.status, coalesce(s.appeal_round, 0), s.deadline
                FROM findings f JOIN finding_state s USING (finding_id)
                WHERE {where} AND s.statement_id IS NULL AND f.status IN ('upheld', 'expired')
                  AND {money.CLAIMING}
                ORDER BY f.finding_id""",
            args,
        ).fetchall()
        cand = [r[0] for r in rows if lifecycle.is_final_outcome(r[1], r[2], r[3], second, today)]
        con.execute("CREATE OR REPLACE TEMP TABLE __cand (finding_id VARCHAR)")
        if cand:
            con.executemany("INSERT INTO __cand VALUES (?)", [[c] for c in cand])
        held = con.execute(
            """SELECT fl.finding_id, arg_min([fl.bkkp_sn, left(o.finding_id, 12), o.status], [fl.bkkp_sn, o.finding_id])
               FROM finding_lines fl JOIN __cand c USING (finding_id)
               JOIN finding_lines cl ON cl.bkkp_sn = fl.bkkp_sn AND cl.carried > 0 AND cl.finding_id <> fl.finding_id
               JOIN findings o ON o.finding_id = cl.finding_id
               JOIN finding_state os ON os.finding_id = o.finding_id
               WHERE fl.role = 'violating' AND fl.claim > 0 AND os.statement_id IS NULL
                 AND cl.finding_id NOT IN (SELECT finding_id FROM __cand)
               GROUP BY fl.finding_id ORDER BY 1"""
        ).fetchall()
        res.held = [
            (h[0], f"{h[1][0]} 的扣款由疑点 {h[1][1]}（{lifecycle.status_label(h[1][2])}）承担，等待其结案")
            for h in held
        ]
        if held:
            con.executemany("DELETE FROM __cand WHERE finding_id = ?", [[h[0]] for h in held])
        res.not_final = dict(
            con.execute(
                f"""SELECT f.status, count(*) FROM findings f JOIN finding_state s USING (finding_id)
                WHERE {where} AND s.statement_id IS NULL AND f.status NOT IN ('overturned', 'dismissed', 'superseded')
                  AND f.finding_id NOT IN (SELECT finding_id FROM __cand)
                GROUP BY 1 ORDER BY 1""",
                args,
            ).fetchall()
        )
        insts = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT f.fixmedins_code FROM findings f JOIN __cand USING (finding_id) ORDER BY 1"
            ).fetchall()
        ]
        for inst in insts:
            sid = con.execute("SELECT coalesce(max(statement_id), 0) + 1 FROM deduction_statements").fetchall()[0][0]
            seq = con.execute(
                "SELECT count(*) + 1 FROM deduction_statements WHERE period = ? AND fixmedins_code = ?", [period, inst]
            ).fetchall()[0][0]
            con.execute(
                """INSERT INTO deduction_items (statement_id, finding_id, status, amount, deadline)
                   SELECT ?, f.finding_id, f.status, f.deduction_amt, s.deadline
                   FROM findings f JOIN __cand USING (finding_id) JOIN finding_state s USING (finding_id)
                   WHERE f.fixmedins_code = ?""",
                [sid, inst],
            )
            con.execute(
                """INSERT INTO deduction_lines
                   SELECT ?, fl.finding_id, fl.bkkp_sn, fl.carried FROM finding_lines fl
                   JOIN deduction_items i ON i.finding_id = fl.finding_id AND i.statement_id = ?
                   WHERE fl.role = 'violating' AND fl.carried > 0""",
                [sid, sid],
            )
            n_f, total = con.execute(
                "SELECT count(*), coalesce(sum(amount), 0) FROM deduction_items WHERE statement_id = ?", [sid]
            ).fetchall()[0]
            n_l = con.execute("SELECT count(*) FROM deduction_lines WHERE statement_id = ?", [sid]).fetchall()[0][0]
            con.execute(
                "INSERT INTO deduction_statements (statement_id, period, fixmedins_code, seq, created_at, "
                "created_by, n_findings, n_lines, total, as_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [sid, period, inst, seq, at, by, n_f, n_l, total, as_of],
            )
            con.execute(
                "UPDATE finding_state SET statement_id = ?, deadline = NULL WHERE finding_id IN "
                "(SELECT finding_id FROM deduction_items WHERE statement_id = ?)",
                [sid, sid],
            )
            con.execute(
                """INSERT INTO finding_events (finding_id, event_at, actor, action, from_status, to_status, reason, attachments, as_of)
                   SELECT finding_id, CAST(? AS TIMESTAMP), ?, 'finalize', status, status,
                          '列入扣款单 ' || ? || '（' || ? || '），扣款 ' || CAST(amount AS VARCHAR) || ' 元', '[]', CAST(? AS DATE)
                   FROM deduction_items WHERE statement_id = ? ORDER BY finding_id""",
                [at, by, sid, period, as_of, sid],
            )
            problems = reconcile(con, sid)
            if problems:
                raise DeductError(f"statement {sid} does not reconcile: " + "; ".join(problems))
            res.statements.append(Statement(sid, period, inst, seq, n_f, n_l, total))
        con.execute("DROP TABLE __cand")
        if res.statements:
            # the statements' violations go into the credit files in the same transaction
            from ..supervision import credit

            credit.record(con, by, [s.statement_id for s in res.statements], f"扣款单 {period} 确认的违规")
    return res


def reconcile(con: duckdb.DuckDBPyConnection, statement_id: int | None = None) -> list[str]:
    """Differences between statements, their lines and the findings table (empty: all agree to the cent)."""
    cond = "" if statement_id is None else f"WHERE s.statement_id = {int(statement_id)}"
    problems = []
    for sid, total, items, findings_total in con.execute(
        f"""SELECT s.statement_id, s.total,
                   (SELECT coalesce(sum(amount), 0) FROM deduction_items i WHERE i.statement_id = s.statement_id),
                   (SELECT coalesce(sum(f.deduction_amt), 0) FROM findings f JOIN deduction_items i USING (finding_id)
                    WHERE i.statement_id = s.statement_id)
            FROM deduction_statements s {cond} ORDER BY 1"""
    ).fetchall():
        if not (total == items == findings_total):
            problems.append(f"statement {sid}: total {total}, items {items}, findings {findings_total}")
    for sid, fid, amount, lines in con.execute(
        f"""SELECT i.statement_id, i.finding_id, i.amount,
                   CAST(round(coalesce((SELECT sum(l.amount) FROM deduction_lines l
                         WHERE l.statement_id = i.statement_id AND l.finding_id = i.finding_id), 0), 2) AS DECIMAL(18,2))
            FROM deduction_items i JOIN deduction_statements s USING (statement_id) {cond}"""
    ).fetchall():
        if amount != lines:
            problems.append(f"statement {sid} finding {fid[:12]}: {amount} but its lines add to {lines}")
    dup = con.execute("SELECT bkkp_sn, count(*) FROM deduction_lines GROUP BY 1 HAVING count(*) > 1 LIMIT 5").fetchall()
    problems += [f"line {sn} deducted {n} times" for sn, n in dup]
    return problems


def statements(
    con: duckdb.DuckDBPyConnection, period: str | None = None, institution: str | None = None
) -> list[Statement]:
    where, args = ["TRUE"], []
    if period:
        where.append("period = ?")
        args.append(period)
    if institution:
        where.append("fixmedins_code = ?")
        args.append(institution)
    rows = con.execute(
        f"""SELECT statement_id, period, fixmedins_code, seq, n_findings, n_lines, total FROM deduction_statements
            WHERE {" AND ".join(where)} ORDER BY statement_id""",
        args,
    ).fetchall()
    return [Statement(*r) for r in rows]


def last_run_statements(con: duckdb.DuckDBPyConnection, period: str, institution: str | None = None) -> list[int]:
    """The statements the last ``finalize`` of the period (and institution) wrote: one run
    stamps all its statements with the same ``created_at`` (two runs stamped with the same
    time are taken together). What ``finalize --out``
    writes when the run itself has nothing new, e.g. run again after it was killed between its
    COMMIT and its workbook."""
    where, args = "period = ?", [period]
    if institution:
        where += " AND fixmedins_code = ?"
        args.append(institution)
    return [
        r[0]
        for r in con.execute(
            f"""SELECT statement_id FROM deduction_statements
            WHERE {where} AND created_at = (SELECT max(created_at) FROM deduction_statements WHERE {where})
            ORDER BY statement_id""",
            args + args,
        ).fetchall()
    ]


def write_statement_xlsx(con: duckdb.DuckDBPyConnection, statement_ids: list[int], path: Path) -> Path:
    """The statements as a workbook: one summary sheet, one sheet of findings, one of lines.

    Like every workbook of the project (:mod:`medaudit.xlsx`) it appears under ``path`` only
    whole, so an interrupted write never leaves a half-written 扣款单 under the name the clerk
    asked for."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_statement_xlsx(con, statement_ids, path)
    return path


def _write_statement_xlsx(con: duckdb.DuckDBPyConnection, statement_ids: list[int], path: Path) -> None:
    from .. import names
    from .report import LINE_FIGURES_HEAD, LINE_FIGURES_SQL, history, line_figure_kinds, mask_certno, mask_name

    ids = ", ".join(str(int(i)) for i in statement_ids) or "NULL"
    wb = xlsx.workbook(path)
    head = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True})
    cells = xlsx.Cells(wb)
    nm = names.Names(con)

    def sheet(name, cols, rows, kinds=None, widths=None):
        ws = wb.add_worksheet(name)
        for j, c in enumerate(cols):
            ws.write_string(0, j, c, head)
            ws.set_column(j, j, (widths or {}).get(j, 14))
        for i, r in enumerate(rows, 1):
            cells.row(ws, i, r, kinds)
        ws.freeze_panes(1, 0)
        return ws

    st = con.execute(
        f"""SELECT statement_id, fixmedins_code, period, seq, strftime(created_at, '%Y-%m-%d %H:%M'), created_by,
                   n_findings, n_lines, total, strftime(as_of, '%Y-%m-%d')
            FROM deduction_statements WHERE statement_id IN ({ids}) ORDER BY 1"""
    ).fetchall()
    st = [(r[0], nm.institution(r[1])) + r[2:] for r in st]
    sheet(
        "扣款单",
        [
            "扣款单号",
            "机构",
            "结算月份",
            "第几次",
            "生成时间",
            "生成人",
            "疑点数",
            "扣款明细行数",
            "扣款合计（元）",
            "判定日（--as-of）",
        ],
        st,
        widths={1: 28},
    )
    items = con.execute(
        f"""SELECT i.statement_id, f.finding_id, f.rule_id, f.rule_name, f.nature, i.status, i.deadline, f.mdtrt_id,
                   v.psn_name, v.certno, f.fixmedins_code, f.dept_code, f.dr_code, f.flagged_amt, i.amount, f.basis,
                   f.evidence
            FROM deduction_items i JOIN findings f USING (finding_id)
            LEFT JOIN (SELECT mdtrt_id, any_value(psn_name) AS psn_name, any_value(certno) AS certno
                       FROM mdtrt_d GROUP BY 1) v ON v.mdtrt_id = f.mdtrt_id
            WHERE i.statement_id IN ({ids}) ORDER BY i.statement_id, f.rule_id, f.mdtrt_id, f.finding_id"""
    ).fetchall()
    hist = history(con, [r[1] for r in items])
    rows = []
    for (
        sid,
        fid,
        rule,
        rname,
        nature,
        status,
        deadline,
        visit,
        psn,
        certno,
        inst,
        dept,
        dr,
        flagged,
        amount,
        basis,
        evidence,
    ) in items:
        h = hist.get(fid, {"appeal": "", "decision": ""})
        rows.append(
            (
                sid,
                fid,
                rule,
                rname,
                nature,
                lifecycle.status_label(status),
                deadline,
                visit,
                mask_name(psn),
                mask_certno(certno),
                nm.dept(inst, dept),
                nm.doctor(inst, dr),
                flagged,
                amount,
                h["appeal"],
                h["decision"],
                basis,
                evidence,
            )
        )
    sheet(
        "扣款疑点",
        [
            "扣款单号",
            "疑点编号",
            "规则编号",
            "规则名称",
            "问题性质",
            "状态",
            "申诉截止日",
            "就诊ID",
            "参保人",
            "证件号",
            "科室",
            "医生",
            "违规金额（元）",
            "扣款金额（元）",
            "医院申诉理由",
            "复核结论及理由",
            "依据",
            "证据",
        ],
        rows,
        widths={1: 34, 3: 24, 5: 24, 10: 18, 11: 16, 14: 40, 15: 40, 16: 30, 17: 60},
    )
    lines = con.execute(
        f"""SELECT l.statement_id, l.finding_id, l.bkkp_sn, fe.hilist_code, fe.hilist_name,
                   strftime(fe.fee_ocur_time, '%Y-%m-%d %H:%M'), {LINE_FIGURES_SQL}, fe.det_item_fee_sumamt,
                   CAST(round(l.amount, 2) AS DECIMAL(18,2))
            FROM deduction_lines l LEFT JOIN fee_list_d fe ON fe.bkkp_sn = l.bkkp_sn
            LEFT JOIN finding_lines fl ON fl.finding_id = l.finding_id AND fl.bkkp_sn = l.bkkp_sn
            WHERE l.statement_id IN ({ids}) ORDER BY l.statement_id, l.finding_id, l.bkkp_sn"""
    ).fetchall()
    sheet(
        "扣款明细行",
        [
            "扣款单号",
            "疑点编号",
            "明细流水号",
            "医保目录编码",
            "名称",
            "收费时间",
            *LINE_FIGURES_HEAD,
            "金额（元）",
            "扣款（元）",
        ],
        lines,
        kinds=line_figure_kinds(6),
        widths={1: 34, 3: 26, 4: 24},
    )
    wb.close()

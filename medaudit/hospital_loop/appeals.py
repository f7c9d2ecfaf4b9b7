"""The hospital's round trip in Excel: export the open findings, read the filled workbook back.

``export_workbook`` writes one institution's open findings of a settlement month to an xlsx
the hospital's clerk can work in: sheet 申诉 has one row per finding (evidence, lines,
amounts, state, deadline, and 事前提醒及医生处理: the doctor's answer when the same rule warned
about the same item at the doctor's desk) and two yellow columns to fill, 申诉理由 and 附件
(file names of the supporting materials, sent along in the same folder as the workbook);
sheet 明细 lists every
line of those findings; sheet 说明 says which institution and month the workbook is for.

``import_workbook`` files an appeal for every row whose yellow columns were filled, for the
institution the bureau names (``--institution``: who sent the workbook; its 说明 sheet is not
trusted). A workbook naming any finding that is not that institution's (another's, or one that
does not exist) is refused whole and nothing is filed. Otherwise a row is refused, with the
reason, when its finding is not open for appeal (already appealed, decided, final...), is past
its deadline, has no reason, or names an attachment that is not a plain file name in the
workbook's folder or is not there; the other rows still go in. Untouched rows are counted, not
refused: the hospital accepts those deductions.

The bureau's columns are locked (sheet protection; only the yellow cells are unlocked) and their
exported values are kept in a very hidden sheet, ``_exported``. Protection without a password
can be lifted, so the import compares each row with what was exported: a row whose bureau
cells were changed (an edited 扣款金额, a cleared row) is named in the receipt with the change;
without a reason it is refused (never read as "not appealed"), with one it is filed on the
bureau's values. A workbook never changes a finding's money.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from .. import db, money, names, xlsx
from . import lifecycle
from ..prealert import store as prealert_store
from .report import (
    LINE_FIGURES_HEAD,
    LINE_FIGURES_SQL,
    PERSON_SQL,
    line_figure_kinds,
    line_text_sql,
    mask_certno,
    mask_name,
)

SHEET = "申诉"
COL_ID, COL_REASON, COL_ATTACH = "疑点编号", "申诉理由", "附件"
#: the doctor's answer to a pre-alert on the same rule, visit and item (medaudit/prealert/store.py)
COL_PREALERT = "事前提醒及医生处理"
COLUMNS = [
    COL_ID,
    "规则编号",
    "规则名称",
    "问题性质",
    "状态",
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
    "依据",
    "证据",
    COL_PREALERT,
    COL_REASON,
    COL_ATTACH,
]
#: the hospital's columns: the only unlocked cells of the protected sheet
HOSPITAL_COLUMNS = (COL_REASON, COL_ATTACH)
#: the bureau's columns, locked; their exported values are kept in a very hidden sheet, and an
#: import names every one that was changed anyway (sheet protection has no real password)
BUREAU_COLUMNS = [c for c in COLUMNS if c not in HOSPITAL_COLUMNS]
#: the very hidden sheet (not listed by Excel's 取消隐藏) with the exported bureau values, one row a finding
ORIGINAL_SHEET = "_exported"


class AppealFileError(Exception):
    pass


def open_findings_sql(second_appeal: bool) -> str:
    """Open findings of one institution and month (``?`` institution, ``?`` period, ``?`` today)."""
    reappeal = (
        "OR (f.status = 'upheld' AND coalesce(s.appeal_round, 0) < 2 AND s.deadline >= CAST(? AS DATE))"
        if second_appeal
        else "OR (FALSE AND CAST(? AS DATE) IS NULL)"
    )
    return f"""
        SELECT f.finding_id, f.rule_id, f.rule_name, f.nature, f.status, s.deadline, f.mdtrt_id, f.setl_id,
               p.psn_name, p.certno, f.dept_code, f.dr_code,
               (SELECT string_agg({line_text_sql("fe", "fl")}, '\n' ORDER BY fe.fee_ocur_time, fl.bkkp_sn)
                FROM finding_lines fl JOIN fee_list_d fe ON fe.bkkp_sn = fl.bkkp_sn
                WHERE fl.finding_id = f.finding_id AND fl.role = 'violating') AS lines,
               f.flagged_amt,
               CASE WHEN f.status = 'pending_review' THEN f.claimed_amt ELSE f.deduction_amt END AS amount,
               f.basis, f.evidence
        FROM findings f JOIN finding_state s USING (finding_id)
        LEFT JOIN {PERSON_SQL} p ON p.mdtrt_id = f.mdtrt_id
        WHERE f.stage = 'post_hoc' AND f.fixmedins_code = ? AND f.period = ? AND s.statement_id IS NULL
          AND (f.status IN ('pending_appeal', 'appealed', 'pending_review') {reappeal})
        ORDER BY s.deadline NULLS LAST, f.rule_id, f.mdtrt_id, f.finding_id
    """


@dataclass
class ExportResult:
    path: Path
    n_findings: int
    n_appealable: int


def export_workbook(
    con: duckdb.DuckDBPyConnection, institution: str, period: str, path: Path, clock: lifecycle.Clock | None = None
) -> ExportResult:

    clock = clock or lifecycle.default_clock
    now = clock()
    lifecycle.expire_due(con, clock)
    money.settle_deductions(con)
    second = lifecycle.settings(con)["second_appeal"] == "true"
    rows = con.execute(open_findings_sql(second), [institution, period, now.date()]).fetchall()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb = xlsx.workbook(path)
    head = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True, "valign": "vcenter"})
    fill_head = wb.add_format(
        {"bold": True, "bg_color": "#FFD966", "border": 1, "text_wrap": True, "valign": "vcenter"}
    )
    fill = wb.add_format({"border": 1, "text_wrap": True, "valign": "top", "bg_color": "#FFF2CC", "locked": False})
    cells = xlsx.Cells(wb)
    nm = names.Names(con)
    ws = wb.add_worksheet(SHEET)
    widths = {
        COL_ID: 34,
        "规则名称": 22,
        "状态": 22,
        "科室": 16,
        "医生": 14,
        "违规明细": 48,
        "依据": 26,
        "证据": 60,
        COL_PREALERT: 40,
        COL_REASON: 40,
        COL_ATTACH: 24,
    }
    for j, c in enumerate(COLUMNS):
        ws.write(0, j, c, fill_head if c in HOSPITAL_COLUMNS else head)
        ws.set_column(j, j, widths.get(c, 12))
    prealert = prealert_store.evidence_for(con, [r[0] for r in rows])
    appealable = 0
    exported = []
    for i, r in enumerate(rows, 1):
        status = r[4]
        can = status == "pending_appeal" or status == "upheld"
        appealable += can
        vals = [
            r[0],
            r[1],
            r[2],
            r[3],
            lifecycle.status_label(status) + ("" if can else "（无需填写）"),
            str(r[5] or ""),
            r[6],
            r[7],
            mask_name(r[8]),
            mask_certno(r[9]),
            nm.dept(institution, r[10]),
            nm.doctor(institution, r[11]),
            r[12] or "",
            r[13] or 0,
            r[14] or 0,
            r[15] or "",
            r[16] or "",
            prealert.get(r[0], ""),
        ]
        cells.row(ws, i, vals)
        ws.write_blank(i, len(vals), None, fill)
        ws.write_blank(i, len(vals) + 1, None, fill)
        exported.append(vals)
    ws.freeze_panes(1, 1)
    ws.autofilter(0, 0, max(len(rows), 1), len(COLUMNS) - 1)
    # only the yellow cells can be edited; filtering, sorting and resizing stay allowed
    ws.protect("", {"autofilter": True, "sort": True, "format_columns": True, "format_rows": True})

    ls = wb.add_worksheet("明细")
    lcols = [
        "疑点编号",
        "明细流水号",
        "角色",
        "医保目录编码",
        "名称",
        "收费时间",
        *LINE_FIGURES_HEAD,
        "金额（元）",
        "本疑点主张扣款（元）",
    ]
    for j, c in enumerate(lcols):
        ls.write(0, j, c, head)
        ls.set_column(j, j, {0: 34, 3: 26, 4: 24, 5: 17}.get(j, 12))
    ids = [r[0] for r in rows]
    lrows = []
    if ids:
        con.execute("CREATE OR REPLACE TEMP TABLE __ids (finding_id VARCHAR)")
        con.executemany("INSERT INTO __ids VALUES (?)", [[x] for x in ids])
        lrows = con.execute(
            f"""SELECT fl.finding_id, fl.bkkp_sn, CASE fl.role WHEN 'violating' THEN '违规项' ELSE '涉及项' END,
                      fe.hilist_code, fe.hilist_name, strftime(fe.fee_ocur_time, '%Y-%m-%d %H:%M'),
                      {LINE_FIGURES_SQL}, fe.det_item_fee_sumamt, CAST(round(fl.claim, 2) AS DECIMAL(18,2))
               FROM finding_lines fl JOIN __ids USING (finding_id) LEFT JOIN fee_list_d fe ON fe.bkkp_sn = fl.bkkp_sn
               ORDER BY fl.finding_id, fl.role DESC, fe.fee_ocur_time, fl.bkkp_sn"""
        ).fetchall()
        con.execute("DROP TABLE __ids")
    for i, r in enumerate(lrows, 1):
        cells.row(ls, i, r, line_figure_kinds(6))
    ls.freeze_panes(1, 0)
    ls.protect("", {"autofilter": True, "sort": True, "format_columns": True, "format_rows": True})

    info = wb.add_worksheet("说明")
    info.set_column(0, 0, 14)
    info.set_column(1, 1, 90)
    for i, (k, v) in enumerate(
        [
            ("机构编码", institution),
            ("结算月份", period),
            ("导出时间", now.strftime("%Y-%m-%d %H:%M")),
            ("疑点数", len(rows)),
            ("可申诉", appealable),
            (
                "填写方法",
                "对有异议的疑点，在“申诉”表黄色列填写申诉理由；佐证材料放在本文件同一文件夹，"
                "在“附件”列写文件名（多个用分号分隔）。不填写的疑点视为无异议。请在申诉截止日（含当日）前提交。",
            ),
            ("个人信息", "参保人姓名和证件号已脱敏。"),
        ]
    ):
        info.write(i, 0, k, head)
        cells.put(info, i, 1, v)
    info.protect()
    orig = wb.add_worksheet(ORIGINAL_SHEET)
    cells.row(orig, 0, BUREAU_COLUMNS)
    for i, vals in enumerate(exported, 1):
        cells.row(orig, i, vals)
    orig.protect()
    orig.very_hidden()
    wb.close()
    return ExportResult(path, len(rows), appealable)


@dataclass
class ImportResult:
    institution: str
    filed: list[tuple[int, str]] = field(default_factory=list)  # (row, finding id)
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # (row, finding id, reason)
    untouched: int = 0
    #: (row, finding id, what was changed): bureau cells edited in the workbook; a row with a reason
    #: is still filed (on the bureau's values), a row without one is refused, never read as "not appealed"
    edited: list[tuple[int, str, str]] = field(default_factory=list)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def read_workbook(path: Path) -> tuple[dict[str, str], list[tuple[int, dict[str, str]]]]:
    info, rows, _ = read_workbook_with_originals(path)
    return info, rows


def read_workbook_with_originals(path: Path):
    """(说明 as a dict, the 申诉 rows as (row number, {column: text}), the exported bureau values
    as {finding id: (exported row number, {column: text})}: empty for a workbook without them)."""
    import openpyxl

    path = Path(path)
    if not path.is_file():
        raise AppealFileError(f"{path}: no such file")
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # a broken or non-xlsx file
        raise AppealFileError(f"{path}: not a readable xlsx workbook ({e})") from None
    if SHEET not in wb.sheetnames:
        raise AppealFileError(f"{path}: no sheet {SHEET!r} (export one with `medaudit appeal export`)")
    info = {}
    if "说明" in wb.sheetnames:
        for r in wb["说明"].iter_rows(values_only=True):
            if r and r[0]:
                info[_cell(r[0])] = _cell(r[1] if len(r) > 1 else None)
    rows = wb[SHEET].iter_rows(values_only=True)
    header = [_cell(c) for c in next(rows, [])]
    for need in (COL_ID, COL_REASON):
        if need not in header:
            raise AppealFileError(f"{path}: sheet {SHEET} has no column {need!r}")
    out = []
    for no, r in enumerate(rows, 2):
        d = {h: _cell(r[j]) if j < len(r) else "" for j, h in enumerate(header) if h}
        if any(d.values()):
            out.append((no, d))
    originals = {}
    if ORIGINAL_SHEET in wb.sheetnames:
        orows = wb[ORIGINAL_SHEET].iter_rows(values_only=True)
        oheader = [_cell(c) for c in next(orows, [])]
        for no, r in enumerate(orows, 2):
            d = {h: _cell(r[j]) if j < len(r) else "" for j, h in enumerate(oheader) if h}
            if d.get(COL_ID):
                originals[d[COL_ID]] = (no, d)
    wb.close()
    return info, out, originals


def edited_cells(row: dict[str, str], original: dict[str, str]) -> list[str]:
    """The bureau's cells of one row that differ from what was exported: ``扣款金额（元） 180 → 0``."""
    return [
        f"{c}“{original[c]}”改为“{row[c]}”"
        for c in BUREAU_COLUMNS
        if c in original and c in row and row[c] != original[c]
    ]


class WorkbookRefused(AppealFileError):
    """The whole workbook is refused (a finding of another institution, or one that does not
    exist); nothing was filed. ``rows`` are (row, finding id, the reason for the hospital's
    receipt): the receipt does not say whose a foreign finding is, or that it exists."""

    def __init__(self, message: str, rows: list[tuple[int, str, str]]):
        super().__init__(message)
        self.rows = rows


#: what a receipt says about a row whose bureau cells were changed
EDITED = "局方列被修改（不作为申诉，按导出时的原值处理）"

#: what a hospital's receipt says about a row that names a finding it may not appeal
NOT_YOURS = "疑点编号不是本机构的疑点（或不存在），整份工作簿未受理；请删除该行后重新提交"


def import_workbook(
    con: duckdb.DuckDBPyConnection, path: Path, by: str, institution: str | None, clock: lifecycle.Clock | None = None
) -> ImportResult:
    """File the appeals of a filled workbook for ``institution``, which the bureau says (who
    sent the workbook); the workbook's own 机构编码 is never trusted. Every finding id in the
    workbook must be one of that institution's findings, else nothing is filed
    (:class:`WorkbookRefused`). Other problems refuse only their row."""
    clock = clock or lifecycle.default_clock
    now = clock()
    path = Path(path)
    if not (by or "").strip():
        raise AppealFileError("say who files the appeals (--by NAME)")
    _, rows, originals = read_workbook_with_originals(path)
    ids = sorted({d.get(COL_ID, "") for _, d in rows} - {""})
    owners = (
        dict(
            con.execute(
                "SELECT finding_id, fixmedins_code FROM findings WHERE list_contains(?, finding_id)", [ids]
            ).fetchall()
        )
        if ids
        else {}
    )
    inst = (institution or "").strip()
    if not inst:
        owners_seen = sorted(set(owners.values()))
        raise AppealFileError(
            f"{path}: say whose workbook this is with --institution CODE (the institution that sent it; the "
            f"workbook's own 机构编码 is not trusted)"
            + (f"; its findings belong to {', '.join(owners_seen)}" if owners_seen else "")
        )
    problems = []
    for no, d in rows:
        fid = d.get(COL_ID, "")
        if not fid:
            continue
        if fid not in owners:
            problems.append((no, fid, f"row {no}: finding {fid} does not exist"))
        elif owners[fid] != inst:
            problems.append((no, fid, f"row {no}: finding {fid} belongs to institution {owners[fid]}, not {inst}"))
    if problems:
        shown = "; ".join(m for _, _, m in problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise WorkbookRefused(
            f"{path}: refused whole, nothing was filed: {shown}", [(no, fid, NOT_YOURS) for no, fid, _ in problems]
        )
    res = ImportResult(inst)
    with db.transaction(con):
        lifecycle.expire_due(con, clock)
        seen = set()
        for no, d in rows:
            fid, reason, attach = d.get(COL_ID, ""), d.get(COL_REASON, ""), d.get(COL_ATTACH, "")
            seen.add(fid)
            edits = edited_cells(d, originals[fid][1]) if fid in originals else []
            if edits:
                res.edited.append((no, fid, "；".join(edits)))
            if not reason and not attach:
                if edits:
                    res.refused.append(
                        (no, fid, f"{EDITED}：{'；'.join(edits)}。对扣款有异议请在“{COL_REASON}”列填写理由")
                    )
                else:
                    res.untouched += 1
                continue
            why = _row_refusal(con, fid, inst, reason, now)
            files: list[dict] = []
            if not why and attach:
                files, why = attachments_in(path.parent, attach)
            if not why:
                try:
                    lifecycle.transition(con, fid, "appeal", by, reason, files, clock=clock)
                except lifecycle.LifecycleError as e:
                    why = str(e)
            if why:
                res.refused.append((no, fid, why))
            else:
                res.filed.append((no, fid))
        for fid, (no, _) in sorted(originals.items(), key=lambda x: x[1][0]):
            if fid not in seen:  # its row was cleared, or its 疑点编号 changed
                res.refused.append(
                    (
                        no,
                        fid,
                        f"导出时第 {no} 行的疑点在工作簿中找不到（行被清空或疑点编号被修改），未受理；"
                        "如有异议请重新导出后填写",
                    )
                )
        money.settle_deductions(con)
    return res


_BAD_NAME_CHARS = set("/\\:") | {chr(c) for c in range(32)} | {"\x7f"}


def plain_file_name(name: str) -> bool:
    """A file name with no folder in it: no separator, no drive, not ``.``/``..``, not absolute."""
    return (
        bool(name)
        and name not in (".", "..")
        and not (set(name) & _BAD_NAME_CHARS)
        and Path(name).name == name
        and not Path(name).is_absolute()
    )


def attachments_in(folder: Path, text: str) -> tuple[list[dict], str | None]:
    """The attachments a row names (``a.pdf；b.jpg``), read from the workbook's folder.

    Returns (records, None) or ([], the reason for the hospital). Only plain file names are
    accepted, and a name whose real path (symlinks followed) leaves the folder is refused
    before anything outside is looked at: the reason never tells whether a path outside the
    folder exists."""
    names = [a.strip() for a in text.replace("；", ";").replace(",", ";").replace("，", ";").split(";") if a.strip()]
    bad = [n for n in names if not plain_file_name(n)]
    if bad:
        return [], (f"附件只能写文件名（放在工作簿同一文件夹，不能含路径、“..”或盘符）：{'、'.join(bad)}")
    root = Path(folder).resolve()
    real, outside, missing = [], [], []
    for n in names:
        p = (root / n).resolve()
        if p.parent != root and root not in p.parents:
            outside.append(n)
        elif not p.is_file():
            missing.append(n)
        else:
            real.append((n, p))
    if outside:
        return [], f"附件指向工作簿文件夹之外，不予读取：{'、'.join(outside)}"
    if missing:
        return [], f"附件不存在：{'、'.join(missing)}（请放在工作簿同一文件夹）"
    return [lifecycle.file_record(p, n) for n, p in real], None


def _row_refusal(con, fid: str, inst: str, reason: str, now: dt.datetime) -> str | None:
    if not fid:
        return "疑点编号为空"
    rows = con.execute(
        """SELECT f.fixmedins_code, f.status, s.deadline, s.statement_id FROM findings f
           LEFT JOIN finding_state s USING (finding_id) WHERE f.finding_id = ?""",
        [fid],
    ).fetchall()
    if not rows or rows[0][0] != inst:  # checked for the whole workbook before; kept as a guard
        return NOT_YOURS
    owner, status, deadline, statement = rows[0]
    if statement is not None:
        return f"疑点 {fid[:12]} 已列入扣款单 {statement}，不能再申诉"
    if status == "expired" or (status == "pending_appeal" and deadline is not None and now.date() > deadline):
        return f"疑点 {fid[:12]} 申诉期已于 {deadline} 截止（今天 {now.date()}），不能再申诉"
    if status not in ("pending_appeal", "upheld"):
        return f"疑点 {fid[:12]} 状态为 {lifecycle.STATUS_CN.get(status, status)}（{status}），不在可申诉状态"
    if not reason:
        return f"疑点 {fid[:12]} 未填写申诉理由"
    return None


def write_receipt(res: ImportResult | WorkbookRefused, source: Path, path: Path) -> Path:
    """The import's receipt (回执) for the hospital: every filled row, filed or refused with the
    reason; for a workbook refused whole, the rows that made it so."""
    whole = isinstance(res, WorkbookRefused)
    if isinstance(res, WorkbookRefused):
        res = ImportResult("", refused=list(res.rows))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb = xlsx.workbook(path)
    head = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1})
    cell = wb.add_format({"border": 1, "text_wrap": True, "valign": "top"})
    bad = wb.add_format({"border": 1, "text_wrap": True, "valign": "top", "font_color": "#B42318"})
    ws = wb.add_worksheet("回执")
    for j, (c, w) in enumerate([("行号", 8), ("疑点编号", 36), ("结果", 10), ("原因", 80)]):
        ws.write(0, j, c, head)
        ws.set_column(j, j, w)
    notes = {(no, fid): text for no, fid, text in getattr(res, "edited", [])}
    rows = sorted(
        [(no, fid, "已受理", f"{EDITED}：{notes[(no, fid)]}" if (no, fid) in notes else "") for no, fid in res.filed]
        + [(no, fid, "未受理", why) for no, fid, why in res.refused]
    )
    for i, (no, fid, result, why) in enumerate(rows, 1):
        f = bad if why else cell
        ws.write_number(i, 0, no, f)
        ws.write_string(i, 1, fid or "", f)
        ws.write_string(i, 2, result, f)
        ws.write_string(i, 3, why, f)
    if whole:
        ws.write_string(
            len(rows) + 2,
            0,
            f"{Path(source).name}：整份工作簿未受理（以上 {len(rows)} 行的疑点编号不是本机构的疑点），"
            "没有受理任何申诉；请删除这些行后重新提交。",
        )
    else:
        ws.write_string(
            len(rows) + 2,
            0,
            f"{Path(source).name}：受理 {len(res.filed)} 条，未受理 {len(res.refused)} 条，"
            f"未申诉（视为无异议）{res.untouched} 条"
            + (f"，其中 {len(res.edited)} 行修改了局方列（见原因）" if res.edited else "")
            + "。",
        )
    wb.close()
    return path

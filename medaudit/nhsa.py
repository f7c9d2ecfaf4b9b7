"""Import the national knowledge batches (国家医保局两库知识点) as a rule library.

The bureaus receive the knowledge points as Excel workbooks, one per batch and kind, with
Chinese sheet and column names; for the drug batches the codes are in a second sheet keyed by
药品通用名. :func:`import_batches` reads a folder of them as they are and writes, per batch and
rule kind, one rule YAML file plus its item table (CSV: ``code``, ``name`` and the per-item
parameters of the rule type, see the agreed names in the rule types), e.g.::

    rules/national/nhsa-b1-drug-gender.yaml   rule NHSA-B1-DRUG-GENDER (restrict_gender)
    rules/national/nhsa-b1-drug-gender.csv    6,472 drug codes with gender 1/2

Files are recognised by the batch number and kind in their name (第一批 … 第八批-4, 药品 or
项目, and the restriction, e.g. 限定性别), whatever the brackets and stray spaces; a file whose
name says nothing usable is recognised by its columns. A name and columns that disagree are
reported, never guessed.

Every row that cannot be mapped is reported with file, sheet, row and reason and left out;
nothing is guessed silently. The output is deterministic: rows sorted, ids fixed
(``NHSA-B1-DRUG-GENDER``), the rule version a digest of the rule's content, no timestamps, so a
re-run over the same workbooks gives byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

#: File name prefix of everything the importer writes (and may remove on a re-run).
OUT_PREFIX = "nhsa-"

#: Nature (问题性质) of each rule type the importer writes, used when the type is not
#: registered yet (the registry's own value wins when it is).
_NATURE = {
    "restrict_gender": "超支付范围",
    "restrict_age": "超支付范围",
    "restrict_insutype": "超支付范围",
    "restrict_visit_type": "超支付范围",
    "restrict_hosp_level": "超支付范围",
    "course_limit": "超支付标准",
    "period_limit": "超支付标准",
    "frequency_limit": "超支付标准",
    "secondary_procedure": "超支付标准",
    "duplicate_charge": "重复收费",
}

#: 职业功能训练 (batch 8-2): the legal working age, inclusive
WORKING_AGE = (16, 60)


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RowProblem:
    """A row (or a whole file, row 0) that was not mapped, or a note about one that was."""

    file: str
    sheet: str
    row: int
    reason: str


@dataclass
class RuleOut:
    rule_id: str
    type: str
    name: str
    columns: list[str]  # item table columns: code, name, then per-item parameters
    rows: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    basis: str = ""
    source: str = ""  # workbook file name
    path: Path | None = None  # written YAML


@dataclass
class ImportResult:
    rules: list[RuleOut] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)  # rows or files left out
    notes: list[RowProblem] = field(default_factory=list)  # mapped, but worth a look
    files: dict[str, str] = field(default_factory=dict)  # batch key -> workbook name
    missing: list[str] = field(default_factory=list)  # batch titles with no workbook
    removed: list[str] = field(default_factory=list)  # stale output files removed

    @property
    def items(self) -> int:
        return sum(len(r.rows) for r in self.rules)


# ---------------------------------------------------------------------------- text helpers

_CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


def norm(text: Any) -> str:
    """Full-width to half-width (NFKC), no whitespace at all: how names and headers are compared."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", str(text or "")))


def cn_number(text: str) -> int | None:
    """'14' -> 14, '一' -> 1, '十四' -> 14, '二十' -> 20; None when it is not a number."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if not text or any(c not in _CN_DIGITS and c != "十" for c in text):
        return None
    if "十" in text:
        head, _, tail = text.partition("十")
        tens = _CN_DIGITS[head] if head else 1
        units = _CN_DIGITS[tail] if tail else 0
        return tens * 10 + units
    if len(text) == 1:
        return _CN_DIGITS[text]
    return None


def _whole(value: Any) -> int | None:
    """A whole number from a cell (1, 1.0, '1', ' 24 '), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    s = norm(value)
    return int(s) if s.isdigit() else None


# ---------------------------------------------------------------------------- workbooks


@dataclass
class Sheet:
    title: str
    header_row: int  # 1-based Excel row of the header
    header: dict[str, int]  # normalised column name -> index
    rows: list[tuple[int, tuple]]  # (Excel row, values) below the header, blank rows dropped

    def col(self, *names: str) -> int | None:
        for n in names:
            if n in self.header:
                return self.header[n]
        return None


_KNOWN_HEADERS = {
    "药品通用名",
    "药品说明",
    "限定类型",
    "限定对象",
    "限定值域",
    "序号",
    "国标代码",
    "药品代码",
    "项目名称",
    "项目说明",
    "限定性别",
    "频度",
    "主项名称",
    "主项编码",
    "从项名称",
    "从项编码",
    "备注",
    "限制数量",
    "数量单位",
    "项目编码",
    "项目代码",
    "频次上限",
    "疗程周期",
}


def read_workbook(path: Path) -> list[Sheet]:
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    sheets = []
    try:
        for ws in wb.worksheets:
            raw = list(ws.iter_rows(values_only=True))
            header_at = None
            for i, r in enumerate(raw[:10]):
                names = [norm(v) for v in r]
                if sum(1 for n in names if n in _KNOWN_HEADERS) >= 2:
                    header_at = i
                    break
            if header_at is None:
                sheets.append(Sheet(ws.title, 0, {}, []))
                continue
            header = {}
            for j, v in enumerate(raw[header_at]):
                n = norm(v)
                if n and n not in header:
                    header[n] = j
            body = [
                (header_at + 2 + k, tuple(r))
                for k, r in enumerate(raw[header_at + 1 :])
                if any(v is not None and str(v).strip() != "" for v in r)
            ]
            sheets.append(Sheet(ws.title, header_at + 1, header, body))
    finally:
        wb.close()
    return sheets


def cell(row: tuple, idx: int | None) -> Any:
    if idx is None or idx >= len(row):
        return None
    v = row[idx]
    if isinstance(v, str):
        v = v.strip()
        return v or None
    return v


# ---------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class BatchSpec:
    key: str  # B1-DRUG-GENDER: rule ids are NHSA-<key>[-...]
    batch: str  # 1 .. 8-4, as in 第八批-4
    kind: str  # 药品 or 项目
    keywords: tuple[str, ...]  # one of them is in the file name (normalised)
    title: str  # 第一批 药品规则库（限定性别对象）
    restriction: str | None  # the 限定类型 value of its rows, when the workbook has that column


SPECS: tuple[BatchSpec, ...] = (
    BatchSpec("B1-DRUG-GENDER", "1", "药品", ("性别",), "第一批 药品规则库（限定性别对象）", "限定性别对象"),
    BatchSpec("B1-DRUG-AGE", "1", "药品", ("年龄",), "第一批 药品规则库（限定年龄对象）", "限定年龄对象"),
    BatchSpec("B1-ITEM-GENDER", "1", "项目", ("性别",), "第一批 项目规则库（限定性别对象）", "限定性别对象"),
    BatchSpec("B1-ITEM-AGE", "1", "项目", ("年龄",), "第一批 项目规则库（限定年龄对象）", "限定年龄对象"),
    BatchSpec("B2-ITEM-SECONDARY", "2", "项目", ("主次",), "第二批 项目规则库（限定主次操作）", "限定主次操作"),
    BatchSpec(
        "B3-DRUG-INSUTYPE", "3", "药品", ("保险类型", "险种"), "第三批 药品规则库（限定保险类型）", "限定保险类型"
    ),
    BatchSpec("B4-DRUG-VISIT", "4", "药品", ("就医方式",), "第四批 药品规则库（限定就医方式）", "限定就医方式"),
    BatchSpec("B5-DRUG-LEVEL", "5", "药品", ("机构等级",), "第五批 药品规则库（限定机构等级）", "限定机构等级"),
    BatchSpec("B6-DRUG-COURSE", "6", "药品", ("疗程",), "第六批 药品规则库（限定支付疗程）", "限定支付疗程"),
    BatchSpec("B7-ITEM-DUPLICATE", "7", "项目", ("重复收费",), "第七批 项目规则库（重复收费）", None),
    BatchSpec("B8-1-ITEM-FREQUENCY", "8-1", "项目", ("频次",), "第八批-1 项目规则库（限定频次）", None),
    BatchSpec("B8-2-ITEM-AGE", "8-2", "项目", ("年龄",), "第八批-2 项目规则库（限定年龄）", None),
    BatchSpec("B8-3-ITEM-COURSE", "8-3", "项目", ("疗程",), "第八批-3 项目规则库（限定疗程）", None),
    BatchSpec("B8-4-ITEM-PERIOD", "8-4", "项目", ("周期",), "第八批-4 项目规则库（限定周期）", None),
)
SPEC_BY_KEY = {s.key: s for s in SPECS}

_BATCH_RE = re.compile(r"第([0-9一二三四五六七八九十]+)批(?:[-—–_]([0-9]+))?")


def spec_from_name(filename: str) -> BatchSpec | None:
    """The batch a file name announces (batch number, 药品/项目 and the restriction), or None."""
    n = norm(Path(filename).stem)
    m = _BATCH_RE.search(n)
    if not m:
        return None
    number = cn_number(m.group(1))
    if number is None:
        return None
    batch = f"{number}-{m.group(2)}" if m.group(2) else str(number)
    found = [s for s in SPECS if s.batch == batch and s.kind in n and any(k in n for k in s.keywords)]
    return found[0] if len(found) == 1 else None


def spec_from_columns(sheets: list[Sheet]) -> BatchSpec | None:
    """The batch a workbook's columns (and its 限定类型 values or sheet title) say it is, or None."""
    found: list[BatchSpec] = []
    for sh in sheets:
        h = sh.header
        if not h:
            continue
        if "主项编码" in h and "从项编码" in h:
            found.append(SPEC_BY_KEY["B7-ITEM-DUPLICATE"])
        elif "限制数量" in h:
            found.append(SPEC_BY_KEY["B8-1-ITEM-FREQUENCY"])
        elif "频次上限" in h and "疗程周期" in h:
            found.append(SPEC_BY_KEY["B8-4-ITEM-PERIOD"])
        elif "限定类型" in h and ("限定对象" in h or "限定值域" in h or "限定性别" in h):
            kinds = {norm(cell(r, h["限定类型"])) for _, r in sh.rows} - {""}
            kind = "药品" if "药品通用名" in h else "项目" if "项目名称" in h else None
            if len(kinds) == 1 and kind:
                (restriction,) = kinds
                found += [s for s in SPECS if s.kind == kind and s.restriction == restriction]
        elif "项目名称" in h and "备注" in h and ("项目代码" in h or "项目编码" in h):
            t = norm(sh.title)
            if "年龄" in t:
                found.append(SPEC_BY_KEY["B8-2-ITEM-AGE"])
            elif "疗程" in t:
                found.append(SPEC_BY_KEY["B8-3-ITEM-COURSE"])
    unique = {s.key: s for s in found}
    return next(iter(unique.values())) if len(unique) == 1 else None


# ---------------------------------------------------------------------------- mapping


class _Ctx:
    """One workbook being mapped: where problems and notes go."""

    def __init__(self, spec: BatchSpec, path: Path, sheets: list[Sheet], result: ImportResult):
        self.spec, self.path, self.sheets, self.result = spec, path, sheets, result
        self.file = path.name

    def problem(self, sheet: Sheet | str, row: int, reason: str) -> None:
        title = sheet.title if isinstance(sheet, Sheet) else sheet
        self.result.problems.append(RowProblem(self.file, title, row, reason))

    def note(self, sheet: Sheet, row: int, reason: str) -> None:
        self.result.notes.append(RowProblem(self.file, sheet.title, row, reason))

    def sheet_with(self, *needed: tuple[str, ...]) -> Sheet | None:
        """The first sheet that has, for each group of alternatives, one of the columns."""
        for sh in self.sheets:
            if all(any(n in sh.header for n in alts) for alts in needed):
                return sh
        return None

    def need_sheet(self, what: str, *needed: tuple[str, ...]) -> Sheet | None:
        sh = self.sheet_with(*needed)
        if sh is None:
            cols = "、".join("/".join(a) for a in needed)
            self.problem("", 0, f"no sheet with the columns of the {what} ({cols}); the workbook is left out")
        return sh

    def code(self, sh: Sheet, rowno: int, value: Any, column: str) -> str | None:
        if value is None:
            self.problem(sh, rowno, f"{column} is empty")
            return None
        if not isinstance(value, str):
            self.problem(
                sh,
                rowno,
                f"{column} {value!r} is a number in the workbook (leading zeros may be lost); store the codes as text",
            )
            return None
        code = norm(value)
        if not re.fullmatch(r"[0-9A-Za-z]+", code):
            self.problem(sh, rowno, f"{column} {value!r} is not a code")
            return None
        return code

    def restriction_ok(self, sh: Sheet, rowno: int, row: tuple) -> bool:
        """Rows of another 限定类型 than the batch's are reported, not mapped."""
        want = self.spec.restriction
        got = norm(cell(row, sh.col("限定类型")))
        if want and sh.col("限定类型") is not None and got and got != want:
            self.problem(sh, rowno, f"限定类型 is {got}, not {want}")
            return False
        return True


def _dedupe(ctx: _Ctx, sh: Sheet, keyed: list[tuple[int, dict]], key_cols: tuple[str, ...]) -> list[dict]:
    """Drop exact repeats (noted); report rows that give one key different parameters (both left out)."""
    by_key: dict[tuple, list[tuple[int, dict]]] = {}
    for rowno, rec in keyed:
        by_key.setdefault(tuple(rec.get(c) for c in key_cols), []).append((rowno, rec))
    out = []
    for key, recs in by_key.items():
        first_no, first = recs[0]
        if all(r == first for _, r in recs[1:]):
            for rowno, _ in recs[1:]:
                ctx.note(sh, rowno, f"repeats row {first_no}; kept once")
            out.append(first)
            continue
        rows = ", ".join(str(n) for n, _ in recs)
        for rowno, _ in recs:
            ctx.problem(
                sh, rowno, f"{'/'.join(str(k) for k in key)} is given differently in rows {rows}; none of them is used"
            )
    return out


def _drug_batch(
    ctx: _Ctx, value_col: tuple[str, ...], mapper: Callable[[str, str, Sheet, int], dict | None]
) -> list[dict]:
    """Drug batches: Sheet1 gives the restriction per 药品通用名, the codes sheet its codes.

    ``mapper(value, note_text, sheet, row)`` turns the restriction cell into per-item parameters
    (or reports the row and returns None). Returns item rows: code, name (药品通用名), params.
    """
    spec_sheet = ctx.need_sheet("restriction sheet", ("药品通用名",), value_col)
    code_sheet = ctx.need_sheet("codes sheet", ("药品通用名",), ("国标代码", "药品代码"))
    if spec_sheet is None or code_sheet is None:
        return []
    by_name: dict[str, dict] = {}
    first_row: dict[str, int] = {}
    conflicting: set[str] = set()
    rejected: dict[str, int] = {}  # names whose restriction row was reported
    ncol, vcol, tcol = spec_sheet.col("药品通用名"), spec_sheet.col(*value_col), spec_sheet.col("药品说明")
    for rowno, row in spec_sheet.rows:
        name, value = cell(row, ncol), cell(row, vcol)
        if name is None:
            ctx.problem(spec_sheet, rowno, "药品通用名 is empty")
            continue
        rejected.setdefault(norm(name), rowno)
        if not ctx.restriction_ok(spec_sheet, rowno, row):
            continue
        if value is None:
            ctx.problem(spec_sheet, rowno, f"{value_col[0]} is empty for {name}")
            continue
        params = mapper(norm(value), str(cell(row, tcol) or ""), spec_sheet, rowno)
        if params is None:
            continue
        rejected.pop(norm(name), None)
        key = norm(name)
        if key in by_name and by_name[key] != params:
            ctx.problem(
                spec_sheet,
                rowno,
                f"{name} is also in row {first_row[key]} with another {value_col[0]}; its codes are left out",
            )
            conflicting.add(key)
            continue
        if key in by_name:
            ctx.note(spec_sheet, rowno, f"{name} repeats row {first_row[key]}; kept once")
        by_name[key], first_row[key] = params, first_row.get(key, rowno)
    with_codes: set[str] = set()
    keyed = []
    ncol, ccol = code_sheet.col("药品通用名"), code_sheet.col("国标代码", "药品代码")
    ccol_name = "国标代码" if "国标代码" in code_sheet.header else "药品代码"
    for rowno, row in code_sheet.rows:
        name = cell(row, ncol)
        if name is None:
            ctx.problem(code_sheet, rowno, "药品通用名 is empty")
            continue
        if not ctx.restriction_ok(code_sheet, rowno, row):
            continue
        key = norm(name)
        if key in conflicting:
            ctx.problem(code_sheet, rowno, f"{name}: its restriction is given differently in {spec_sheet.title}")
            continue
        if key not in by_name:
            if key in rejected:
                ctx.problem(
                    code_sheet,
                    rowno,
                    f"{name}: its row {rejected[key]} in sheet {spec_sheet.title} could not be mapped",
                )
            else:
                ctx.problem(code_sheet, rowno, f"药品通用名 {name} is not in sheet {spec_sheet.title}")
            continue
        code = ctx.code(code_sheet, rowno, cell(row, ccol), ccol_name)
        if code is None:
            continue
        with_codes.add(key)
        keyed.append((rowno, {"code": code, "name": str(name).strip(), **by_name[key]}))
    for key, rowno in first_row.items():
        if key not in with_codes and key not in conflicting:
            ctx.problem(
                spec_sheet, rowno, f"药品通用名 {key} has no codes in sheet {code_sheet.title}; nothing to match"
            )
    return _dedupe(ctx, code_sheet, keyed, ("code",))


def _item_rows(
    ctx: _Ctx,
    sh: Sheet,
    code_cols: tuple[str, ...],
    mapper: Callable[[tuple, int], dict | None],
    key_cols: tuple[str, ...] = ("code",),
) -> list[dict]:
    """Item batches: one row per service item; ``mapper`` gives its per-item parameters."""
    ccol = sh.col(*code_cols)
    ccol_name = next(c for c in code_cols if c in sh.header)
    ncol = sh.col("项目名称")
    keyed = []
    for rowno, row in sh.rows:
        if not ctx.restriction_ok(sh, rowno, row):
            continue
        raw_code = cell(row, ccol)
        if raw_code is None:
            first = next((str(v).strip() for v in row if v is not None and str(v).strip()), "")
            ctx.problem(sh, rowno, f"{ccol_name} is empty (row reads {first[:40]!r})")
            continue
        code = ctx.code(sh, rowno, raw_code, ccol_name)
        if code is None:
            continue
        params = mapper(row, rowno)
        if params is None:
            continue
        keyed.append((rowno, {"code": code, "name": str(cell(row, ncol) or "").strip(), **params}))
    return _dedupe(ctx, sh, keyed, key_cols)


# ----- one mapping per batch: each returns the rules it gives


def _gender(value: str) -> dict | None:
    return {"男": {"gender": "1"}, "女": {"gender": "2"}}.get(value)


def map_b1_drug_gender(ctx: _Ctx) -> list[RuleOut]:
    def m(value, _text, sh, rowno):
        p = _gender(value)
        if p is None:
            ctx.problem(sh, rowno, f"限定对象 {value!r} is not 男 or 女")
        return p

    rows = _drug_batch(ctx, ("限定对象",), m)
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "restrict_gender",
            "国家第一批 限定性别的药品",
            ["code", "name", "gender"],
            rows,
            description=f"{_count_names(rows)} 个药品通用名、{len(rows)} 个药品代码；限定对象 男 = 1、女 = 2",
        )
    ]


def map_b1_item_gender(ctx: _Ctx) -> list[RuleOut]:
    sh = ctx.need_sheet("items", ("项目名称",), ("国标代码", "项目编码", "项目代码"), ("限定性别", "限定对象"))
    if sh is None:
        return []
    gcol = sh.col("限定性别", "限定对象")

    def m(row, rowno):
        value = norm(cell(row, gcol))
        p = _gender(value)
        if p is None:
            ctx.problem(sh, rowno, f"限定性别 {value!r} is not 男 or 女")
        return p

    rows = _item_rows(ctx, sh, ("国标代码", "项目编码", "项目代码"), m)
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "restrict_gender",
            "国家第一批 限定性别的医疗服务项目",
            ["code", "name", "gender"],
            rows,
            description=f"{len(rows)} 个医疗服务项目；限定性别 男 = 1、女 = 2",
        )
    ]


AGE_GROUPS = ("新生儿", "婴幼儿", "儿童")


def map_b1_drug_age(ctx: _Ctx) -> list[RuleOut]:
    def m(value, _text, sh, rowno):
        if value not in AGE_GROUPS:
            ctx.problem(sh, rowno, f"限定对象 {value!r} is not 新生儿, 婴幼儿 or 儿童")
            return None
        return {"group": value}

    rows = _drug_batch(ctx, ("限定对象",), m)
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "restrict_age",
            "国家第一批 限定年龄的药品",
            ["code", "name", "group"],
            rows,
            description=f"{_count_names(rows)} 个药品通用名、{len(rows)} 个药品代码；group = 限定对象",
        )
    ]


def map_b1_item_age(ctx: _Ctx) -> list[RuleOut]:
    sh = ctx.need_sheet("items", ("项目名称",), ("国标代码", "项目编码", "项目代码"), ("限定对象",))
    if sh is None:
        return []
    vcol = sh.col("限定对象")

    def m(row, rowno):
        value = norm(cell(row, vcol))
        if value not in AGE_GROUPS:
            ctx.problem(sh, rowno, f"限定对象 {value!r} is not 新生儿, 婴幼儿 or 儿童")
            return None
        return {"group": value}

    rows = _item_rows(ctx, sh, ("国标代码", "项目编码", "项目代码"), m)
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "restrict_age",
            "国家第一批 限定年龄的医疗服务项目",
            ["code", "name", "group"],
            rows,
            description=f"{len(rows)} 个医疗服务项目；group = 限定对象",
        )
    ]


def map_b2(ctx: _Ctx) -> list[RuleOut]:
    sh = ctx.need_sheet("items", ("项目名称",), ("国标代码", "项目编码", "项目代码"), ("限定值域",))
    if sh is None:
        return []
    vcol = sh.col("限定值域")

    def m(row, rowno):
        group = norm(cell(row, vcol))
        if not group:
            ctx.problem(sh, rowno, "限定值域 (the surgery group) is empty")
            return None
        return {"group": group}

    # one code may belong to several surgery groups: each (code, group) is an item
    rows = _item_rows(ctx, sh, ("国标代码", "项目编码", "项目代码"), m, key_cols=("code", "group"))
    groups = sorted({r["group"] for r in rows})
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "secondary_procedure",
            "国家第二批 主次手术未按规定折价",
            ["code", "name", "group"],
            rows,
            description=f"{len(rows)} 个手术项目（{len({r['code'] for r in rows})} 个编码）分属 "
            f"{len(groups)} 个手术组：{'、'.join(groups)}；group = 限定值域",
        )
    ]


def map_b3(ctx: _Ctx) -> list[RuleOut]:
    def m(value, _text, sh, rowno):
        allowed = {"工伤": "410", "生育": "510"}.get(value)
        if allowed is None:
            ctx.problem(sh, rowno, f"限定对象 {value!r} is not 工伤 or 生育")
            return None
        return {"allowed": allowed}

    rows = _drug_batch(ctx, ("限定对象", "限定值域"), m)
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "restrict_insutype",
            "国家第三批 限定保险类型的药品",
            ["code", "name", "allowed"],
            rows,
            description=f"{_count_names(rows)} 个药品通用名、{len(rows)} 个药品代码；工伤 = 410、生育 = 510",
        )
    ]


def map_b4(ctx: _Ctx) -> list[RuleOut]:
    def m(value, text, sh, rowno):
        allowed = {"住院": "inpatient", "门诊": "outpatient"}.get(value)
        if allowed is None:
            ctx.problem(sh, rowno, f"限定值域 {value!r} is not 住院 or 门诊")
            return None
        med_types = ""
        if allowed == "inpatient" and re.search(r"急诊或住院|住院或急诊", norm(text)):
            med_types = "13"
            ctx.note(sh, rowno, f"药品说明 {text!r} also allows 急诊: med_types 13 allowed as well")
        return {"allowed": allowed, "med_types": med_types}

    rows = _drug_batch(ctx, ("限定值域", "限定对象"), m)
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "restrict_visit_type",
            "国家第四批 限定就医方式的药品",
            ["code", "name", "allowed", "med_types"],
            rows,
            description=f"{_count_names(rows)} 个药品通用名、{len(rows)} 个药品代码；住院 = inpatient"
            "（药品说明写明急诊或住院的，另允许 med_type 13 急诊）",
        )
    ]


def map_b5(ctx: _Ctx) -> list[RuleOut]:
    def m(value, _text, sh, rowno):
        level = {"一级": 1, "二级": 2, "三级": 3}.get(value.removesuffix("及以上"))
        if level is None:
            ctx.problem(sh, rowno, f"限定值域 {value!r} is not 一级, 二级 or 三级")
            return None
        return {"min_level": level}

    rows = _drug_batch(ctx, ("限定值域", "限定对象"), m)
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "restrict_hosp_level",
            "国家第五批 限定机构等级的药品",
            ["code", "name", "min_level"],
            rows,
            description=f"{_count_names(rows)} 个药品通用名、{len(rows)} 个药品代码；二级 = 2、三级 = 3（及以上）",
        )
    ]


def _days(value: str) -> int | None:
    """'14天' -> 14, '365天' -> 365, '一年' / '1年' / '12个月' -> 365; None otherwise."""
    m = re.fullmatch(r"([0-9一二两三四五六七八九十]+)(天|日)", value)
    if m:
        return cn_number(m.group(1))
    if value in ("一年", "1年", "12个月", "十二个月"):
        return 365
    return None


_TEXT_DAYS = re.compile(r"(?:不超过|最多支付)([0-9一二两三四五六七八九十]+)(?:天|日)")


def map_b6(ctx: _Ctx) -> list[RuleOut]:
    def m(value, text, sh, rowno):
        days = _days(value)
        if days is None or days < 1:
            ctx.problem(sh, rowno, f"限定值域 {value!r} is not a number of days (e.g. 14天)")
            return None
        said = {d for d in map(cn_number, _TEXT_DAYS.findall(norm(text))) if d is not None}
        if said and days not in said:
            ctx.note(
                sh,
                rowno,
                f"限定值域 {value} but 药品说明 says {'/'.join(f'{d}天' for d in sorted(said))}; "
                f"used 限定值域 ({days} days)",
            )
        return {"max_days": days}

    rows = _drug_batch(ctx, ("限定值域",), m)
    for r in rows:
        r["group"] = r["name"]
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "course_limit",
            "国家第六批 限定支付疗程的药品",
            ["code", "name", "max_days", "group"],
            rows,
            description=f"{_count_names(rows)} 个药品通用名、{len(rows)} 个药品代码；max_days = 限定值域，"
            "同一药品通用名的各代码合为一组（group）",
        )
    ]


WINDOWS = {"单日": "same_day", "单次就诊": "same_visit", "同一小时": "same_hour"}


def _window(value: str) -> str | None:
    if value in WINDOWS:
        return WINDOWS[value]
    m = re.fullmatch(r"([0-9一二两三四五六七八九十]+)(?:个)?小时(?:内)?", value)
    if m and (n := cn_number(m.group(1))):
        return f"hours:{n}"
    return None


def map_b7(ctx: _Ctx) -> list[RuleOut]:
    sh = ctx.need_sheet("pairs", ("主项编码",), ("从项编码",), ("频度",))
    if sh is None:
        return []
    fcol, mcol, mname = sh.col("频度"), sh.col("主项编码"), sh.col("主项名称")
    scol, sname = sh.col("从项编码"), sh.col("从项名称")
    keyed = []
    for rowno, row in sh.rows:
        main = cell(row, mcol)
        sec = cell(row, scol)
        if main is None and sec is None:
            first = next((str(v).strip() for v in row if v is not None and str(v).strip()), "")
            ctx.problem(sh, rowno, f"主项编码 and 从项编码 are empty (row reads {first[:40]!r})")
            continue
        main_code = ctx.code(sh, rowno, main, "主项编码")
        sec_code = ctx.code(sh, rowno, sec, "从项编码")
        if main_code is None or sec_code is None:
            continue
        if main_code == sec_code:
            ctx.problem(sh, rowno, f"主项编码 and 从项编码 are both {main_code}")
            continue
        freq = norm(cell(row, fcol))
        window = _window(freq)
        if window is None:
            ctx.problem(sh, rowno, f"频度 {freq!r} is not 单日, 单次就诊, N小时 or 同一小时")
            continue
        keyed.append(
            (
                rowno,
                {
                    "code": sec_code,
                    "name": str(cell(row, sname) or "").strip(),
                    "main_code": main_code,
                    "window": window,
                    "main_name": str(cell(row, mname) or "").strip(),
                },
            )
        )
    rows = _dedupe(ctx, sh, keyed, ("code", "main_code"))
    by_window: dict[str, int] = {}
    for r in rows:
        by_window[r["window"]] = by_window.get(r["window"], 0) + 1
    shown = "、".join(f"{w} {n}" for w, n in sorted(by_window.items()))
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "duplicate_charge",
            "国家第七批 医疗服务项目重复收费",
            ["code", "name", "main_code", "window", "main_name"],
            rows,
            description=f"{len(rows)} 对主项/从项（code = 从项编码，main_code = 主项编码）；频度 单日 = same_day、"
            f"单次就诊 = same_visit、6小时 = hours:6、同一小时 = same_hour；按频度：{shown}",
        )
    ]


def map_b8_1(ctx: _Ctx) -> list[RuleOut]:
    sh = ctx.need_sheet("limits", ("限制数量",), ("数量单位",), ("项目编码", "项目代码", "国标代码"))
    if sh is None:
        return []
    qcol, ucol = sh.col("限制数量"), sh.col("数量单位")

    def m(row, rowno):
        n, unit = _whole(cell(row, qcol)), norm(cell(row, ucol))
        if n is None or n < 1:
            ctx.problem(sh, rowno, f"限制数量 {cell(row, qcol)!r} is not a number")
            return None
        if unit in ("日", "天", "次/日", "次/天"):
            return {"max_per_day": n}
        if unit == "小时":
            if n > 24:
                ctx.problem(sh, rowno, f"限制数量 {n} 小时 is more than a day has")
                return None
            return {"max_per_day": n}
        ctx.problem(sh, rowno, f"数量单位 {unit!r} is not 日, 天 or 小时 (a limit per day)")
        return None

    rows = _item_rows(ctx, sh, ("项目编码", "项目代码", "国标代码"), m)
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "frequency_limit",
            "国家第八批-1 医疗服务项目限定频次",
            ["code", "name", "max_per_day"],
            rows,
            description=f"{len(rows)} 个医疗服务项目；max_per_day = 限制数量（数量单位 日/天 为次数，小时 为每日小时数）",
        )
    ]


def map_b8_2(ctx: _Ctx) -> list[RuleOut]:
    sh = ctx.need_sheet("items", ("项目名称",), ("项目代码", "项目编码", "国标代码"))
    if sh is None:
        return []
    rows = _item_rows(ctx, sh, ("项目代码", "项目编码", "国标代码"), lambda row, rowno: {})
    lo, hi = WORKING_AGE
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "restrict_age",
            "国家第八批-2 医疗服务项目限定年龄（法定就业年龄）",
            ["code", "name"],
            rows,
            params={"min_age": lo, "max_age": hi},
            description=f"{len(rows)} 个医疗服务项目；参保人年龄超出法定就业年龄限制：{lo} 至 {hi} 岁",
        )
    ]


_COURSE_RES = (
    re.compile(r"不超过([0-9一二两三四五六七八九十]+)(?:天|日)"),
    re.compile(r"不超过(一年|1年|12个月|十二个月)"),
)
_INTERVAL_RES = (
    (re.compile(r"间隔(?:时间)?不短于([0-9一二两三四五六七八九十]+)(?:天|日)"), lambda m: (1, cn_number(m.group(1)))),
    (re.compile(r"每周最多(?:支付)?([0-9一二两三四五六七八九十]+)次"), lambda m: (cn_number(m.group(1)), 7)),
)


def parse_course_note(text: str) -> tuple[int | None, tuple[int, int] | None]:
    """Batch 8-3 note text -> (max_days, (max_count, period_days)); either may be None.

    支付不超过30天 -> 30; 支付不超过一年 -> 365; 每周最多支付一次 -> (1, 7);
    评定间隔时间不短于14天 -> (1, 14).
    """
    t = norm(text)
    days = None
    m = _COURSE_RES[0].search(t)
    if m:
        days = cn_number(m.group(1))
    elif _COURSE_RES[1].search(t):
        days = 365
    period = None
    for rx, f in _INTERVAL_RES:
        m = rx.search(t)
        if m:
            count, span = f(m)
            if count and span:
                period = (count, span)
            break
    return days, period


def map_b8_3(ctx: _Ctx) -> list[RuleOut]:
    sh = ctx.need_sheet("items", ("项目名称",), ("备注",), ("项目代码", "项目编码", "国标代码"))
    if sh is None:
        return []
    ncol = sh.col("备注")
    parsed: dict[int, tuple] = {}

    def m(row, rowno):
        text = str(cell(row, ncol) or "")
        days, period = parse_course_note(text)
        if days is None and period is None:
            ctx.problem(sh, rowno, f"备注 {text!r} gives neither a number of days nor an interval")
            return None
        parsed[rowno] = (days, period)
        return {"max_days": days, "period": period}

    rows = _item_rows(ctx, sh, ("项目代码", "项目编码", "国标代码"), m)
    course = [
        {"code": r["code"], "name": r["name"], "max_days": r["max_days"], "group": ""}
        for r in rows
        if r["max_days"] is not None
    ]
    period = [
        {"code": r["code"], "name": r["name"], "max_count": r["period"][0], "period_days": r["period"][1]}
        for r in rows
        if r["period"] is not None
    ]
    out = []
    if course:
        out.append(
            RuleOut(
                f"NHSA-{ctx.spec.key}",
                "course_limit",
                "国家第八批-3 医疗服务项目限定支付疗程",
                ["code", "name", "max_days", "group"],
                course,
                description=f"{len(course)} 个医疗服务项目；max_days 取自备注（支付不超过N天，一年 = 365 天），每个编码自成一组",
            )
        )
    if period:
        out.append(
            RuleOut(
                f"NHSA-{ctx.spec.key.removesuffix('-COURSE')}-PERIOD",
                "period_limit",
                "国家第八批-3 医疗服务项目限定疗程（间隔）",
                ["code", "name", "max_count", "period_days"],
                period,
                description=f"{len(period)} 个医疗服务项目；取自备注：每周最多一次 = 每 7 天 1 次，间隔不短于N天 = 每 N 天 1 次",
            )
        )
    return out


def map_b8_4(ctx: _Ctx) -> list[RuleOut]:
    sh = ctx.need_sheet("items", ("频次上限",), ("疗程周期",), ("项目代码", "项目编码", "国标代码"))
    if sh is None:
        return []
    ccol, pcol = sh.col("频次上限"), sh.col("疗程周期")

    def m(row, rowno):
        count, days = _whole(cell(row, ccol)), _whole(cell(row, pcol))
        if count is None or count < 1:
            ctx.problem(sh, rowno, f"频次上限 {cell(row, ccol)!r} is not a number")
            return None
        if days is None or days < 1:
            ctx.problem(sh, rowno, f"疗程周期 {cell(row, pcol)!r} is not a number of days")
            return None
        return {"max_count": count, "period_days": days}

    rows = _item_rows(ctx, sh, ("项目代码", "项目编码", "国标代码"), m)
    return [
        RuleOut(
            f"NHSA-{ctx.spec.key}",
            "period_limit",
            "国家第八批-4 医疗服务项目周期超频次",
            ["code", "name", "max_count", "period_days"],
            rows,
            description=f"{len(rows)} 个医疗服务项目；max_count = 频次上限，period_days = 疗程周期（天）",
        )
    ]


MAPPERS: dict[str, Callable[[_Ctx], list[RuleOut]]] = {
    "B1-DRUG-GENDER": map_b1_drug_gender,
    "B1-DRUG-AGE": map_b1_drug_age,
    "B1-ITEM-GENDER": map_b1_item_gender,
    "B1-ITEM-AGE": map_b1_item_age,
    "B2-ITEM-SECONDARY": map_b2,
    "B3-DRUG-INSUTYPE": map_b3,
    "B4-DRUG-VISIT": map_b4,
    "B5-DRUG-LEVEL": map_b5,
    "B6-DRUG-COURSE": map_b6,
    "B7-ITEM-DUPLICATE": map_b7,
    "B8-1-ITEM-FREQUENCY": map_b8_1,
    "B8-2-ITEM-AGE": map_b8_2,
    "B8-3-ITEM-COURSE": map_b8_3,
    "B8-4-ITEM-PERIOD": map_b8_4,
}


def _count_names(rows: list[dict]) -> int:
    return len({r["name"] for r in rows})


# ---------------------------------------------------------------------------- output


def _csv_text(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in sorted(rows, key=lambda r: tuple(str(r.get(c) if r.get(c) is not None else "") for c in columns)):
        w.writerow(["" if r.get(c) is None else str(r[c]) for c in columns])
    return buf.getvalue()


def _nature(type_name: str) -> str:
    try:
        from .types import REGISTRY

        if type_name in REGISTRY:
            return REGISTRY[type_name].nature
    except Exception:  # a broken type module must not stop the import
        pass
    return _NATURE[type_name]


def _yaml_text(rule: RuleOut, table: str) -> tuple[str, str]:
    """The rule file and the rule's version (a digest of its content: changes when the content does)."""
    csv_text = _csv_text(rule.columns, rule.rows)
    digest = hashlib.sha256(
        (rule.type + "\n" + repr(sorted(rule.params.items())) + "\n" + csv_text).encode()
    ).hexdigest()[:8]
    doc: dict[str, Any] = {
        "id": rule.rule_id,
        "version": digest,
        "name": rule.name,
        "type": rule.type,
        "nature": _nature(rule.type),
        "basis": rule.basis,
        "description": rule.description,
        "items": {"table": table},
    }
    if rule.params:
        doc["params"] = rule.params
    head = (
        f"# Generated by `medaudit rules import-nhsa` from {rule.source}.\n"
        "# Do not edit: re-import the national workbook instead (the version is a digest of the content).\n"
    )
    body = yaml.safe_dump({"rules": [doc]}, allow_unicode=True, sort_keys=False, width=1000)
    return head + body, csv_text


def find_workbooks(folder: Path) -> tuple[list[Path], list[Path]]:
    """The workbooks to read (.xlsx, .xlsm) and the old-format ones that cannot be (.xls, .et)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(("~$", ".")))
    return (
        [p for p in files if p.suffix.lower() in (".xlsx", ".xlsm")],
        [p for p in files if p.suffix.lower() in (".xls", ".et")],
    )


def import_batches(folder: str | Path, out: str | Path) -> ImportResult:
    """Read every national workbook in ``folder``; write the rules and item tables to ``out``."""
    folder, out = Path(folder), Path(out)
    result = ImportResult()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    chosen: dict[str, list[tuple[Path, list[Sheet]]]] = {}
    readable, old_format = find_workbooks(folder)
    for path in old_format:
        result.problems.append(RowProblem(path.name, "", 0, "an old-format workbook is not read: save it as .xlsx"))
    for path in readable:
        try:
            sheets = read_workbook(path)
        except Exception as e:  # not a readable workbook
            result.problems.append(RowProblem(path.name, "", 0, f"cannot read the workbook: {str(e).splitlines()[0]}"))
            continue
        by_name, by_cols = spec_from_name(path.name), spec_from_columns(sheets)
        if by_name and by_cols and by_name.key != by_cols.key:
            result.problems.append(
                RowProblem(
                    path.name,
                    "",
                    0,
                    f"the file name says {by_name.title} but the columns are those of {by_cols.title}; left out",
                )
            )
            continue
        spec = by_name or by_cols
        if spec is None:
            result.problems.append(
                RowProblem(
                    path.name,
                    "",
                    0,
                    "not recognised as a national knowledge batch (neither by its name nor by its columns)",
                )
            )
            continue
        if by_name is None:
            result.notes.append(RowProblem(path.name, "", 0, f"recognised by its columns as {spec.title}"))
        chosen.setdefault(spec.key, []).append((path, sheets))

    for spec in SPECS:
        found = chosen.get(spec.key, [])
        if not found:
            result.missing.append(spec.title)
            continue
        if len(found) > 1:
            names = "、".join(p.name for p, _ in found)
            for p, _ in found:
                result.problems.append(
                    RowProblem(
                        p.name, "", 0, f"{len(found)} workbooks are {spec.title} ({names}); keep one, all are left out"
                    )
                )
            continue
        path, sheets = found[0]
        result.files[spec.key] = path.name
        for rule in MAPPERS[spec.key](_Ctx(spec, path, sheets, result)):
            if not rule.rows:
                result.problems.append(
                    RowProblem(path.name, "", 0, f"{rule.rule_id}: no row could be mapped; no rule written")
                )
                continue
            rule.source = path.name
            rule.basis = f"国家医保局智能监管规则库知识点 {spec.title}，工作簿 {path.name}"
            result.rules.append(rule)

    out.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    for rule in sorted(result.rules, key=lambda r: r.rule_id):
        stem = OUT_PREFIX + rule.rule_id.removeprefix("NHSA-").lower()
        yaml_text, csv_text = _yaml_text(rule, stem + ".csv")
        for name, text in ((stem + ".yaml", yaml_text), (stem + ".csv", csv_text)):
            target = out / name
            data = text.encode("utf-8")
            if not target.exists() or target.read_bytes() != data:
                target.write_bytes(data)
            written.add(name)
        rule.path = out / (stem + ".yaml")
    for stale in sorted(out.iterdir()):
        if stale.name.startswith(OUT_PREFIX) and stale.suffix in (".yaml", ".csv") and stale.name not in written:
            stale.unlink()
            result.removed.append(stale.name)
    result.rules.sort(key=lambda r: r.rule_id)
    result.problems.sort(key=lambda p: (p.file, p.sheet, p.row, p.reason))
    result.notes.sort(key=lambda p: (p.file, p.sheet, p.row, p.reason))
    return result

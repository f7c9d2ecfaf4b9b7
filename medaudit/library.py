"""The rule library: YAML files of rules (plus CSV item tables), loaded and checked.

A library is a folder. Every ``*.yaml`` / ``*.yml`` below it holds rules, either as a list
under ``rules:`` or as a single rule mapping. A rule::

    - id: R-SEX-001              # unique in the library
      version: 1                 # a changed rule gets a new version
      name: 限女性使用的检查项目
      type: restrict_gender      # see `medaudit rules explain TYPE`
      severity: violation        # or suspect (default: the type's)
      nature: 超支付范围          # default: the type's
      stages: [pre_alert, in_process, post_hoc]   # default: all the type supports
      basis: 国家医保局第一批规则库（限定性别对象）
      valid_from: 2024-01-01     # a line is judged by the rules in force on its fee date
      valid_to: 2026-12-31
      scope: {med_types: ["21"], hosp_levels: [2, 3], institutions: [H001]}
      items:                     # exact codes, code prefixes, a CSV table, or inline rows
        codes: ["002101030300000"]
        prefixes: ["XG03"]
        table: gender_items.csv  # relative to this YAML file; column code (or prefix),
                                 # optional name, and per-item parameter columns
      params: {gender: 2}

Every problem is reported with the file, the rule id and the field, e.g.
``rules/gender.yaml: rule R-SEX-001: params.gender must be 1 or 2, got "M"``.
"""

from __future__ import annotations

import re

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson
import polars as pl
import yaml

from .types import REGISTRY
from .types.base import SEVERITIES, STAGES, RuleType

RULE_FIELDS = {
    "id",
    "version",
    "name",
    "type",
    "params",
    "stages",
    "severity",
    "nature",
    "basis",
    "valid_from",
    "valid_to",
    "scope",
    "items",
    "description",
}
SCOPE_FIELDS = {"med_types", "hosp_levels", "institutions"}
ITEM_FIELDS = {"codes", "prefixes", "table", "rows"}


class RuleLibraryError(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class Item:
    code: str | None
    prefix: str | None
    name: str | None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rule:
    id: str
    version: str
    name: str
    type: str
    severity: str
    nature: str
    stages: list[str]
    basis: str
    params: dict[str, Any]
    items: list[Item]
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None
    scope: dict[str, list] = field(default_factory=dict)
    source: str = ""
    description: str = ""

    @property
    def rule_type(self) -> RuleType:
        return REGISTRY[self.type]

    def fingerprint(self) -> str:
        """A hash of the rule's id, version and everything that decides its findings (not its
        name, basis or item names). JSON written by orjson: the standard library's JSON cost ten
        copies of the national rules 0.11 s a screen (:meth:`fingerprint_v1`)."""
        return hashlib.sha256(
            orjson.dumps(self._identity(), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
        ).hexdigest()

    def fingerprint_v1(self) -> str:
        """:meth:`fingerprint` as runs stored it before 2026-12-05 (the standard library's JSON):
        read only to recognise an unchanged library in a database screened then."""
        return hashlib.sha256(json.dumps(self._identity(), sort_keys=True, default=str).encode()).hexdigest()

    def _identity(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "type": self.type,
            "params": self.params,
            "items": [(i.code, i.prefix, i.params) for i in self.items],
            "severity": self.severity,
            "stages": self.stages,
            "valid": [str(self.valid_from), str(self.valid_to)],
            "scope": self.scope,
        }


@dataclass
class Library:
    rules: list[Rule]
    root: Path | None = None

    def get(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def digest(self) -> str:
        """What the library's rules are, hashed: a run stores it, and the next run screens
        everything again when it differs."""
        return self._digest(Rule.fingerprint)

    def digest_v1(self) -> str:
        """:meth:`digest` as runs stored it before 2026-12-05 (see :meth:`Rule.fingerprint_v1`)."""
        return self._digest(Rule.fingerprint_v1)

    def _digest(self, fingerprint: Callable[[Rule], str]) -> str:
        h = hashlib.sha256()
        for r in sorted(self.rules, key=lambda r: r.id):
            h.update(fingerprint(r).encode())
        return h.hexdigest()


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps an impossible date (2026-13-01) as text, so the rule check can
    report it with the rule and the field instead of the YAML parser failing on the file."""


def _timestamp_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def _read_item_table(path: Path) -> pl.DataFrame:
    """An item table as text columns; UTF-8 (with or without BOM) or GB18030, as Excel saves it."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            raw = raw.decode("gb18030").encode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"not UTF-8 or GB18030 text (byte {e.start})") from None
    return pl.read_csv(raw, infer_schema=False)


#: what a rule id may look like: it is part of finding ids, evidence, file and sheet names, so
#: it is held to a strict pattern (and, like every value, only ever bound into SQL, never pasted)
RULE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def parse_rule(raw: Any, source: str, base_dir: Path, problems: list[str]) -> Rule | None:
    """Check one rule mapping; append problems and return None when it is not usable."""
    start = len(problems)
    if not isinstance(raw, dict):
        problems.append(f"{source}: a rule must be a mapping, got {type(raw).__name__}")
        return None
    rid = str(raw.get("id") or "").strip()
    where = f"{source}: rule {rid or '(no id)'}"

    def bad(msg: str) -> None:
        problems.append(f"{where}: {msg}")

    if not rid:
        bad("id is missing")
    elif not RULE_ID_RE.fullmatch(rid):
        bad(
            f"id {rid!r} must be 1-64 ASCII letters, digits, '-', '_' or '.' (it names findings, files and workbook rows)"
        )
    for k in raw:
        if k not in RULE_FIELDS:
            bad(f"unknown field {k!r}")
    for k in ("version", "name", "type"):
        if raw.get(k) in (None, ""):
            bad(f"{k} is missing")
    tname = raw.get("type")
    rtype = REGISTRY.get(tname) if isinstance(tname, str) else None
    if tname not in (None, "") and rtype is None:
        bad(f"type {tname!r} is not a known rule type (see `medaudit rules types`)")
        return None
    if rtype is None:
        return None

    severity = raw.get("severity", rtype.default_severity)
    if severity not in SEVERITIES:
        bad(f"severity must be violation or suspect, got {severity!r}")
    stages = raw.get("stages", list(rtype.stages))
    if isinstance(stages, str):
        stages = [stages]
    if not isinstance(stages, list) or not stages:
        bad("stages must be a non-empty list")
        stages = []
    for s in stages:
        if s not in STAGES:
            bad(f"stages: {s!r} is not a stage (pre_alert, in_process, post_hoc)")
        elif s not in rtype.stages:
            bad(f"type {rtype.name} cannot run at stage {s} (it runs at: {', '.join(rtype.stages)})")

    valid_from = valid_to = None
    for k in ("valid_from", "valid_to"):
        if raw.get(k) not in (None, ""):
            try:
                d = _date(raw[k])
            except ValueError:
                bad(f"{k} must be a date YYYY-MM-DD, got {raw[k]!r}")
                continue
            if k == "valid_from":
                valid_from = d
            else:
                valid_to = d
    if valid_from and valid_to and valid_to < valid_from:
        bad(f"valid_to {valid_to} is before valid_from {valid_from}")

    scope = raw.get("scope") or {}
    if not isinstance(scope, dict):
        bad("scope must be a mapping")
        scope = {}
    clean_scope: dict[str, list] = {}
    for k, v in scope.items():
        if k not in SCOPE_FIELDS:
            bad(f"scope.{k} is not a scope filter (med_types, hosp_levels, institutions)")
            continue
        vals = v if isinstance(v, list) else [v]
        if k == "hosp_levels":
            try:
                levels = [int(x) for x in vals]
            except (TypeError, ValueError):
                bad(f"scope.hosp_levels must list levels 0 to 3, got {v!r}")
                continue
            if any(x not in (0, 1, 2, 3) for x in levels):
                bad(f"scope.hosp_levels must list levels 0 to 3, got {v!r}")
                continue
            clean_scope[k] = levels
        else:
            clean_scope[k] = [str(x) for x in vals]

    # parameters
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        bad("params must be a mapping")
        params_raw = {}
    known = {p.name for p in rtype.params}
    for k in params_raw:
        if k not in known:
            bad(f"params.{k} is not a parameter of {rtype.name} (it takes: {', '.join(sorted(known)) or 'none'})")
    params: dict[str, Any] = {}
    row_missing: set[str] = set()  # required params reported as wrong or empty already
    for p in rtype.params:
        v, err = p.parse(params_raw.get(p.name))
        if err:
            bad(f"params.{p.name} {err}")
            row_missing.add(p.name)  # reported as wrong already, not again as missing
        params[p.name] = v if v is not None else p.default

    # items
    items: list[Item] = []
    items_raw = raw.get("items") or {}
    if not isinstance(items_raw, dict):
        bad("items must be a mapping with codes, prefixes, table or rows")
        items_raw = {}
    for k in items_raw:
        if k not in ITEM_FIELDS:
            bad(f"items.{k} is not an item matcher (codes, prefixes, table, rows)")
    for kind in ("codes", "prefixes"):
        values = items_raw.get(kind) or []
        if isinstance(values, (str, int)):  # one code written without a list
            values = [values]
        if not isinstance(values, list):
            bad(f"items.{kind} must be a list of codes")
            continue
        for c in values:
            if not isinstance(c, str):
                # YAML reads 00110700 as an octal number and 1109000010000 as an integer: the
                # code would silently lose its leading zeros and match nothing
                bad(f'items.{kind}: {c!r} is not text; quote codes in YAML ("001109000010000") so leading zeros stay')
                continue
            items.append(Item(c.strip(), None, None) if kind == "codes" else Item(None, c.strip(), None))
    item_param_names = {p.name for p in rtype.params if p.per_item}
    rows: list[tuple[str, int, dict]] = []
    if items_raw.get("table"):
        tpath = base_dir / str(items_raw["table"])
        label = f"{source}: rule {rid}: items.table {items_raw['table']}"
        try:
            df = _read_item_table(tpath)
        except FileNotFoundError:
            bad(f"items.table {items_raw['table']} not found (looked in {tpath.parent})")
            df = None
        except Exception as e:  # unreadable CSV
            bad(f"items.table {items_raw['table']} is unreadable: {str(e).splitlines()[0]}")
            df = None
        if df is not None:
            cols = {c.strip().lower(): c for c in df.columns}
            if "code" not in cols and "prefix" not in cols and "hilist_code" not in cols:
                bad(f"items.table {items_raw['table']} needs a column code (or prefix)")
            else:
                for i, rec in enumerate(df.iter_rows(named=True), start=2):
                    rec = {k.strip().lower(): (v.strip() if isinstance(v, str) else v) for k, v in rec.items()}
                    rows.append((label + f" row {i}", i, rec))
    for i, rec in enumerate(items_raw.get("rows") or [], start=1):
        if not isinstance(rec, dict):
            bad(f"items.rows[{i}] must be a mapping")
            continue
        rows.append((f"{where}: items.rows[{i}]", i, {str(k).lower(): v for k, v in rec.items()}))
    for label, _i, rec in rows:
        code = rec.get("code") or rec.get("hilist_code")
        prefix = rec.get("prefix")
        if not code and not prefix:
            problems.append(f"{label}: code is empty")
            continue
        ip: dict[str, Any] = {}
        for name in item_param_names:
            if rec.get(name) not in (None, ""):
                v, err = rtype.param(name).parse(rec[name])
                if err:
                    problems.append(f"{label}: {name} {err}")
                    row_missing.add(name)
                ip[name] = v
            elif name in rec and rtype.param(name).required and params.get(name) is None and name not in row_missing:
                # the table has the column but this row leaves it empty, with no rule-level value
                problems.append(f"{label}: {name} is empty, and params.{name} is not given")
                row_missing.add(name)
        items.append(Item(str(code) if code else None, str(prefix) if prefix else None, rec.get("name"), ip))

    if rtype.items == "required" and not items and not problems[start:]:
        bad("items is empty: name the codes, prefixes or a table this rule applies to")
    if rtype.items == "none" and items:
        bad(f"type {rtype.name} takes no items")

    # required parameters: rule-level or on every item
    for p in rtype.params:
        if p.required and params.get(p.name) is None and p.name not in row_missing:
            if not (p.per_item and items and all(i.params.get(p.name) is not None for i in items)):
                bad(f"params.{p.name} is required" + (" (here or as a column of the item table)" if p.per_item else ""))
    if rtype.validate and len(problems) == start:
        # judge what each item will run with: the rule's parameters overlaid with the item's
        # (a per-item `group` from the table satisfies restrict_age, for instance)
        seen_params: set[str] = set()
        for eff in [{**params, **{k: v for k, v in i.params.items() if v is not None}} for i in items] or [params]:
            key = repr(sorted(eff.items()))
            if key in seen_params:
                continue
            seen_params.add(key)
            msg = rtype.validate(eff)
            if msg:
                bad(msg)
                break

    if len(problems) > start:
        return None
    return Rule(
        id=rid,
        version=str(raw["version"]),
        name=str(raw["name"]),
        type=rtype.name,
        severity=severity,
        nature=str(raw.get("nature") or rtype.nature),
        stages=[s for s in STAGES if s in stages],
        basis=str(raw.get("basis") or ""),
        params=params,
        items=items,
        valid_from=valid_from,
        valid_to=valid_to,
        scope=clean_scope,
        source=source,
        description=str(raw.get("description") or ""),
    )


def load_library(path: str | Path) -> Library:
    """Load every rule under a folder (or one YAML file). Raises RuleLibraryError with all problems."""
    path = Path(path)
    problems: list[str] = []
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise RuleLibraryError([f"{path}: no rule files (*.yaml) found"])
    elif path.is_file():
        files = [path]
    else:
        raise RuleLibraryError([f"{path}: no such rule library"])
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for f in files:
        source = str(f)
        try:
            doc = yaml.load(f.read_text(encoding="utf-8"), Loader=_Loader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" line {mark.line + 1}" if mark else ""
            problems.append(f"{source}:{at} not valid YAML: {getattr(e, 'problem', e)}")
            continue
        except UnicodeDecodeError:
            problems.append(f"{source}: not UTF-8 text")
            continue
        if doc is None:
            continue
        entries = doc.get("rules") if isinstance(doc, dict) and "rules" in doc else doc
        if isinstance(entries, dict):
            entries = [entries]
        if not isinstance(entries, list):
            problems.append(f"{source}: expected a list of rules under 'rules:'")
            continue
        for raw in entries:
            rule = parse_rule(raw, source, f.parent, problems)
            if rule is None:
                continue
            if rule.id in seen:
                problems.append(f"{source}: rule {rule.id}: id already used in {seen[rule.id]}")
                continue
            seen[rule.id] = source
            rules.append(rule)
    if problems:
        raise RuleLibraryError(problems)
    return Library(rules, path if path.is_dir() else path.parent)

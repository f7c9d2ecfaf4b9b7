"""``medaudit rules ...``: look at, check and explain a rule library; import the national batches.

medaudit rules types                      every rule type: title, nature, mode, stages
medaudit rules explain restrict_gender    what a type flags, why it matters, an example
medaudit rules list rules/                the rules of a library
medaudit rules show NHSA-B1-DRUG-GENDER   one rule: parameters, items, the SQL it runs
medaudit rules check rules/               validate without screening (exit 1 on problems)
medaudit rules import-nhsa DIR --out rules/national/
medaudit rules docs --out docs/rule-types.md
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections import Counter
from pathlib import Path
from typing import Literal, NoReturn, Optional

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.syntax import Syntax
from rich.table import Table

from ..library import Library, RuleLibraryError, load_library
from ..semantics import MODE_CLAIMS
from ..types import REGISTRY
from ..types.base import RuleType

app = typer.Typer(
    help="Rule library tools: list, show, check, explain types, import the national knowledge batches.",
    no_args_is_help=True,
    add_completion=False,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="rules")


def _out() -> Console:
    # a console per call: it follows the terminal (or COLUMNS) of the invocation
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(message: str, code: int = 2) -> NoReturn:
    _err().print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(path: Path) -> Library:
    try:
        return load_library(path)
    except RuleLibraryError as e:
        con = _err()
        con.print(f"error: the rule library {path} has {len(e.problems)} problem(s):", markup=False, soft_wrap=True)
        for p in e.problems:
            con.print(p, markup=False, soft_wrap=True)
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- type docs


def type_markdown(rt: RuleType) -> str:
    """A type's documentation as Markdown: its docstring, its parameters and its facts.

    ``medaudit rules explain`` renders exactly this; ``medaudit rules docs`` writes it for every type.
    """
    doc = inspect.cleandoc(rt.doc or "")
    headline, _, body = doc.partition("\n")
    parts = [f"## `{rt.name}` {rt.title}", "", headline.strip(), body.rstrip(), ""]
    parts += _params_table(
        rt, "**Parameters.**", "| parameter | kind | required | default | per item | meaning |", "yes", "none"
    )
    items = {"required": "required", "optional": "optional", "none": "none (it reads visits)"}[rt.items]
    parts += [
        f"**Facts.** nature {rt.nature} · deduction `{rt.mode}` · default severity `{rt.default_severity}` · "
        f"stages {', '.join(rt.stages)} · items {items}",
        "",
    ]
    return "\n".join(parts)


def _params_table(rt: RuleType, title: str, header: str, yes: str, none: str) -> list[str]:
    """A type's parameters as a Markdown table (the English and the Chinese page share it)."""
    if not rt.params:
        return [f"{title} {none}", ""]
    out = [title, "", header, "|---|---|---|---|---|---|"]
    for p in rt.params:
        kind = p.kind + (f" ({' / '.join(str(c) for c in p.choices)})" if p.choices else "")
        default = "" if p.default is None else f"`{p.default}`"
        out.append(
            f"| `{p.name}` | {kind} | {yes if p.required else ''} | {default} | "
            f"{yes if p.per_item else ''} | {p.help} |"
        )
    return out + [""]


#: how the Chinese page names the facts of a type
_ITEMS_ZH = {"required": "必须列出项目", "optional": "可不列项目（不列时查所有明细）", "none": "不用项目（按就诊判断）"}
_SEVERITY_ZH = {"violation": "违规（直接扣款）", "suspect": "可疑（复核确认后扣款）", "warning": "预警（不扣款）"}
_STAGE_ZH = {"pre_alert": "事前提醒", "in_process": "事中", "post_hoc": "事后"}
_MODE_ZH = {
    "whole_line": "整条明细",
    "excess_qty": "超出数量",
    "price_diff": "差价",
    "pct": "按比例",
    "whole_visit": "整次就诊（涉及金额）",
    "none": "不扣款",
}


def type_markdown_zh(rt: RuleType) -> str:
    """A type's documentation in Chinese (``DOC_ZH`` of its module), its parameters and its facts."""
    doc = inspect.cleandoc(rt.doc_zh or "")
    headline, _, body = doc.partition("\n")
    parts = [f"## `{rt.name}` {rt.title}", "", headline.strip(), body.rstrip(), ""]
    parts += _params_table(rt, "**参数。**", "| 参数 | 类型 | 必填 | 默认值 | 可按项目给出 | 含义 |", "是", "无")
    parts += [
        f"**要点。** 问题性质 {rt.nature} · 扣款方式 {_MODE_ZH.get(rt.mode, rt.mode)} (`{rt.mode}`) · 默认严重程度 "
        f"{_SEVERITY_ZH.get(rt.default_severity, rt.default_severity)} (`{rt.default_severity}`) · 环节 "
        + "、".join(f"{_STAGE_ZH.get(s, s)} ({s})" for s in rt.stages)
        + f" · 项目 {_ITEMS_ZH[rt.items]}",
        "",
    ]
    return "\n".join(parts)


def docs_markdown() -> str:
    head = [
        "# Rule types",
        "",
        "Generated by `medaudit rules docs` from the rule types' own documentation "
        "(`medaudit/types/*.py`); `medaudit rules explain TYPE` shows the same text. Do not edit by hand.",
        "",
        "| type | title | nature | deduction | stages |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(REGISTRY):
        rt = REGISTRY[name]
        anchor = re.sub(r"[^\w\- ]", "", f"{name} {rt.title}".lower()).replace(" ", "-")  # as GitHub makes them
        head.append(f"| [`{name}`](#{anchor}) | {rt.title} | {rt.nature} | `{rt.mode}` | {', '.join(rt.stages)} |")
    head += [
        "",
        "**Deduction modes.** A type declares its mode; the mode, not the type, makes the claim on each",
        "violating line (`medaudit/semantics.py`, `MODE_CLAIMS`: one definition for batch screening and",
        "pre-alert). The type supplies only what varies: which lines carry money, their excess units, their",
        "overcharge, the rate. A line's fund share is deductible / amount; the largest claim on a line is",
        "carried, never two.",
        "",
        *(f"- `{mode}`: {_mode_text(piece.__doc__ or '')}" for mode, piece in MODE_CLAIMS.items()),
    ]
    sections = [type_markdown(REGISTRY[n]) for n in sorted(REGISTRY)]
    return "\n".join(head) + "\n\n" + "\n".join(sections)


def _mode_text(doc: str) -> str:
    """A mode piece's docstring as one Markdown sentence: its roles and double backticks plain code."""
    text = " ".join(doc.split())
    text = re.sub(r"^Mode ``\w+``: ", "", text)
    text = re.sub(r":\w+:`([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


@app.command()
def types() -> None:
    """All rule types with title, nature, deduction mode and the stages they run at."""
    t = Table(title=f"{len(REGISTRY)} rule types (medaudit rules explain TYPE for details)")
    for c in ("type", "title", "nature", "mode", "severity", "stages", "items"):
        t.add_column(c, no_wrap=c in ("type", "mode"))
    for name in sorted(REGISTRY):
        rt = REGISTRY[name]
        t.add_row(name, rt.title, rt.nature, rt.mode, rt.default_severity, ", ".join(rt.stages), rt.items)
    _out().print(t)


@app.command()
def explain(
    type_name: str = typer.Argument(..., metavar="TYPE", help="a rule type, e.g. restrict_gender"),
    lang: Literal["zh", "en", "both"] = typer.Option(
        "zh", "--lang", help="zh: 中文 (default); en: the English text with the example; both: Chinese, then English"
    ),
) -> None:
    """What a rule type flags, why it matters, and its parameters (in Chinese; --lang en or both for English)."""
    rt = REGISTRY.get(type_name)
    if rt is None:
        _fail(f"{type_name!r} is not a rule type; known types: {', '.join(sorted(REGISTRY))}")
    if lang not in ("zh", "en", "both"):
        _fail(f"--lang must be zh, en or both, got {lang!r}")
    if lang == "en":
        text = type_markdown(rt)
    else:
        text = type_markdown_zh(rt) + (
            "\n---\n\n**English.**\n\n" + type_markdown(rt)
            if lang == "both"
            else f"\n（英文说明及示例：`medaudit rules explain {rt.name} --lang en`）\n"
        )
    _out().print(Markdown(text))


@app.command()
def docs(out: Path = typer.Option(Path("docs/rule-types.md"), "--out", help="Markdown file to write")) -> None:
    """Write the documentation of every rule type to one Markdown file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(docs_markdown(), encoding="utf-8")
    _out().print(f"wrote {out} ({len(REGISTRY)} rule types)", markup=False)


# ---------------------------------------------------------------------------- library


def _valid(r) -> str:
    if r.valid_from is None and r.valid_to is None:
        return "always"
    return f"{r.valid_from or '…'} – {r.valid_to or '…'}"


def _items_count(r) -> str:
    if not r.items:
        return "all lines" if r.rule_type.items != "none" else "—"
    return f"{len(r.items):,}"


def _library_path(positional: Path | None, option: Path | None) -> Path:
    """The library a command reads: ``--rules`` as for ``screen`` and ``rules show``, or the folder
    given as an argument (the older form); ``rules`` when neither is given."""
    if positional is not None and option is not None and positional != option:
        _fail(f"two libraries given ({positional} and --rules {option}); give one")
    return option or positional or Path("rules")


#: the library folder, the same option as ``screen --rules``
RulesOption = typer.Option(None, "--rules", help="rule library folder or YAML file (default: rules)")
#: the same, as an argument (the older form)
RulesArgument = typer.Argument(None, metavar="[DIR]", help="the library as an argument instead of --rules")


@app.command("list")
def list_rules(rules_dir: Optional[Path] = RulesArgument, rules_opt: Optional[Path] = RulesOption) -> None:
    """The rules of a library: id, type, stages, severity, items and validity."""
    rules_dir = _library_path(rules_dir, rules_opt)
    lib = _load(rules_dir)
    t = Table(title=f"{len(lib.rules)} rules in {rules_dir}")
    for c in ("id", "type", "stages", "severity", "items", "valid"):
        t.add_column(c, justify="right" if c == "items" else "left", no_wrap=c == "id")
    for r in sorted(lib.rules, key=lambda r: r.id):
        t.add_row(r.id, r.type, ", ".join(r.stages), r.severity, _items_count(r), _valid(r))
    _out().print(t)


def compile_problems(lib: Library) -> list[str]:
    """Run every rule's query over an empty database: what would fail at screening time.

    A type whose query fails is re-run rule by rule, so each problem names the rule (and its
    file) it comes from, e.g. an ``sql`` rule whose query reads a column that does not exist.
    """
    from .. import db
    from ..engine import create_hits, prepare_lines, register_rules, run_type

    problems: list[str] = []
    con = db.connect(":memory:")
    try:
        prepare_lines(con, "post_hoc")
        by_type: dict[str, list] = {}
        for r in lib.rules:
            by_type.setdefault(r.type, []).append(r)
        for tname in sorted(by_type):
            rt = REGISTRY[tname]
            try:
                register_rules(con, by_type[tname])
                create_hits(con)
                run_type(con, rt)
                continue
            except Exception:
                pass
            for r in by_type[tname]:
                try:
                    register_rules(con, [r])
                    create_hits(con)
                    run_type(con, rt)
                except Exception as e:
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    problems.append(f"{r.source}: rule {r.id}: the {tname} query fails: {msg}")
    finally:
        con.close()
    return problems


@app.command()
def check(
    rules_dir: Optional[Path] = RulesArgument,
    rules_opt: Optional[Path] = RulesOption,
    compile_queries: bool = typer.Option(
        True, "--compile/--no-compile", help="also run every rule's query over an empty database"
    ),
) -> None:
    """Validate a library without screening: every problem with file, rule id and field; exit 1 if any."""
    rules_dir = _library_path(rules_dir, rules_opt)
    con = _out()
    try:
        lib = load_library(rules_dir)
    except RuleLibraryError as e:
        con.print(f"{rules_dir}: {len(e.problems)} problem(s)", markup=False, soft_wrap=True)
        for p in e.problems:
            con.print(p, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    problems = compile_problems(lib) if compile_queries else []
    if problems:
        con.print(f"{rules_dir}: {len(problems)} problem(s)", markup=False, soft_wrap=True)
        for p in problems:
            con.print(p, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    by_type = Counter(r.type for r in lib.rules)
    n_items = sum(len(r.items) for r in lib.rules)
    files = len({r.source for r in lib.rules})
    shown = ", ".join(f"{t} {n}" for t, n in sorted(by_type.items()))
    con.print(
        f"{rules_dir}: OK, {len(lib.rules)} rules in {files} files, {n_items:,} items ({shown})",
        markup=False,
        soft_wrap=True,
    )


def _fmt(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return "" if v is None else str(v)


@app.command()
def show(
    rule_id: str = typer.Argument(..., metavar="ID", help="rule id"),
    rules_dir: Path = typer.Option(Path("rules"), "--rules", help="rule library folder or YAML file"),
    items_shown: int = typer.Option(10, "--items", help="items to list"),
) -> None:
    """One rule: its parameters, a summary of its items, and the SQL it runs."""
    from ..engine import line_input_name, line_input_sql, matched_sql, type_names

    lib = _load(rules_dir)
    try:
        r = lib.get(rule_id)
    except KeyError:
        near = [x.id for x in lib.rules if rule_id.lower() in x.id.lower()][:10]
        _fail(f"no rule {rule_id} in {rules_dir}" + (f"; did you mean {', '.join(near)}?" if near else ""))
    rt = r.rule_type
    con = _out()
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for k, v in (
        ("id", f"{r.id} (version {r.version})"),
        ("name", r.name),
        ("type", f"{r.type} {rt.title}"),
        ("severity", r.severity),
        ("nature", r.nature),
        ("stages", ", ".join(r.stages)),
        ("deduction", rt.mode),
        ("valid", _valid(r)),
        ("scope", ", ".join(f"{k}={_fmt(v)}" for k, v in r.scope.items()) or "all"),
        ("basis", r.basis),
        ("file", r.source),
        ("description", r.description),
    ):
        if v:
            head.add_row(k, v)
    con.print(head)

    per_item = {p.name for p in rt.params if p.per_item}
    pt = Table(title="Parameters")
    for c in ("parameter", "value", "per item", "meaning"):
        pt.add_column(c)
    for p in rt.params:
        values = Counter(_fmt(i.params.get(p.name)) for i in r.items if i.params.get(p.name) is not None)
        per = ", ".join(f"{v} ({n:,})" for v, n in values.most_common(6)) + (" …" if len(values) > 6 else "")
        pt.add_row(p.name, _fmt(r.params.get(p.name)), per, p.help)
    if rt.params:
        con.print(pt)

    codes = sum(1 for i in r.items if i.code)
    prefixes = sum(1 for i in r.items if i.prefix)
    if r.items:
        con.print(f"Items: {len(r.items):,} ({codes:,} codes, {prefixes:,} prefixes)", markup=False)
        it = Table(title=f"First {min(items_shown, len(r.items))} items")
        it.add_column("code / prefix", no_wrap=True)
        it.add_column("name")
        cols = [p.name for p in rt.params if p.name in per_item and any(p.name in i.params for i in r.items)]
        for c in cols:
            it.add_column(c)
        for i in r.items[:items_shown]:
            it.add_row(i.code or f"{i.prefix}*", i.name or "", *(_fmt(i.params.get(c)) for c in cols))
        con.print(it)
    else:
        con.print(
            "Items: none (the rule applies to every line)"
            if rt.items != "none"
            else "Items: none (the type reads the tables itself)",
            markup=False,
        )

    names = type_names(rt)
    steps = []
    if rt.line_inputs:
        steps.append(
            "-- step 1: what the type reads of the screened lines (a big screen in parts writes these per part;"
            " lines: only the part files, a prefilter the findings do not depend on)\n"
            + "\n\n".join(
                f"CREATE TEMP VIEW {line_input_name(rt, n)} AS\n{line_input_sql(rt, n, names).strip()}"
                for n in rt.line_inputs
            )
        )
    if rt.items != "none":
        steps.append(
            f"-- step {len(steps) + 1}: match the screened lines to the items of the {rt.name} rules (validity and scope applied)\n"
            f"-- p_{rt.name}: one row per rule and item (rule_key, code, prefix, match_all, item_name, "
            + ", ".join(p.name for p in rt.params)
            + ")\n"
            f"CREATE TEMP TABLE m_{rt.name} AS\n"
            + textwrap.dedent(matched_sql(rt, codes > 0, prefixes > 0, not r.items)).strip()
        )
    if rt.name == "sql":
        steps.append(
            f"-- step {len(steps) + 1}: the rule's query runs alone in the sandbox connection (only the tables "
            "and columns it names, no file access, settings locked); its rows go into sql_rule_rows\n"
            + str(r.params.get("query", "")).strip()
        )
    steps.append(
        f"-- step {len(steps) + 1}: the {rt.name} query, run once for all rules of the type; "
        f"this rule's rows have the rule_key of {r.id} in r_all\n" + _type_sql(rt, r, names)
    )
    con.print(Syntax("\n\n".join(steps), "sql", word_wrap=True, theme="ansi_dark"))


def _type_sql(rt: RuleType, rule, names: dict[str, str]) -> str:
    """The type's query as the engine runs it; a composed one is built over this rule's tables."""
    if rt.compose is None:
        return rt.sql(names).strip()
    from .. import db
    from ..engine import prepare_lines, register_rules

    con = db.connect(":memory:")  # the canonical tables, empty: enough to compose over
    try:
        prepare_lines(con, "post_hoc")
        register_rules(con, [rule])
        return textwrap.dedent(rt.sql(names, con)).strip()
    except Exception as e:  # show what the engine would say at run time
        return f"-- the query could not be composed: {str(e).splitlines()[0]}"
    finally:
        con.close()


# ---------------------------------------------------------------------------- national batches


@app.command("import-nhsa")
def import_nhsa(
    folder: Path = typer.Argument(..., metavar="DIR", help="folder with the national knowledge workbooks (.xlsx)"),
    out: Path = typer.Option(Path("rules/national"), "--out", help="where to write the rules and item tables"),
) -> None:
    """Turn the national knowledge batches (两库知识点 workbooks) into rules; report every row left out."""
    from ..nhsa import import_batches

    if not folder.is_dir():
        _fail(f"{folder}: no such folder")
    result = import_batches(folder, out)
    con = _out()
    t = Table(title=f"Rules written to {out}")
    for c in ("rule", "type", "items", "file", "workbook"):
        t.add_column(c, justify="right" if c == "items" else "left", no_wrap=c in ("rule", "items"))
    for r in result.rules:
        t.add_row(r.rule_id, r.type, f"{len(r.rows):,}", r.path.name if r.path else "", r.source)
    t.add_section()
    t.add_row("total", "", f"{result.items:,}", "", "")
    con.print(t)
    if result.problems:
        pt = Table(title=f"{len(result.problems)} row(s) not mapped (left out)")
        for c in ("file", "sheet", "row", "reason"):
            pt.add_column(c, justify="right" if c == "row" else "left", overflow="fold")
        for p in result.problems:
            pt.add_row(p.file, p.sheet, str(p.row) if p.row else "", p.reason)
        con.print(pt)
    else:
        con.print("Every row was mapped.")
    if result.notes:
        nt = Table(title=f"{len(result.notes)} note(s) on mapped rows")
        for c in ("file", "sheet", "row", "note"):
            nt.add_column(c, justify="right" if c == "row" else "left", overflow="fold")
        for p in result.notes:
            nt.add_row(p.file, p.sheet, str(p.row) if p.row else "", p.reason)
        con.print(nt)
    if result.missing:
        con.print(f"[yellow]No workbook found for:[/] {'；'.join(result.missing)}")
    if result.removed:
        con.print(f"Removed stale output: {', '.join(result.removed)}", markup=False)
    if not result.rules:
        _fail("no rule was written", 1)
    try:
        lib = load_library(out)
    except RuleLibraryError as e:
        con.print(f"[red]The written library does not load ({len(e.problems)} problem(s)):[/]")
        for problem in e.problems:
            con.print(problem, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    con.print(f"Checked: {out} loads, {len(lib.rules)} rules.", markup=False)

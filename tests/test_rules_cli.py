"""``medaudit rules ...`` through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.commands.rules import docs_markdown, type_markdown, type_markdown_zh
from medaudit.types import REGISTRY

from kit import write_rules

runner = CliRunner()
WIDE = {"COLUMNS": "250"}
NHSA = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "nhsa-rule-batches"

RULES = """
rules:
  - id: R-SEX-001
    version: 1
    name: 限女性使用的检查项目
    type: restrict_gender
    basis: 国家医保局第一批规则库（限定性别对象）
    valid_from: 2024-01-01
    valid_to: 2026-12-31
    items: {codes: ["002101030300000"]}
    params: {gender: 2}
  - id: R-DUP-001
    version: 3
    name: 急诊监护费含诊查费
    type: duplicate_charge
    stages: [post_hoc]
    items: {table: dup.csv}
"""
DUP_CSV = """\
code,name,main_code,window
001102000030000,急诊诊查费,001103000010000,same_day
001109000010000,普通病房床位费,001103000010000,same_visit
"""


def invoke(*args: str):
    return runner.invoke(app, ["rules", *args], env=WIDE)


@pytest.fixture
def lib(tmp_path) -> Path:
    return write_rules(tmp_path / "rules", RULES, {"dup.csv": DUP_CSV})


def test_types_lists_every_type():
    res = invoke("types")
    assert res.exit_code == 0, res.output
    for name, rt in REGISTRY.items():
        assert name in res.output and rt.title in res.output
    assert "restrict_gender" in res.output and "超支付范围" in res.output and "whole_line" in res.output


def test_explain_renders_the_type_docs():
    res = invoke("explain", "restrict_gender", "--lang", "en")
    assert res.exit_code == 0, res.output
    assert "What it flags." in res.output and "Why it matters." in res.output and "Example." in res.output
    assert "id: R-SEX-001" in res.output  # the example block
    assert "the gender the item is for: 1 male, 2 female" in res.output  # the parameter table
    assert "deduction whole_line" in res.output
    md = type_markdown(REGISTRY["restrict_gender"])
    assert md.startswith("## `restrict_gender` 限性别\n")
    assert "| `gender` | choice (1 / 2) | yes |  | yes | the gender the item is for: 1 male, 2 female |" in md


def test_explain_is_chinese_by_default_with_the_english_behind_an_option():
    res = invoke("explain", "restrict_gender")
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "限性别：限定某一性别的项目用于另一性别的人。" in flat and "查什么。" in flat and "为什么。" in flat
    assert "扣款方式 整条明细 (whole_line)" in flat and "事前提醒 (pre_alert)" in flat
    assert "What it flags." not in res.output and "medaudit rules explain restrict_gender --lang en" in flat
    both = invoke("explain", "frequency_limit", "--lang", "both")
    assert both.exit_code == 0 and both.output.index("查什么。") < both.output.index("What it flags.")
    assert invoke("explain", "frequency_limit", "--lang", "fr").exit_code == 2


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_type_has_its_chinese_doc_in_step_with_the_english(name):
    """The Chinese text sits next to the English in the type's module (DOC_ZH); it states the
    deduction mode and names every parameter the English text names."""
    import re

    rt = REGISTRY[name]
    assert rt.doc_zh.strip(), f"{name}: no DOC_ZH"
    assert re.search(r"[\u4e00-\u9fff]{8}", rt.doc_zh)
    for head in ("**查什么。**", "**为什么。**", "**扣款。**"):
        assert head in rt.doc_zh, (name, head)
    assert f"`{rt.mode}`" in rt.doc_zh.split("**扣款。**")[1]
    en = set(re.findall(r"`([a-z_0-9]+)`", rt.doc.split("**Example")[0]))
    zh = set(re.findall(r"`([a-z_0-9]+)`", rt.doc_zh))
    assert (en & {p.name for p in rt.params}) <= zh
    module = __import__(f"medaudit.types.{name}", fromlist=["DOC_ZH"])
    assert module.DOC_ZH == rt.doc_zh and module.__doc__ == rt.doc
    assert type_markdown_zh(rt).startswith(f"## `{name}` {rt.title}\n")


def test_explain_unknown_type():
    res = invoke("explain", "restrict_colour")
    assert res.exit_code == 2
    assert "'restrict_colour' is not a rule type; known types: after_death" in res.output


def test_docs_writes_the_same_text_as_explain(tmp_path):
    out = tmp_path / "docs" / "rule-types.md"
    res = invoke("docs", "--out", str(out))
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    assert text == docs_markdown()
    for name, rt in REGISTRY.items():
        assert type_markdown(rt) in text


def test_list(lib):
    res = invoke("list", str(lib))
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    sex = next(x for x in lines if "R-SEX-001" in x)
    assert "restrict_gender" in sex and "pre_alert, in_process, post_hoc" in sex and "violation" in sex
    assert "2024-01-01 – 2026-12-31" in sex and "│     1 │" in sex
    dup = next(x for x in lines if "R-DUP-001" in x)
    assert "duplicate_charge" in dup and "post_hoc" in dup and "pre_alert" not in dup and "always" in dup
    assert "│     2 │" in dup
    assert "2 rules in" in res.output


def test_show_gives_parameters_items_and_sql(lib):
    res = invoke("show", "R-DUP-001", "--rules", str(lib))
    assert res.exit_code == 0, res.output
    out = res.output
    assert "R-DUP-001 (version 3)" in out and "急诊监护费含诊查费" in out and "duplicate_charge 重复收费" in out
    assert "same_day (1), same_visit (1)" in out  # per-item window values
    assert "Items: 2 (2 codes, 0 prefixes)" in out
    assert "001102000030000" in out and "急诊诊查费" in out
    # the matching step, then the type's query with its names filled in
    assert "CREATE TEMP TABLE m_duplicate_charge AS" in out
    # the items of the type's rules, each carrying its rule's validity and scope, joined to the lines by code
    assert "FROM p_duplicate_charge p JOIN r_all r ON r.rule_key = p.rule_key" in out
    assert "p ON l.hilist_code = p.code" in out
    assert "FROM m_duplicate_charge m WHERE deductible > 0" in out
    assert "{m}" not in out and "{p}" not in out


def test_show_unknown_rule(lib):
    res = invoke("show", "R-SEX", "--rules", str(lib))
    assert res.exit_code == 2
    assert f"no rule R-SEX in {lib}; did you mean R-SEX-001?" in res.output


def test_check_ok(lib):
    res = invoke("check", str(lib))
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"{lib}: OK, 2 rules in 1 files, 3 items (duplicate_charge 1, restrict_gender 1)"


def test_check_lists_every_problem_and_fails(tmp_path):
    bad = write_rules(
        tmp_path / "rules",
        """
        rules:
          - id: R-SEX-001
            version: 1
            name: 限女性使用的检查项目
            type: restrict_gender
            items: {codes: ["002101030300000"]}
            params: {gender: M}
          - id: R-DUP-001
            version: 1
            name: 重复收费
            type: duplicate_charge
            items: {table: missing.csv}
          - id: R-X
            version: 1
            name: x
            type: restrict_colour
    """,
    )
    res = invoke("check", str(bad))
    assert res.exit_code == 1
    f = bad / "rules.yaml"
    assert res.output.splitlines() == [
        f"{bad}: 4 problem(s)",
        f"{f}: rule R-SEX-001: params.gender must be 1 or 2, got 'M'",
        f"{f}: rule R-DUP-001: items.table missing.csv not found (looked in {bad})",
        f"{f}: rule R-DUP-001: params.main_code is required (here or as a column of the item table)",
        f"{f}: rule R-X: type 'restrict_colour' is not a known rule type (see `medaudit rules types`)",
    ]


def test_list_of_a_broken_library_fails_with_the_problems(tmp_path):
    bad = write_rules(
        tmp_path / "rules",
        "rules:\n  - {id: A, version: 1, name: a, type: restrict_gender, items: {codes: [X]}, params: {gender: 3}}\n",
    )
    res = invoke("list", str(bad))
    assert res.exit_code == 1
    assert f"{bad / 'rules.yaml'}: rule A: params.gender must be 1 or 2, got 3" in res.output


@pytest.mark.skipif(not NHSA.is_dir(), reason=f"the national knowledge workbooks are not at {NHSA}")
@pytest.mark.slow  # over 3 s: imports the fourteen workbooks
def test_import_nhsa_reports_rules_and_rows_left_out(tmp_path):
    out = tmp_path / "national"
    res = invoke("import-nhsa", str(NHSA), "--out", str(out))
    missing = {"course_limit", "period_limit", "secondary_procedure"} - set(REGISTRY)
    assert "NHSA-B1-DRUG-GENDER" in res.output and "6,472" in res.output and "15,622" in res.output
    assert "2 row(s) not mapped" in res.output and "合计" in res.output
    assert "限定值域 15天 but 药品说明 says 14天" in res.output
    if missing:
        pytest.skip(f"loading the written library waits on rule types: {', '.join(sorted(missing))}")
    assert res.exit_code == 0, res.output
    assert f"Checked: {out} loads, 15 rules." in res.output
    res = invoke("check", str(out))
    assert res.exit_code == 0 and "OK, 15 rules in 15 files, 15,622 items" in res.output
    res = invoke("show", "NHSA-B8-1-ITEM-FREQUENCY", "--rules", str(out))
    assert res.exit_code == 0 and "1 (34), 24 (33)" in res.output


def test_import_nhsa_without_a_folder(tmp_path):
    res = invoke("import-nhsa", str(tmp_path / "nope"))
    assert res.exit_code == 2
    assert "nope: no such folder" in res.output


@pytest.mark.skipif("sql" not in REGISTRY, reason="the sql rule type is not there yet")
def test_show_composes_the_query_of_an_sql_rule(tmp_path):
    lib = write_rules(
        tmp_path / "rules",
        """
        - id: R-SQL-001
          version: 1
          name: 门诊收取住院诊查费
          type: sql
          params:
            query: |
              SELECT bkkp_sn, '门诊就诊不应收取住院诊查费' AS evidence
              FROM lines WHERE NOT inpatient AND hilist_code = '001102000010000'
    """,
    )
    res = invoke("show", "R-SQL-001", "--rules", str(lib))
    assert res.exit_code == 0, res.output
    assert "Items: none (the type reads the tables itself)" in res.output
    # the rule's own query runs alone in the sandbox, then the type's statement over its rows
    assert "-- step 1: the rule's query runs alone in the sandbox connection" in res.output
    assert "FROM lines WHERE NOT inpatient AND hilist_code = '001102000010000'" in res.output
    assert "-- step 2: the sql query" in res.output and "FROM sql_rule_rows" in res.output
    assert "could not be composed" not in res.output


def test_show_prints_what_a_month_wide_type_reads_of_the_lines(tmp_path):
    """overtreatment reads the lines through its inputs (RuleType.line_inputs): show prints them
    as the views the engine makes, before the query that reads them."""
    lib = write_rules(
        tmp_path / "rules",
        """
        - id: R-OVT-001
          version: 1
          name: 过度检查
          type: overtreatment
    """,
    )
    res = invoke("show", "R-OVT-001", "--rules", str(lib))
    assert res.exit_code == 0, res.output
    out = res.output
    assert "-- step 1: what the type reads of the screened lines" in out
    assert "CREATE TEMP VIEW li_overtreatment_class_lines AS" in out
    assert "CREATE TEMP VIEW li_overtreatment_screened_visits AS" in out
    assert out.index("li_overtreatment_class_lines AS") < out.index("-- step 2: the overtreatment query")
    assert "FROM li_overtreatment_class_lines" in out


@pytest.mark.skipif("sql" not in REGISTRY, reason="the sql rule type is not there yet")
def test_check_runs_every_query_over_an_empty_database(tmp_path):
    lib = write_rules(
        tmp_path / "rules",
        """
        - id: R-SQL-OK
          version: 1
          name: 门诊收取住院诊查费
          type: sql
          params: {query: "SELECT bkkp_sn FROM lines WHERE NOT inpatient"}
        - id: R-SQL-BAD
          version: 1
          name: 坏查询
          type: sql
          params: {query: "SELECT bkkp_sn FROM lines WHERE no_such_column = 1"}
    """,
    )
    res = invoke("check", str(lib))
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert lines[0] == f"{lib}: 1 problem(s)"
    assert lines[1].startswith(f"{lib / 'rules.yaml'}: rule R-SQL-BAD: the sql query fails: ")
    assert 'Referenced column "no_such_column" not found' in lines[1]
    assert len(lines) == 2
    res = invoke("check", "--no-compile", str(lib))
    assert res.exit_code == 0 and "OK, 2 rules" in res.output


def test_list_and_check_take_the_library_as_screen_does(lib):
    """`rules list --rules DIR` and `rules check --rules DIR`, like `screen --rules`; the argument form stays."""
    for cmd in ("list", "check"):
        by_option, by_argument = invoke(cmd, "--rules", str(lib)), invoke(cmd, str(lib))
        assert by_option.exit_code == 0 and by_option.output == by_argument.output, by_option.output
    res = invoke("list", str(lib), "--rules", "elsewhere")
    assert res.exit_code != 0 and "two libraries given" in res.output

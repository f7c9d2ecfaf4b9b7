"""Rule library validation: every message names the file, the rule id and the field."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from medaudit.library import RuleLibraryError, load_library


def lib(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    root = tmp_path / "rules"
    root.mkdir(exist_ok=True)
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def problems(root: Path) -> list[str]:
    with pytest.raises(RuleLibraryError) as e:
        load_library(root)
    return e.value.problems


GENDER = """
- id: R-SEX-001
  version: 1
  name: 限女性
  type: restrict_gender
  items: {codes: ["002101030300000"]}
  params: {gender: 2}
"""


def test_a_good_rule_loads_with_defaults(tmp_path):
    library = load_library(lib(tmp_path, {"gender.yaml": GENDER}))
    (r,) = library.rules
    assert (r.id, r.version, r.type, r.severity, r.nature) == (
        "R-SEX-001",
        "1",
        "restrict_gender",
        "violation",
        "超支付范围",
    )
    assert r.stages == ["pre_alert", "in_process", "post_hoc"]
    assert r.params == {"gender": "2"}
    assert [(i.code, i.prefix) for i in r.items] == [("002101030300000", None)]


def test_unknown_type(tmp_path):
    root = lib(tmp_path, {"a.yaml": GENDER.replace("restrict_gender", "restrict_colour")})
    assert problems(root) == [
        f"{root / 'a.yaml'}: rule R-SEX-001: type 'restrict_colour' is not a known rule type (see `medaudit rules types`)"
    ]


def test_bad_param_value(tmp_path):
    root = lib(tmp_path, {"gender.yaml": GENDER.replace("gender: 2", "gender: M")})
    assert problems(root) == [f"{root / 'gender.yaml'}: rule R-SEX-001: params.gender must be 1 or 2, got 'M'"]


def test_unknown_param_and_unknown_field(tmp_path):
    text = GENDER.replace("params: {gender: 2}", "params: {gender: 2, sex: 2}\n  colour: red")
    root = lib(tmp_path, {"g.yaml": text})
    assert problems(root) == [
        f"{root / 'g.yaml'}: rule R-SEX-001: unknown field 'colour'",
        f"{root / 'g.yaml'}: rule R-SEX-001: params.sex is not a parameter of restrict_gender (it takes: gender)",
    ]


def test_bad_stage_and_type_that_cannot_run_at_a_stage(tmp_path):
    text = (
        GENDER
        + """
- id: R-BED-001
  version: 1
  name: 床位天数
  type: bed_days_over_los
  stages: [pre_alert, post_hoc]
  items: {codes: ["001109000010000"]}
"""
    )
    root = lib(tmp_path, {"r.yaml": text.replace("params: {gender: 2}", "params: {gender: 2}\n  stages: [later]")})
    assert problems(root) == [
        f"{root / 'r.yaml'}: rule R-SEX-001: stages: 'later' is not a stage (pre_alert, in_process, post_hoc)",
        f"{root / 'r.yaml'}: rule R-BED-001: type bed_days_over_los cannot run at stage pre_alert (it runs at: in_process, post_hoc)",
    ]


def test_bad_severity_and_dates(tmp_path):
    text = GENDER.replace(
        "params: {gender: 2}",
        "params: {gender: 2}\n  severity: fatal\n  valid_from: 2026-13-01\n  valid_to: '2025-01-01'",
    )
    root = lib(tmp_path, {"r.yaml": text})
    assert problems(root) == [
        f"{root / 'r.yaml'}: rule R-SEX-001: severity must be violation or suspect, got 'fatal'",
        f"{root / 'r.yaml'}: rule R-SEX-001: valid_from must be a date YYYY-MM-DD, got '2026-13-01'",
    ]
    text = GENDER.replace(
        "params: {gender: 2}", "params: {gender: 2}\n  valid_from: 2026-01-01\n  valid_to: 2025-01-01"
    )
    root = lib(tmp_path, {"r.yaml": text})
    assert problems(root) == [f"{root / 'r.yaml'}: rule R-SEX-001: valid_to 2025-01-01 is before valid_from 2026-01-01"]


def test_bad_scope(tmp_path):
    text = GENDER.replace("params: {gender: 2}", "params: {gender: 2}\n  scope: {hosp_levels: [4], wards: [A]}")
    root = lib(tmp_path, {"r.yaml": text})
    assert problems(root) == [
        f"{root / 'r.yaml'}: rule R-SEX-001: scope.hosp_levels must list levels 0 to 3, got [4]",
        f"{root / 'r.yaml'}: rule R-SEX-001: scope.wards is not a scope filter (med_types, hosp_levels, institutions)",
    ]


def test_missing_items_and_missing_fields(tmp_path):
    text = """
    - id: R-SEX-002
      type: restrict_gender
      params: {gender: 1}
    """
    root = lib(tmp_path, {"r.yaml": text})
    assert problems(root) == [
        f"{root / 'r.yaml'}: rule R-SEX-002: version is missing",
        f"{root / 'r.yaml'}: rule R-SEX-002: name is missing",
    ]
    root = lib(tmp_path, {"r.yaml": text.replace("type:", "version: 1\n      name: 限男性\n      type:")})
    assert problems(root) == [
        f"{root / 'r.yaml'}: rule R-SEX-002: items is empty: name the codes, prefixes or a table this rule applies to",
    ]


def test_missing_items_table(tmp_path):
    text = GENDER.replace('items: {codes: ["002101030300000"]}', "items: {table: gender_items.csv}")
    root = lib(tmp_path, {"sub/r.yaml": text})
    assert problems(root) == [
        f"{root / 'sub' / 'r.yaml'}: rule R-SEX-001: items.table gender_items.csv not found (looked in {root / 'sub'})"
    ]


def test_item_table_params_per_row_and_bad_value_names_its_row(tmp_path):
    text = """
    - id: R-SEX-003
      version: 2
      name: 限性别药品
      type: restrict_gender
      items: {table: gender_items.csv}
    """
    table = "code,name,gender\n002101030300000,子宫造影,2\nXG03AAA,某药,1\n"
    library = load_library(lib(tmp_path, {"r.yaml": text, "gender_items.csv": table}))
    assert [(i.code, i.name, i.params) for i in library.rules[0].items] == [
        ("002101030300000", "子宫造影", {"gender": "2"}),
        ("XG03AAA", "某药", {"gender": "1"}),
    ]
    root = lib(tmp_path, {"r.yaml": text, "gender_items.csv": table + "XG03BBB,另一药,M\n"})
    assert problems(root) == [
        f"{root / 'r.yaml'}: rule R-SEX-003: items.table gender_items.csv row 4: gender must be 1 or 2, got 'M'"
    ]


def test_item_table_missing_a_required_per_item_param_names_the_row(tmp_path):
    text = """
    - id: R-SEX-004
      version: 1
      name: 限性别
      type: restrict_gender
      items: {table: t.csv}
    """
    root = lib(tmp_path, {"r.yaml": text, "t.csv": "code,gender\n002101030300000,2\nXG03AAA,\n"})
    assert problems(root) == [
        f"{root / 'r.yaml'}: rule R-SEX-004: items.table t.csv row 3: gender is empty, and params.gender is not given"
    ]


def test_item_table_in_gb18030_with_bom_free_chinese_names(tmp_path):
    """A table saved by Excel on a Chinese Windows is GB18030; it must load like UTF-8."""
    text = GENDER.replace('items: {codes: ["002101030300000"]}', "items: {table: t.csv}")
    table = "编码备注,code,name\n,002101030300000,子宫造影\n".encode("gb18030")
    library = load_library(lib(tmp_path, {"r.yaml": text, "t.csv": table}))
    assert [(i.code, i.name) for i in library.rules[0].items] == [("002101030300000", "子宫造影")]


def test_item_table_without_code_column(tmp_path):
    text = GENDER.replace('items: {codes: ["002101030300000"]}', "items: {table: t.csv}")
    root = lib(tmp_path, {"r.yaml": text, "t.csv": "编码,名称\n002101030300000,子宫造影\n"})
    assert problems(root) == [f"{root / 'r.yaml'}: rule R-SEX-001: items.table t.csv needs a column code (or prefix)"]


def test_inline_rows_and_bad_matcher(tmp_path):
    text = GENDER.replace(
        'items: {codes: ["002101030300000"]}', "items: {rows: [{code: '001', gender: 3}], lists: [x]}"
    )
    root = lib(tmp_path, {"r.yaml": text})
    assert problems(root) == [
        f"{root / 'r.yaml'}: rule R-SEX-001: items.lists is not an item matcher (codes, prefixes, table, rows)",
        f"{root / 'r.yaml'}: rule R-SEX-001: items.rows[1]: gender must be 1 or 2, got 3",
    ]


def test_duplicate_id_across_files(tmp_path):
    root = lib(tmp_path, {"a.yaml": GENDER, "b.yaml": GENDER})
    assert problems(root) == [f"{root / 'b.yaml'}: rule R-SEX-001: id already used in {root / 'a.yaml'}"]


def test_bad_yaml_names_the_line(tmp_path):
    text = GENDER + "- id: R-SEX-009\n  version: 1\n  name: [unclosed\n  type: restrict_gender\n"
    root = lib(tmp_path, {"a.yaml": text})
    (msg,) = problems(root)
    assert msg.startswith(f"{root / 'a.yaml'}: line 11 not valid YAML: ")


def test_all_problems_of_a_library_are_reported_at_once(tmp_path):
    root = lib(
        tmp_path,
        {
            "a.yaml": GENDER.replace("gender: 2", "gender: M"),
            "b.yaml": GENDER.replace("R-SEX-001", "R-X").replace("restrict_gender", "nope"),
        },
    )
    assert len(problems(root)) == 2


def test_cross_parameter_check_of_a_type(tmp_path):
    text = """
    - id: R-AGE-001
      version: 1
      name: 限儿童
      type: restrict_age
      items: {codes: ["001302000010000"]}
      params: {group: 儿童, max_age: 17}
    """
    root = lib(tmp_path, {"r.yaml": text})
    assert problems(root) == [
        f"{root / 'r.yaml'}: rule R-AGE-001: params: give either group or min_age/max_age, not both"
    ]


def test_unquoted_numeric_codes_are_refused_and_a_single_code_is_one_item(tmp_path):
    text = GENDER.replace(
        'items: {codes: ["002101030300000"]}', "items: {codes: [00110700, 1109000010000, '001109000010000']}"
    )
    root = lib(tmp_path, {"r.yaml": text})
    assert problems(root) == [
        f"{root / 'r.yaml'}: rule R-SEX-001: items.codes: 37312 is not text; quote codes in YAML "
        '("001109000010000") so leading zeros stay',
        f"{root / 'r.yaml'}: rule R-SEX-001: items.codes: 1109000010000 is not text; quote codes in YAML "
        '("001109000010000") so leading zeros stay',
    ]
    text = GENDER.replace('items: {codes: ["002101030300000"]}', 'items: {codes: "002101030300000", prefixes: XG03}')
    library = load_library(lib(tmp_path, {"r.yaml": text}))
    assert [(i.code, i.prefix) for i in library.rules[0].items] == [("002101030300000", None), (None, "XG03")]


@pytest.mark.parametrize("rid", ["R'; DROP TABLE findings; --", "R 1", "规则1", "../x", "R\u00a01", "R" * 65])
def test_rule_ids_are_held_to_a_strict_pattern(tmp_path, rid):
    root = lib(tmp_path, {"gender.yaml": GENDER.replace("id: R-SEX-001", f"id: {json.dumps(rid)}")})  # JSON is YAML
    (p,) = problems(root)
    assert "must be 1-64 ASCII letters, digits" in p

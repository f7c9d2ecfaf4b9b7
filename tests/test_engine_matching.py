"""Matching: whether a rule's items can match one line twice is judged from the items (issue 15);
one evaluation per rule body; and a line hit twice in one finding grouped into one hit line."""

from __future__ import annotations

import duckdb
import pytest

from medaudit.engine import items_may_overlap


def p_table(items: list[tuple[int, str | None, str | None, bool]]):
    con = duckdb.connect()
    con.execute("CREATE TEMP TABLE p_x (rule_key INTEGER, code VARCHAR, prefix VARCHAR, match_all BOOLEAN)")
    if items:
        con.executemany("INSERT INTO p_x VALUES (?, ?, ?, ?)", items)
    return con


@pytest.mark.parametrize(
    "items, overlap",
    [
        ([(0, None, "X", False), (0, None, "Z", False)], False),  # no code starts with both X and Z
        ([(0, "A1", None, False), (0, "A2", None, False)], False),  # distinct exact codes
        ([(0, None, "X", False), (1, None, "X", False)], False),  # the same prefix in two rules
        ([(0, "X01", None, False), (1, None, "X", False)], False),  # code under a prefix of another rule
        ([(0, None, "X", False), (0, None, "XA", False)], True),  # XA... matches both
        ([(0, None, "XA", False), (0, None, "XA", False)], True),  # the same prefix twice
        ([(0, "X01", None, False), (0, None, "X", False)], True),  # code X01 is under prefix X
        ([(0, "X01", None, False), (0, "X01", None, False)], True),  # a code listed twice
        ([(0, "X01", "X", False)], True),  # one item with a code under its own prefix
        ([(0, None, None, True), (0, "A1", None, False)], True),  # match-all beside an item
        ([(0, None, None, True)], False),
    ],
)
def test_items_may_overlap(items, overlap):
    assert items_may_overlap(p_table(items), "p_x") is overlap


# ------------------------------------------------------------------ one evaluation per rule body

from decimal import Decimal  # noqa: E402

from kit import Batch  # noqa: E402

from medaudit import engine  # noqa: E402

INJ = "001201000040000"
TWINS = """
- id: R-DLN-001
  version: 1
  name: 同一时间重复计费
  type: duplicate_line
- id: R-DLN-COPY
  version: 3
  name: 重复计费（另一规则库）
  type: duplicate_line
  severity: suspect
- id: R-DLN-DAY
  version: 1
  name: 同日重复计费
  type: duplicate_line
  params: {window: same_day}
"""


def test_rules_with_one_body_are_evaluated_once_and_each_gets_its_findings(tmp_path, monkeypatch):
    evaluated = []
    real = engine.register_rules

    def spy(con, rules, distinct_bodies=False):
        by_type = real(con, rules, distinct_bodies)
        evaluated.extend(
            con.execute(
                "SELECT DISTINCT r.rule_id FROM p_duplicate_line p JOIN r_all r USING (rule_key) ORDER BY 1"
            ).fetchall()
        )
        return by_type

    monkeypatch.setattr(engine, "register_rules", spy)
    b = Batch()
    v = b.visit(mdtrt_id="VL1")
    b.line(v, INJ, time="2026-03-02 08:00:00", bkkp_sn="A1")
    b.line(v, INJ, time="2026-03-02 08:00:00", bkkp_sn="A2")
    b.line(v, INJ, time="2026-03-02 09:00:00", bkkp_sn="A3")
    found = b.screen(tmp_path, TWINS)
    # R-DLN-COPY differs only in labels (id, name, version, severity): its body is R-DLN-001's
    assert evaluated == [("R-DLN-001",), ("R-DLN-DAY",)]
    by_rule = {f["rule_id"]: f for f in found}
    assert sorted(by_rule) == ["R-DLN-001", "R-DLN-COPY", "R-DLN-DAY"]
    assert by_rule["R-DLN-001"]["violating"] == by_rule["R-DLN-COPY"]["violating"] == {"A2": Decimal("10")}
    assert by_rule["R-DLN-DAY"]["violating"] == {"A2": Decimal("10"), "A3": Decimal("10")}
    assert by_rule["R-DLN-COPY"]["severity"] == "suspect" and by_rule["R-DLN-COPY"]["rule_version"] == "3"
    assert by_rule["R-DLN-001"]["evidence"] == by_rule["R-DLN-COPY"]["evidence"]


def test_a_rule_body_is_what_decides_hits_not_the_labels():
    import dataclasses
    import datetime as dt

    from medaudit.library import Item, Rule

    base = Rule(
        id="R-1",
        version="1",
        name="甲",
        type="frequency_limit",
        severity="violation",
        nature="违规收费",
        stages=["post_hoc"],
        basis="依据",
        params={"max_per_day": 1},
        items=[Item("001", None, "项目甲", {"group": "g"}), Item(None, "X01", None, {})],
    )
    same = dataclasses.replace(base, id="R-2", version="3", name="乙", severity="suspect", basis="别的", nature="别的")
    assert engine.rule_body(same) == engine.rule_body(base)
    others = [
        dataclasses.replace(base, type="duplicate_line"),
        dataclasses.replace(base, params={"max_per_day": 2}),
        dataclasses.replace(base, params={"max_per_day": "1"}),
        dataclasses.replace(base, params={"max_per_day": 1.5}),
        dataclasses.replace(base, items=[Item("001", None, "项目乙", {"group": "g"}), Item(None, "X01", None, {})]),
        dataclasses.replace(base, items=[Item("001", None, "项目甲", {"group": "h"}), Item(None, "X01", None, {})]),
        dataclasses.replace(base, items=[Item("001", None, "项目甲", {"group": "g"})]),
        dataclasses.replace(base, items=[Item(None, "001", "项目甲", {"group": "g"}), Item(None, "X01", None, {})]),
        dataclasses.replace(base, valid_from=dt.date(2026, 1, 1)),
        dataclasses.replace(base, scope={"med_types": ["21"]}),
    ]
    bodies = {engine.rule_body(r) for r in others} | {engine.rule_body(base)}
    assert len(bodies) == len(others) + 1


def test_a_code_shorter_than_a_prefix_matches_once():
    """Prefixes X0 and A of one rule cannot both match a code; a one-character code A used to
    match A twice (its 'head' of length 2 is A itself). Found by tests/test_semantics.py."""
    from medaudit import engine
    from medaudit.library import Item, Rule
    from medaudit.types import REGISTRY

    con = duckdb.connect()
    con.execute(
        "CREATE TEMP TABLE lines (bkkp_sn VARCHAR, hilist_code VARCHAR, fee_date DATE, inst_level INTEGER, "
        "med_type VARCHAR, fixmedins_code VARCHAR)"
    )
    con.execute("INSERT INTO lines VALUES ('L0', 'A', DATE '2026-03-01', 0, '11', 'H1')")
    rule = Rule(
        "R0",
        "1",
        "r",
        "restrict_gender",
        "violation",
        "",
        ["post_hoc"],
        "",
        {"gender": "1"},
        [Item(None, "X0", None), Item(None, "A", None)],
    )
    engine.register_rules(con, [rule])
    engine.build_matched(con, REGISTRY["restrict_gender"])
    assert con.execute("SELECT rule_key, bkkp_sn FROM m_restrict_gender").fetchall() == [(0, "L0")]


# ------------------------------------------------------------------ hits grouped into hit lines


def test_a_line_hit_twice_in_one_finding_is_one_hit_line():
    """``findings_sql`` groups only the (rule, finding, line) keys that have more than one hit row
    and takes the others as they are (issue 15: grouping every row cost more than the rest of
    the step); both kinds must give what grouping every row gives."""
    from decimal import Decimal

    from medaudit import engine

    con = duckdb.connect()
    engine.create_hits(con)
    con.execute(f"""CREATE TEMP TABLE {engine.RULES} AS SELECT 1 AS rule_key, 'R-1' AS rule_id, 1 AS rule_version,
                    'r' AS rule_name, 'duplicate_line' AS rule_type, 'violation' AS severity, 'n' AS nature, 'b' AS basis""")
    con.execute(f"CREATE TEMP TABLE {engine.FAN} (rep_key INTEGER, rule_key INTEGER)")
    con.execute(f"""CREATE TEMP TABLE lines AS SELECT * FROM (VALUES
        ('L1', TIMESTAMP '2026-01-01 08:00', 10.0, 'P', 'H', 'D', 'Dr', 'S', TIMESTAMP '2026-01-05', 'VD', 'C'),
        ('L2', TIMESTAMP '2026-01-01 09:00', 20.0, 'P', 'H', 'D', 'Dr', 'S', TIMESTAMP '2026-01-05', 'VD', 'C'),
        ('L3', TIMESTAMP '2026-01-01 10:00', 30.0, 'P', 'H', 'D', 'Dr', 'S', TIMESTAMP '2026-01-05', 'VD', 'C'))
        t({engine.LINE_INFO})""")
    rows = [  # rule_key, finding_key, mdtrt_id, bkkp_sn, role, claim, ev_line, excess_units
        (1, "V", "V", "L1", "violating", 5, "b", 2),
        (1, "V", "V", "L1", "related", 9, "a", 7),  # twice: violating wins, related's claim and units ignored
        (1, "V", "V", "L2", "related", 3, "c", 1),  # once, related: claim 0, no units
        (1, "V", "V", "L3", "violating", None, None, None),  # once, no claim stated: 0
        (1, "V", "V", "L3", "violating", 4, "d", None),  # now twice: the larger claim
        (1, "W", None, None, "related", None, "x", None),  # an entity's finding, no line, twice
        (1, "W", None, None, "related", None, "x", None),
        (1, "V2", "V", "L2", "violating", 6, "e", 3),  # the same line in another finding: apart
    ]
    con.executemany(
        f"""INSERT INTO {engine.HITS} (rule_key, finding_key, mdtrt_id, bkkp_sn, role, claim, ev_line, excess_units)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        rows,
    )
    con.execute(engine.findings_sql("post_hoc", 1))
    got = con.execute(
        """SELECT finding_key, bkkp_sn, role, claim, ev_line, excess_units FROM hit_lines_l
           ORDER BY finding_key, bkkp_sn NULLS LAST"""
    ).fetchall()

    def grouped():  # what grouping every key gives
        keys: dict = {}
        for k, f, _m, sn, role, claim, ev, units in rows:
            keys.setdefault((k, f, sn), []).append((role, claim, ev, units))
        out = []
        for (_k, f, sn), hs in keys.items():
            v = [h for h in hs if h[0] == "violating"]
            evs = sorted({h[2] for h in hs if h[2] is not None})
            units = [h[3] for h in v if h[3] is not None]
            claims = [h[1] for h in v if h[1] is not None]
            out.append(
                (
                    f,
                    sn,
                    "violating" if v else "related",
                    Decimal(max(claims, default=0)),
                    "；".join(evs) if evs else None,
                    max(units) if units else None,
                )
            )
        return sorted(out, key=lambda r: (r[0], r[1] is None, r[1] or ""))

    assert [(f, sn, role, Decimal(c), ev, None if u is None else int(u)) for f, sn, role, c, ev, u in got] == grouped()
    assert len(got) == 5

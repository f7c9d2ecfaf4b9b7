"""Nightly (incremental) screening gives the findings of a full re-screen, night by night.

A generated batch is split into the batches a bureau receives day by day (late submissions,
settlements after the lines, deaths and purchase records arriving later: medaudit/sample/split.py).
Two databases load the same batches in the same order; after each load one screens what the
new batch touches (the default of ``medaudit screen``), the other screens everything (``--all``).
Their findings, finding lines, money and appeal states must be identical after every night.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medaudit import db as dbm
from medaudit.cli import app
from medaudit.engine import screen
from medaudit.incremental import Scope, ScopeError
from medaudit.library import load_library
from medaudit.loader import load_batch
from medaudit.sample.split import split_batch

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "batch"
RULES = ROOT / "rules"
STAGES = ("post_hoc", "in_process")


def state(con) -> dict[str, list]:
    """Everything a full and an incremental history must agree on (not ``last_run``: a full
    re-screen touches every finding it finds again)."""
    return {
        "findings": con.execute(
            """SELECT finding_id, rule_id, stage, status, fixmedins_code, dept_code, dr_code, psn_no, mdtrt_id,
                      setl_id, period, finding_key, flagged_amt, claimed_amt, deduction_amt, evidence, first_run
               FROM findings ORDER BY finding_id"""
        ).fetchall(),
        "lines": con.execute("SELECT * FROM finding_lines ORDER BY ALL").fetchall(),
        "states": con.execute("SELECT * FROM finding_state ORDER BY ALL").fetchall(),
    }


def nightly(folders: list[Path], db: Path, mode: str, library) -> tuple[object, list[dict], int]:
    """Load each folder, then screen both stages; returns the connection, the state after each
    night and the number of lines screened in all."""
    con = dbm.connect(db)
    states, screened = [], 0
    for f in folders:
        load_batch(f, con)
        for st in STAGES:
            screened += screen(con, library, st, scope=Scope(mode)).n_lines
        states.append(state(con))
    return con, states, screened


def assert_same_nights(a: list[dict], b: list[dict]) -> None:
    for night, (x, y) in enumerate(zip(a, b)):
        for part in x:
            assert x[part] == y[part], f"night {night}: {part} differ: " + _first_difference(x[part], y[part])


def _first_difference(x: list, y: list) -> str:
    sx, sy = set(x), set(y)
    only_x, only_y = sorted(sx - sy)[:2], sorted(sy - sx)[:2]
    return f"{len(sx - sy)} only incremental, e.g. {only_x}; {len(sy - sx)} only full, e.g. {only_y}"


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> list[Path]:
    """The committed sample (Jan-Sep 2026) cut into 12 batches, 15% of visits arriving 20 days late."""
    out = tmp_path_factory.mktemp("days")
    cuts = [dt.date(2026, 1, 20) + dt.timedelta(days=20 * k) for k in range(11)]
    return split_batch(SAMPLE, out, cuts, late_share=0.15, late_days=20, seed=7)


@pytest.fixture(scope="module")
def full_nights(days, tmp_path_factory):
    """The full re-screen of every night (``--all``), made once for the tests that compare with it."""
    mp = pytest.MonkeyPatch()
    from kit import set_wall_clock

    set_wall_clock(mp, "2026-10-01")
    try:
        _, nights, n = nightly(days, tmp_path_factory.mktemp("full") / "full.duckdb", "all", load_library(RULES))
    finally:
        mp.undo()
    return nights, n


@pytest.mark.slow
def test_nightly_runs_equal_full_rescreens(days, full_nights, tmp_path, wall_clock):
    wall_clock("2026-10-01")
    library = load_library(RULES)
    con_i, nights_i, n_i = nightly(days, tmp_path / "inc.duckdb", "new", library)
    nights_f, n_f = full_nights
    assert nights_f[-1]["findings"], "the sample must give findings"
    assert_same_nights(nights_i, nights_f)
    # and the nightly runs really read less than the whole history each night
    assert n_i < n_f * 0.6, (n_i, n_f)
    # every batch is recorded as screened for each stage, once
    assert con_i.execute(
        "SELECT stage, count(*), count(DISTINCT batch_id) FROM screened_batches GROUP BY 1 ORDER BY 1"
    ).fetchall() == [(s, len(days), len(days)) for s in sorted(STAGES)]


@pytest.mark.slow
def test_each_reach_is_needed(days, full_nights, tmp_path, wall_clock):
    """The test above can fail: reading only the touched visits (no history for the cross-visit
    types) gives other findings than a full re-screen."""
    from medaudit.types import REGISTRY
    from medaudit.types.base import Reach

    wall_clock("2026-10-01")
    library = load_library(RULES)
    saved = {
        t: REGISTRY[t].reach
        for t in (
            "period_limit",
            "readmission",
            "high_frequency_purchase",
            "inventory_mismatch",
            "peer_outlier",
            "overlapping_stays",
        )
    }
    try:
        for t in saved:
            REGISTRY[t].reach = lambda rule: Reach()
        _, nights_i, _ = nightly(days, tmp_path / "inc.duckdb", "new", library)
    finally:
        for t, f in saved.items():
            REGISTRY[t].reach = f
    with pytest.raises(AssertionError):
        assert_same_nights(nights_i, full_nights[0])


@pytest.mark.slow
def test_a_query_rule_of_reach_all_reads_everything(days, tmp_path, wall_clock):
    """A sql rule without ``reach: visit`` sees every screened line each night; the others keep
    their own reach in the same run."""
    wall_clock("2026-10-01")
    library = load_library(RULES)
    library = dataclasses.replace(
        library,
        rules=[
            dataclasses.replace(r, params={k: v for k, v in r.params.items() if k != "reach"}) if r.type == "sql" else r
            for r in library.rules
        ],
    )
    _, nights_i, _ = nightly(days[:6], tmp_path / "inc.duckdb", "new", library)
    _, nights_f, _ = nightly(days[:6], tmp_path / "full.duckdb", "all", library)
    assert_same_nights(nights_i, nights_f)


@pytest.mark.slow  # over 3 s: screens the split sample night after night
def test_nothing_new_screens_nothing_and_changed_rules_screen_everything(days, tmp_path, wall_clock):
    wall_clock("2026-10-01")
    library = load_library(RULES)
    con = dbm.connect(tmp_path / "a.duckdb")
    load_batch(days[0], con)
    first = screen(con, library, scope=Scope("new"))
    assert first.scope == "all loaded data (the first post_hoc run)"
    again = screen(con, library, scope=Scope("new"))
    assert again.scope.startswith("nothing new") and again.n_lines == 0 and again.n_new_findings == 0
    load_batch(days[1], con)
    night = screen(con, library, scope=Scope("new"))
    assert night.scope == "what the 1 new batch(es) touch (2)" and 0 < night.n_lines
    # a run made before 2026-12-05 stored the digest of the standard library's JSON: the same
    # library is no change, a changed one is
    assert library.digest_v1() != library.digest()
    con.execute("UPDATE screen_runs SET rules_digest = ? WHERE run_id = ?", [library.digest_v1(), night.run_id])
    load_batch(days[2], con)
    night = screen(con, library, scope=Scope("new"))
    assert night.scope == "what the 1 new batch(es) touch (3)" and 0 < night.n_lines
    con.execute("UPDATE screen_runs SET rules_digest = ? WHERE run_id = ?", [library.digest_v1(), night.run_id])
    # a new rule version: everything again (the old version's open findings are superseded by it)
    changed = dataclasses.replace(
        library,
        rules=[
            dataclasses.replace(r, version=str(int(r.version) + 1)) if r.id == "R-SEX-001" else r for r in library.rules
        ],
    )
    full = screen(con, changed, scope=Scope("new"))
    assert full.scope.startswith("all loaded data: the rule library changed")
    assert full.n_lines == con.execute("SELECT count(*) FROM lines").fetchall()[0][0] >= night.n_lines


@pytest.mark.slow  # over 2.5 s: loads and screens night after night
def test_a_night_gives_its_own_findings_their_state_and_a_full_run_every_finding(days, tmp_path, wall_clock):
    """A night looks only at its own findings for a missing state row (not at every finding
    held: lifecycle.on_screened night=True); a full run also gives one to a finding without it
    (as a database made before the states were kept has)."""
    wall_clock("2026-10-01")
    library = load_library(RULES)
    con = dbm.connect(tmp_path / "a.duckdb")
    load_batch(days[0], con)
    screen(con, library, scope=Scope("new"))
    old = con.execute("SELECT min(finding_id) FROM findings").fetchall()[0][0]
    con.execute("DELETE FROM finding_state WHERE finding_id = ?", [old])
    load_batch(days[1], con)
    night = screen(con, library, scope=Scope("new"))
    assert night.scope.startswith("what the 1 new batch") and night.n_new_findings > 0
    without = "SELECT finding_id FROM findings ANTI JOIN finding_state USING (finding_id)"
    assert {f for (f,) in con.execute(without).fetchall()} <= {old}
    assert (
        con.execute(
            "SELECT count(*) FROM findings f JOIN finding_state s USING (finding_id) WHERE f.first_run = ?",
            [night.run_id],
        ).fetchall()[0][0]
        == night.n_new_findings
    )
    screen(con, library, scope=Scope("all"))
    assert con.execute(without).fetchall() == []


@pytest.mark.slow  # over 3 s: screens the split sample night after night
def test_batch_and_period_scopes(days, tmp_path, wall_clock):
    wall_clock("2026-10-01")
    library = load_library(RULES)
    con = dbm.connect(tmp_path / "a.duckdb")
    for f in days[:4]:
        load_batch(f, con)
    screen(con, library, scope=Scope("all"))
    before = state(con)
    # screening a part again finds nothing new and changes nothing
    assert screen(con, library, scope=Scope("batch", batches=(2,))).n_new_findings == 0
    res = screen(con, library, scope=Scope("period", period="2026-02"))
    assert res.n_new_findings == 0 and res.n_lines > 0
    assert state(con) == before
    with pytest.raises(ScopeError, match="no batch 99 is loaded"):
        screen(con, library, scope=Scope("batch", batches=(99,)))


@pytest.fixture(scope="module")
def sample_screened_by_cli(tmp_path_factory) -> Path:
    """The committed sample loaded and screened by ``medaudit screen``, once per test process
    (each case below checks an option against a copy: the screen is the costly part)."""
    db = tmp_path_factory.mktemp("cli") / "a.duckdb"
    r = CliRunner().invoke(app, ["screen", str(SAMPLE), "--db", str(db)])
    assert r.exit_code == 0, r.output
    return db


@pytest.mark.parametrize(
    "args, message",
    [
        (["--period", "2026/03"], "--period: '2026/03' is not a month written YYYY-MM"),
        (["--since", "yesterday"], "--since: 'yesterday' is not a date or time"),
        (["--since", "2026-03-01T18:00+08:00"], "--since: '2026-03-01T18:00+08:00' names a time zone"),
        (["--all", "--period", "2026-03"], "give one of --all, --period, not several"),
        (["--batch", "7"], "--batch: no batch 7 is loaded (loaded: 1)"),
    ],
)
def test_cli_scope_options_are_checked(sample_screened_by_cli, tmp_path, args, message):
    db = tmp_path / "a.duckdb"
    shutil.copyfile(sample_screened_by_cli, db)
    r = CliRunner().invoke(app, ["screen", str(db), *args])
    assert r.exit_code != 0 and message in " ".join(r.output.split()), r.output


@pytest.mark.slow  # over 3 s: screens nights of the split sample through the CLI
def test_cli_says_what_a_night_screened(days, tmp_path):
    db = tmp_path / "a.duckdb"
    r = CliRunner().invoke(app, ["screen", str(days[0]), "--db", str(db)])
    assert "Screened: all loaded data (the first post_hoc run)" in " ".join(r.output.split()), r.output
    r = CliRunner().invoke(app, ["screen", str(days[1]), "--db", str(db)])
    out = " ".join(r.output.split())
    assert "Screened: what the 1 new batch(es) touch (2);" in out and "visits with their history" in out, out
    # what it read beyond the night, and why: the persons' windows, and whole months for the
    # month-wide types (the night holds lines of January and February)
    m = re.search(
        r"([\d,]+) visits with their history \(([\d,]+) in the persons' windows, ([\d,]+) more for the "
        r"month-wide types, which read the whole of ([\d, -]+)\)",
        out,
    )
    assert m, out
    total, person, month = (int(x.replace(",", "")) for x in m.groups()[:3])
    assert person > 0 and month > 0 and person + month == total
    assert {"2026-01", "2026-02"} <= set(m.group(4).split(", ")), m.group(4)
    r = CliRunner().invoke(app, ["screen", str(db)])
    out = " ".join(r.output.split())
    assert r.exit_code == 0 and "Nothing screened (post_hoc): nothing new: every loaded batch was screened" in out, out


# ---------------------------------------------------------------------------- the mechanisms, one by one


def nights_of(tmp_path: Path, batches: list, rules_yaml: str, mode: str) -> list[dict]:
    from kit import write_rules

    library = load_library(write_rules(tmp_path / f"rules-{mode}", rules_yaml))
    folders = [b.write(tmp_path / f"night{k}") for k, b in enumerate(batches)]
    return nightly(folders, tmp_path / f"{mode}.duckdb", mode, library)[1]


def assert_nightly_equals_full(tmp_path: Path, batches: list, rules_yaml: str) -> list[dict]:
    from kit import set_wall_clock

    # both on one day: a new finding's appeal window opens on the day it is stored, so runs on
    # either side of midnight would differ by that alone (seen once, a CI run at 00:00 UTC)
    with pytest.MonkeyPatch.context() as mp:
        set_wall_clock(mp, "2026-10-01")
        full = nights_of(tmp_path, batches, rules_yaml, "all")
        assert_same_nights(nights_of(tmp_path, batches, rules_yaml, "new"), full)
    return full


HBA1C = "002503020070000"
PERIOD_RULE = f"""
- id: R-PER
  version: 1
  name: 7天内限1次
  type: period_limit
  items: {{codes: ["{HBA1C}"]}}
  params: {{max_count: 1, period_days: 7}}
"""


@pytest.mark.slow  # over 3 s: a batch loaded and screened night after night, then re-screened whole
def test_a_period_count_is_read_from_where_its_chain_starts(tmp_path):
    """Units every 4 days: which are excess depends on the first of the chain (1 paid, 5 excess,
    9 paid, 13 excess, 17 paid). A night that read only 7 days back from the 17th would start the
    count at the 13th and call the 17th excess; a late unit of 26 February flips them all."""
    from kit import Batch

    def unit(b: Batch, day: str) -> None:
        v = b.visit(mdtrt_id=f"V{day}", psn_no="P1", begntime=f"{day} 08:00:00", endtime=f"{day} 10:00:00")
        b.line(v, HBA1C, pric="45", bkkp_sn=f"F{day}")

    first, second, third = Batch(), Batch(), Batch()
    for d in ("2026-03-01", "2026-03-05", "2026-03-09", "2026-03-13"):
        unit(first, d)
    unit(second, "2026-03-17")
    unit(third, "2026-02-26")
    full = assert_nightly_equals_full(tmp_path, [first, second, third], PERIOD_RULE)
    assert {r[8] for r in full[1]["findings"]} == {"V2026-03-05", "V2026-03-13"}
    assert {r[8] for r in full[2]["findings"]} >= {"V2026-03-01", "V2026-03-09", "V2026-03-17"}


INV_RULE = """
- id: R-INV
  version: 1
  name: 进销存不符
  type: inventory_mismatch
"""
AMOX = "XJ01CAA040A001010100001"


def test_a_month_finding_is_kept_only_for_the_months_a_night_reads_whole(tmp_path):
    """A late February visit makes the night read February whole, and with it a stay running
    into March; its March line alone is over March's stock, but March was not read whole: the
    night must not judge March (the full screen's March finding stands from the first night)."""
    from kit import Batch

    first, second = Batch(), Batch()
    a = first.visit(mdtrt_id="VA", psn_no="PA", begntime="2026-03-10 08:00:00", endtime="2026-03-10 10:00:00")
    first.line(a, AMOX, cnt="8", pric="1.5", bkkp_sn="A-0310")
    s = first.visit(
        mdtrt_id="VS", psn_no="PS", med_type="21", begntime="2026-02-27 08:00:00", endtime="2026-03-02 08:00:00"
    )
    first.line(s, AMOX, cnt="2", pric="1.5", time="2026-02-27 09:00:00", bkkp_sn="S-0227")
    first.line(s, AMOX, cnt="12", pric="1.5", time="2026-03-01 09:00:00", bkkp_sn="S-0301")
    first.add("purchases", fixmedins_code="H001", hilist_code=AMOX, period="2026-02", purchase_cnt="100")
    first.add("purchases", fixmedins_code="H001", hilist_code=AMOX, period="2026-03", purchase_cnt="10")
    b = second.visit(mdtrt_id="VB", psn_no="PB", begntime="2026-02-20 08:00:00", endtime="2026-02-20 10:00:00")
    second.line(b, AMOX, cnt="1", pric="1.5", bkkp_sn="B-0220")
    full = assert_nightly_equals_full(tmp_path, [first, second], INV_RULE)
    assert [r[11] for r in full[1]["findings"]] == [f"H001|{AMOX}|2026-03"]


def _exam_fee(b, pric: str, begndate: str, **kw: str) -> None:
    """A catalogue row of 诊查费 (001102000010000) at ``pric`` yuan for every hospital level."""
    b.add(
        "hilist",
        hilist_code="001102000010000",
        hilist_name="诊查费",
        list_type="201",
        chrgitm_lv="01",
        lv1_pric=pric,
        lv2_pric=pric,
        lv3_pric=pric,
        begndate=begndate,
        **kw,
    )


@pytest.mark.slow  # over 3 s: nights of loads and screens, each compared with a full re-screen
def test_knowledge_arriving_later_reaches_the_lines_it_judges(tmp_path):
    """A death record after the fees that followed it, a catalogue loaded after the lines, then a
    new catalogue row with a lower cap: each night equals a full re-screen and finds them."""
    from kit import Batch

    rules = """
- {id: R-DTH, version: 1, name: 死亡后费用, type: after_death}
- {id: R-CAT, version: 1, name: 目录外, type: not_in_catalog}
- {id: R-CAP, version: 1, name: 超限价, type: price_cap}
"""
    first, second, third, fourth = Batch(), Batch(), Batch(), Batch()
    v = first.visit(mdtrt_id="VD", psn_no="PD", begntime="2026-03-10 08:00:00", endtime="2026-03-10 10:00:00")
    first.line(v, "001102000010000", pric="30", bkkp_sn="D1")
    w = first.visit(mdtrt_id="VC", psn_no="PC", begntime="2026-03-11 08:00:00", endtime="2026-03-11 10:00:00")
    first.line(w, "001102000020000", pric="30", bkkp_sn="C1")
    first.line(w, "001102000010000", pric="30", bkkp_sn="C2")
    x = first.visit(mdtrt_id="VX", psn_no="PX", begntime="2026-03-12 08:00:00", endtime="2026-03-12 10:00:00")
    first.line(x, "001102000030000", pric="30", bkkp_sn="X1")  # a code no catalogue row names
    second.add("psn_death", psn_no="PD", die_date="2026-03-05")
    _exam_fee(third, "40", "2026-01-01", enddate="2026-02-28")
    _exam_fee(fourth, "20", "2026-03-01")
    full = assert_nightly_equals_full(tmp_path, [first, second, third, fourth], rules)
    rules_found = [sorted({r[1] for r in night["findings"]}) for night in full]
    assert rules_found == [[], ["R-DTH"], ["R-CAT", "R-DTH"], ["R-CAP", "R-CAT", "R-DTH"]], rules_found
    assert "VX" in {r[8] for r in full[2]["findings"]}


@pytest.mark.slow  # over 2.5 s: loads and screens night after night
def test_a_night_that_outbids_an_earlier_finding_moves_the_line_and_both_deductions(tmp_path):
    """A night settles only the lines its findings touch (money.settle_deductions(touched=True)),
    and that must include the earlier findings holding them: a price-cap finding carries 10 of a
    line on the first night; the death record arriving on the second makes an after-death
    finding claim the whole 30, which takes the line, and the price-cap finding's deduction
    falls to 0, exactly as in a full re-screen."""
    from kit import Batch

    rules = """
- {id: R-CAP, version: 1, name: 超限价, type: price_cap}
- {id: R-DTH, version: 1, name: 死亡后费用, type: after_death}
"""
    first, second = Batch(), Batch()
    _exam_fee(first, "20", "2026-01-01")
    v = first.visit(mdtrt_id="VD", psn_no="PD", begntime="2026-03-10 08:00:00", endtime="2026-03-10 10:00:00")
    first.line(v, "001102000010000", pric="30", bkkp_sn="D1")
    w = first.visit(mdtrt_id="VE", psn_no="PE", begntime="2026-03-11 08:00:00", endtime="2026-03-11 10:00:00")
    first.line(w, "001102000010000", pric="25", bkkp_sn="E1")  # another person's, untouched by the night
    second.add("psn_death", psn_no="PD", die_date="2026-03-05")
    full = assert_nightly_equals_full(tmp_path, [first, second], rules)
    deducted = [{(r[1], r[8]): r[14] for r in night["findings"]} for night in full]
    assert deducted[0] == {("R-CAP", "VD"): Decimal("10.00"), ("R-CAP", "VE"): Decimal("5.00")}, deducted[0]
    assert deducted[1] == {
        ("R-CAP", "VD"): Decimal("0.00"),
        ("R-DTH", "VD"): Decimal("30.00"),
        ("R-CAP", "VE"): Decimal("5.00"),
    }, deducted[1]


OVT_RULE = """
- id: R-OVT
  version: 1
  name: 过度检查
  type: overtreatment
  params: {percentile: 95, min_peers: 6}
"""
IDM_RULE = """
- id: R-IDM
  version: 1
  name: 冒名就诊
  type: identity_misuse
"""


def _reach_off(monkeypatch, tname: str) -> None:
    from medaudit.types import REGISTRY
    from medaudit.types.base import Reach

    monkeypatch.setattr(REGISTRY[tname], "reach", lambda rule: Reach())


@pytest.mark.parametrize("reach", ["declared", "visit only"])
def test_overtreatment_judges_a_month_made_whole_by_a_late_peer(tmp_path, monkeypatch, reach):
    """Five March visits (one with 9 lab tests) are too few peers (min_peers 6); a late sixth
    arrives the next night and the untouched visit with 9 becomes an outlier. Only a night that
    reads the whole month (overtreatment's reach) finds it; a February stay running into March
    is read with the month but its February group is not judged that night."""
    from kit import Batch

    if reach != "declared":
        _reach_off(monkeypatch, "overtreatment")
    first, second = Batch(), Batch()

    def peer(b, vid, q, day="2026-03-10"):
        v = b.visit(
            mdtrt_id=vid,
            psn_no=f"P{vid}",
            begntime=f"{day} 08:00:00",
            endtime=f"{day} 10:00:00",
            dscg_maindiag_code="J06.900",
        )
        b.line(v, "002503010010000", cnt=str(q), pric="20", med_chrgitm_type="04", bkkp_sn=f"{vid}-L")

    for k, q in enumerate((1, 1, 1, 1, 9)):
        peer(first, f"M{k}", q)
    s = first.visit(
        mdtrt_id="FEB",
        psn_no="PFEB",
        med_type="21",
        begntime="2026-02-27 08:00:00",
        endtime="2026-03-02 08:00:00",
        dscg_maindiag_code="J18.900",
    )
    first.line(s, "002503010010000", cnt="30", pric="20", med_chrgitm_type="04", time="2026-03-01 09:00:00")
    peer(second, "M5", 1)
    if reach == "declared":
        full = assert_nightly_equals_full(tmp_path, [first, second], OVT_RULE)
        assert [r[8] for r in full[1]["findings"]] == ["M4"]
    else:
        with pytest.raises(AssertionError, match="findings differ"):
            assert_nightly_equals_full(tmp_path, [first, second], OVT_RULE)


@pytest.mark.parametrize("reach", ["declared", "visit only"])
def test_identity_misuse_reads_the_persons_visits_across_midnight(tmp_path, monkeypatch, reach):
    """A clinic visit at 00:20 is loaded first; the visit elsewhere at 23:50 the evening before
    arrives late: the earlier night's visit is flagged, which needs the person's visits of the
    day before and after (a reach of 1 day for 60 minutes)."""
    from kit import Batch

    if reach != "declared":
        _reach_off(monkeypatch, "identity_misuse")
    first, second = Batch(), Batch()
    b = first.visit(
        mdtrt_id="B", psn_no="PX", fixmedins_code="H002", begntime="2026-03-03 00:20:00", endtime="2026-03-03 01:00:00"
    )
    first.line(b, "001102000010000", pric="10")
    a = second.visit(
        mdtrt_id="A", psn_no="PX", fixmedins_code="H001", begntime="2026-03-02 23:50:00", endtime="2026-03-02 23:59:00"
    )
    second.line(a, "001102000010000", pric="10")
    if reach == "declared":
        full = assert_nightly_equals_full(tmp_path, [first, second], IDM_RULE)
        assert [r[8] for r in full[1]["findings"]] == ["B"]
    else:
        with pytest.raises(AssertionError, match="findings differ"):
            assert_nightly_equals_full(tmp_path, [first, second], IDM_RULE)


def test_a_visits_span_merges_what_each_batch_brings(tmp_path):
    """visit_span: a visit's stored span grows with lines that arrive in a later batch without its
    visit row (and with a visit row that arrives after its lines: the person and the open end
    come from it), and stays as it was when a batch does not touch it."""
    from medaudit import incremental

    con = dbm.connect(tmp_path / "s.duckdb")
    d = dt.datetime

    def batch(n, visits=(), lines=()):
        con.execute("INSERT INTO load_log (batch_id, content_hash) VALUES (?, ?)", [n, f"h{n}"])
        for mdtrt_id, psn_no, begin, end in visits:
            con.execute(
                "INSERT INTO mdtrt_d (batch_id, mdtrt_id, psn_no, begntime, endtime) VALUES (?, ?, ?, ?, ?)",
                [n, mdtrt_id, psn_no, begin, end],
            )
        for mdtrt_id, when in lines:
            con.execute(
                "INSERT INTO fee_list_d (batch_id, mdtrt_id, fee_ocur_time) VALUES (?, ?, ?)", [n, mdtrt_id, when]
            )
        incremental.stage_spans(con)
        incremental.commit_spans(con)
        return {r[0]: r[1:] for r in con.execute("SELECT * FROM visit_span ORDER BY 1").fetchall()}

    day = dt.date
    spans = batch(
        1,
        visits=[("V1", "P1", d(2026, 3, 1, 8), None), ("V2", "P2", d(2026, 3, 2, 8), d(2026, 3, 2, 9))],
        lines=[("V1", d(2026, 3, 1, 9)), ("V2", d(2026, 3, 2, 8))],
    )
    assert spans == {
        "V1": ("P1", day(2026, 3, 1), day(2026, 3, 1), True),
        "V2": ("P2", day(2026, 3, 2), day(2026, 3, 2), False),
    }
    # V1's lines of later days, without its visit row; V3's lines before its visit row
    spans = batch(2, lines=[("V1", d(2026, 3, 5, 9)), ("V3", d(2026, 3, 7, 9))])
    assert spans["V1"] == ("P1", day(2026, 3, 1), day(2026, 3, 5), True)
    assert spans["V2"] == ("P2", day(2026, 3, 2), day(2026, 3, 2), False)
    assert spans["V3"] == (None, day(2026, 3, 7), day(2026, 3, 7), True)  # no visit row yet: its end is open
    spans = batch(3, visits=[("V3", "P3", d(2026, 3, 6, 8), None)])
    assert spans["V3"] == ("P3", day(2026, 3, 6), day(2026, 3, 7), True)
    assert spans["V1"] == ("P1", day(2026, 3, 1), day(2026, 3, 5), True)

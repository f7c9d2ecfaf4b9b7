"""Issue 13 item 4 (the part left): a tip's visits are screened with every rule on arrival and its
findings tagged with the tip; item 3: ``medaudit findings`` marks (and ``--watched`` keeps) the
findings of watched entities."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from typer.testing import CliRunner

from kit import Batch, set_wall_clock, write_rules
from medaudit import db
from medaudit.cli import app
from medaudit.engine import screen
from medaudit.library import load_library
from medaudit.loader import load_batch
from medaudit.supervision import store, tips, watch
from test_lifecycle import RULES, UTERUS, loop_batch

DAY = dt.date(2026, 3, 20)
WIDE = {"COLUMNS": "200"}
HBA1C = "002503020030000"  # 糖化血红蛋白测定: once in 15 days, across visits (a person-window rule)
TIP_RULES = (
    RULES
    + f"""
  - id: R-PRD-001
    version: 1
    name: 糖化血红蛋白15天内限1次
    type: period_limit
    stages: [post_hoc]
    items: {{codes: ["{HBA1C}"]}}
    params: {{max_count: 1, period_days: 15}}
"""
)


def blocks(output: str) -> dict[str, str]:
    """``medaudit findings`` output: finding id (12 characters) -> its block (heading, notes, evidence)."""
    out, cur = {}, None
    for line in output.splitlines():
        head = re.match(r"([0-9a-f]{12})  R-", line)
        if head:
            cur = head[1]
            out[cur] = ""
        if cur and not line.startswith(("1 of", "2 of")) and " findings. One with" not in line:
            out[cur] += line + "\n"
    return out


def with_open_stay():
    """The loop batch plus an open stay (not settled: in-process) billing a male patient's 子宫造影,
    and a second visit of the ``both`` visit's person (a person window wider than the tip's visit)."""
    b, v = loop_batch()
    v["open"] = b.visit(settled=False, endtime="", gend="1", med_type="21", begntime="2026-03-10 08:00:00")
    b.line(v["open"], UTERUS, hilist_name="子宫造影", setl_id="", time="2026-03-11 08:00:00", bkkp_sn="OPEN1")
    p = b._visit(v["both"])["psn_no"]
    v["again"] = b.visit(
        gend="1",
        psn_no=p,
        begntime="2026-03-04 08:00:00",
        endtime="2026-03-04 10:00:00",
        adm_dept_codg="D02",
        chfpdr_code="DR02",
    )
    b.line(v["again"], UTERUS, hilist_name="子宫造影", pric="60", bkkp_sn="AGAIN1", bilg_dr_code="DR02")
    # HbA1c on both visits: the second (V-again) is beyond the period; V-both's line is what blocks it
    b.line(v["both"], HBA1C, hilist_name="糖化血红蛋白测定", pric="50", bkkp_sn="HBA1", bilg_dr_code="DR02")
    b.line(v["again"], HBA1C, hilist_name="糖化血红蛋白测定", pric="50", bkkp_sn="HBA2", bilg_dr_code="DR02")
    return b, v


def loaded(tmp_path, monkeypatch, b, name="a"):
    """A database with the batch loaded and NOT screened (the tip arrives first)."""
    set_wall_clock(monkeypatch, "2026-04-01")
    con = db.connect(tmp_path / f"{name}.duckdb")
    load_batch(b.write(tmp_path / f"batch_{name}"), con)
    return con


def all_findings(con, where="TRUE", args=()):
    return con.execute(
        f"SELECT finding_id, stage, mdtrt_id, rule_id, claimed_amt, deduction_amt, status FROM findings "
        f"WHERE {where} ORDER BY 1",
        list(args),
    ).fetchall()


def test_a_tips_visits_are_screened_on_arrival_with_the_ids_a_full_screen_gives(tmp_path, monkeypatch):
    b, v = with_open_stay()
    lib = load_library(write_rules(tmp_path / "rules", TIP_RULES))
    con = loaded(tmp_path, monkeypatch, b)
    full = loaded(tmp_path, monkeypatch, b, "full")  # the same data, screened whole, both stages
    screen(full, lib)
    screen(full, lib, stage="in_process")
    t = tips.add(
        con,
        channel="电话",
        received_on=DAY,
        content="给男性患者收子宫造影费",
        by="接线员 孙",
        institution="H001",
        visits=[v["both"], v["open"]],
        library=lib,
    )
    # the findings that involve the named visits: theirs, and the period finding of V-again that
    # V-both's HbA1c line blocks (read through the person window); not V-again's own gender finding
    expect = all_findings(
        full,
        "mdtrt_id IN (?, ?) OR finding_id IN (SELECT finding_id FROM finding_lines WHERE bkkp_sn = 'HBA1')",
        (v["both"], v["open"]),
    )
    assert {(s, m, r) for _, s, m, r, *_ in expect} == {
        ("post_hoc", v["both"], "R-SEX-001"),
        ("post_hoc", v["both"], "R-FRQ-001"),
        ("post_hoc", v["again"], "R-PRD-001"),
        ("in_process", v["open"], "R-SEX-001"),
    }
    assert all_findings(con) == expect  # the full screen's ids, amounts and states; no other
    assert tips.show(con, t)["findings"] == sorted(f[0] for f in expect)
    # one event says what was screened and linked; every link carries it
    [ev] = store.events(con, f"tip:{t}")
    assert ev["action"] == "tip_add" and ev["detail"]["findings"] == sorted(f[0] for f in expect)
    assert [r["stage"] for r in ev["detail"]["screened"]] == ["post_hoc", "in_process"]
    assert con.execute("SELECT DISTINCT event_id FROM tip_findings").fetchall() == [(ev["event_id"],)]
    # findings made by the tip's run have the hospital loop's state and history like any other
    assert con.execute("SELECT count(*) FROM finding_state").fetchall()[0][0] == len(expect)
    # the nightly run that follows screens everything (no batch was marked screened) and ends
    # where a full screen ends: nothing twice, the tip's findings untouched
    screen(con, lib)
    screen(con, lib, stage="in_process")
    assert all_findings(con) == all_findings(full)
    assert tips.show(con, t)["findings"] == sorted(f[0] for f in expect)  # no other visit's finding linked


def test_a_tips_screening_is_one_transaction_with_the_tip(tmp_path, monkeypatch):
    b, v = with_open_stay()
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    con = loaded(tmp_path, monkeypatch, b)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tips, "_insert_links", boom)  # fails after the screening stored its findings
    with pytest.raises(RuntimeError, match="disk full"):
        tips.add(con, channel="电话", received_on=DAY, content="x", by="孙", visits=[v["both"], v["open"]], library=lib)
    for table in ("tips", "findings", "finding_state", "finding_events", "screen_runs", "supervision_events"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] == 0, table


def test_a_visit_not_loaded_is_kept_and_linked_by_the_run_that_loads_it(tmp_path, monkeypatch):
    b, v = loop_batch()
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    con = loaded(tmp_path, monkeypatch, b)
    screen(con, lib)
    later = Batch()
    lv = later.visit(gend="1", begntime="2026-03-25 08:00:00", endtime="2026-03-25 10:00:00")
    later.line(lv, UTERUS, hilist_name="子宫造影", pric="90", bkkp_sn="LATE1")
    t = tips.add(
        con,
        channel="微信",
        received_on=DAY,
        content="还有一次",
        by="孙",
        institution="H001",
        visits=[v["both"], lv],
        library=lib,
    )
    s = tips.show(con, t)
    assert s["visit_status"] == {v["both"]: "loaded", lv: "not loaded yet"}
    assert store.events(con, f"tip:{t}")[0]["detail"]["visits_not_loaded"] == [lv]
    before = set(s["findings"])
    assert len(before) == 2
    load_batch(later.write(tmp_path / "later"), con)
    screen(con, lib)  # the nightly run screens what the batch touches
    s = tips.show(con, t)
    [new] = set(s["findings"]) - before
    assert con.execute("SELECT mdtrt_id, rule_id FROM findings WHERE finding_id = ?", [new]).fetchall() == [
        (lv, "R-SEX-001")
    ]
    ev = store.events(con, f"tip:{t}")[-1]
    assert (ev["action"], ev["actor"], ev["detail"]["findings"]) == (
        "tip_link",
        f"screen run {ev['detail']['run_id']}",
        [new],
    )
    assert s["visit_status"][lv] == "loaded"
    # a visit named later on an open tip is screened and linked the same way; a closed tip refuses
    other = Batch()
    ov = other.visit(gend="1", begntime="2026-03-26 08:00:00", endtime="2026-03-26 10:00:00")
    other.line(ov, UTERUS, hilist_name="子宫造影", pric="70", bkkp_sn="LATE2")
    load_batch(other.write(tmp_path / "other"), con)
    d = tips.add_visits(con, t, [ov], "稽核员 钱", lib)
    assert d["linked_findings"] == 1 and [r["stage"] for r in d["screened"]] == ["post_hoc"]
    with pytest.raises(tips.TipError, match=f"tip {t} names {ov} already"):
        tips.add_visits(con, t, [ov], "稽核员 钱", lib)
    tips.move(con, t, "investigate", "钱")
    tips.move(con, t, "reject", "科长", "查无实据")
    with pytest.raises(tips.TipError, match=f"tip {t} is 不属实; visits are added while it is 受理 or 核查中"):
        tips.add_visits(con, t, [v["sex"]], "钱", lib)


def test_a_loaded_visit_of_another_institution_is_still_refused_and_a_later_one_not_linked(tmp_path, monkeypatch):
    b, v = loop_batch()
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    con = loaded(tmp_path, monkeypatch, b)
    with pytest.raises(tips.TipError, match=f"--visit {v['other']} is a visit of H002, not of --institution H001"):
        tips.add(
            con,
            channel="电话",
            received_on=DAY,
            content="x",
            by="孙",
            institution="H001",
            visits=[v["other"]],
            library=lib,
        )
    assert con.execute("SELECT count(*) FROM findings").fetchall()[0][0] == 0  # nothing screened for a refused tip
    later = Batch()
    lv = later.visit(gend="1", fixmedins_code="H002")
    later.line(lv, UTERUS, bkkp_sn="H2L")
    t = tips.add(
        con, channel="电话", received_on=DAY, content="x", by="孙", institution="H001", visits=[lv], library=lib
    )
    load_batch(later.write(tmp_path / "later"), con)
    screen(con, lib)
    s = tips.show(con, t)
    assert s["findings"] == [] and s["visit_status"] == {lv: "a visit of H002, not of H001: not linked"}


def test_cli_tips_add_screens_show_lists_and_findings_tags_with_the_tip(tmp_path, monkeypatch):
    b, v = with_open_stay()
    rules = write_rules(tmp_path / "rules", RULES)
    con = loaded(tmp_path, monkeypatch, b)
    con.close()
    dbf = str(tmp_path / "a.duckdb")
    run = CliRunner().invoke
    r = run(
        app,
        [
            "tips",
            "add",
            "--channel",
            "电话",
            "--date",
            "2026-03-20",
            "--content",
            "举报",
            "--by",
            "孙",
            "--visit",
            v["both"],
            "--visit",
            "V-NOT-YET",
            "--rules",
            str(rules),
            "--db",
            dbf,
        ],
    )
    assert r.exit_code == 0, r.output
    assert "2 findings linked" in r.output and "screened post_hoc" in r.output and "V-NOT-YET" in r.output
    r = run(app, ["tips", "show", "1", "--db", dbf])
    assert r.exit_code == 0 and "R-SEX-001" in r.output and "R-FRQ-001" in r.output, r.output
    assert "visit V-NOT-YET: not loaded yet" in r.output and "linked by tip_add" in r.output
    # the tip's run screened V-both only; a nightly run finds the rest, untagged
    r = run(app, ["screen", dbf, "--rules", str(rules)])
    assert r.exit_code == 0, r.output
    r = run(app, ["findings", "--db", dbf, "--limit", "100"], env=WIDE)
    assert r.exit_code == 0, (r.output, r.exception)
    shown = blocks(r.output)
    tagged = [x for x in shown.values() if "举报 tips: tip 1" in x]
    assert len(tagged) == 2 and all(f" {v['both']} " in x for x in tagged), r.output
    assert len(shown) > len(tagged)
    r = run(
        app,
        [
            "tips",
            "add",
            "--channel",
            "电话",
            "--content",
            "x",
            "--by",
            "孙",
            "--visit",
            v["sex"],
            "--rules",
            str(tmp_path / "none"),
            "--db",
            dbf,
        ],
    )
    assert r.exit_code == 2 and "--rules" in r.output and "no such rule library" in r.output, r.output


def test_findings_marks_watched_entities_and_watched_keeps_only_theirs(tmp_path, monkeypatch):
    b, v = loop_batch()
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    con = loaded(tmp_path, monkeypatch, b)
    screen(con, lib)
    watch.add(con, "H001/DR02", dt.date(2026, 4, 1), "科长", "举报线索多次")
    watch.add(con, "H002", dt.date(2026, 4, 1), "科长", "专项检查")
    ids = {
        m: [r[0] for r in con.execute("SELECT finding_id FROM findings WHERE mdtrt_id = ?", [m]).fetchall()]
        for m in (v["both"], v["other"], v["sex"])
    }
    con.close()
    dbf = str(tmp_path / "a.duckdb")
    run = CliRunner().invoke
    r = run(app, ["findings", "--db", dbf, "--watched"], env=WIDE)
    assert r.exit_code == 0, r.output
    shown = blocks(r.output)
    assert set(shown) == {f[:12] for f in ids[v["both"]] + ids[v["other"]]}, r.output
    assert "重点监控 watched: H001/DR02" in r.output and "重点监控 watched: H002" in r.output
    r = run(app, ["findings", "--db", dbf], env=WIDE)
    assert "重点监控" not in blocks(r.output)[ids[v["sex"]][0][:12]]
    assert r.output.count("重点监控 watched:") == len(shown)
    r = run(app, ["findings", "--db", dbf, "--watched", "--export", str(tmp_path / "w.csv")])
    assert r.exit_code == 0, r.output
    import csv

    with open(tmp_path / "w.csv", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    assert {x["finding_id"] for x in rows} == set(ids[v["both"]] + ids[v["other"]])
    assert {x["watched"] for x in rows} == {"H001/DR02", "H002"}
    # when the entity leaves the watchlist the mark goes with it (computed when shown)
    con = db.connect(dbf)
    watch.remove(con, "H002", dt.date(2026, 4, 2), "科长", "核查完毕")
    watch.remove(con, "H001/DR02", dt.date(2026, 4, 2), "科长", "核查完毕")
    con.close()
    r = run(app, ["findings", "--db", dbf, "--watched"])
    assert r.exit_code == 0 and "No findings match watched" in r.output, r.output

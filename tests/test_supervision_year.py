"""A year end to end: twelve monthly batches screened night by night, finalized, assessed; the
injected offenders rank last (one vetoed for 虚构服务), enter the watchlist, and leave it after
a clean period."""

from __future__ import annotations

import datetime as dt

import pytest

from typer.testing import CliRunner

from kit import Batch, set_wall_clock, write_rules
from medaudit import db
from medaudit.cli import app
from medaudit.engine import screen
from medaudit.hospital_loop import deduct, lifecycle
from medaudit.incremental import Scope
from medaudit.library import load_library
from medaudit.loader import load_batch
from medaudit.supervision import assess as asm, scheme as schm, watch

UTERUS, BED = "002101030300000", "001109000010000"
RULES = f"""
rules:
  - {{id: R-SEX-001, version: 1, name: 限女性, type: restrict_gender, items: {{codes: ["{UTERUS}"]}}, params: {{gender: 2}}}}
  - {{id: R-FRQ-001, version: 1, name: 每日限一次, type: frequency_limit, items: {{codes: ["{BED}"]}}, params: {{max_per_day: 1}}}}
  - {{id: R-DTH-001, version: 1, name: 死亡后就医, type: after_death, nature: 虚构服务}}
"""
CLEAN = ("H_A", "H_B", "H_E")  # H_E is a level-3 hospital: ranked among its own level
OFFENDER, FAKER = "H_C", "H_D"


def month_batch(m: int) -> Batch:
    b = Batch()
    for inst in ("H_A", "H_B", OFFENDER, FAKER, "H_E"):
        for k in range(3):
            day = f"2026-{m:02d}-{10 + k:02d}"
            v = b.visit(
                fixmedins_code=inst,
                fixmedins_name=f"医院{inst}",
                hosp_lv="01" if inst == "H_E" else "05",
                med_type="21",
                begntime=f"{day} 08:00:00",
                endtime=f"{day} 18:00:00",
                gend="2",
                chfpdr_code=f"{inst}-D{k}",
            )
            b.line(v, BED, pric="50", bilg_dr_code=f"{inst}-D{k}")
        b.rows["setl_d"][-3:] = [dict(s, fund_pay_sumamt="10000") for s in b.rows["setl_d"][-3:]]
    # the offender: a male patient's 子宫造影 and a bed billed twice a day, every month, by its doctor D0
    day = f"2026-{m:02d}-20"
    v = b.visit(
        fixmedins_code=OFFENDER,
        hosp_lv="05",
        med_type="21",
        begntime=f"{day} 08:00:00",
        endtime=f"{day} 20:00:00",
        gend="1",
        chfpdr_code="H_C-D0",
    )
    b.line(v, UTERUS, pric="300", bilg_dr_code="H_C-D0")
    b.line(v, BED, pric="50", time=f"{day} 09:00:00", bilg_dr_code="H_C-D0")
    b.line(v, BED, pric="50", time=f"{day} 19:00:00", bilg_dr_code="H_C-D0")
    # the faker: in June, a visit of a person who died in May (虚构服务)
    if m == 6:
        v = b.visit(
            fixmedins_code=FAKER,
            hosp_lv="05",
            psn_no="P-DEAD",
            begntime="2026-06-03 08:00:00",
            endtime="2026-06-03 10:00:00",
            gend="2",
        )
        b.line(v, BED, pric="40")
        b.add("psn_death", psn_no="P-DEAD", die_date="2026-05-20")
    # a clean hospital's male patient: found, appealed and overturned in March (an appeal won)
    if m == 3:
        v = b.visit(
            fixmedins_code="H_A", hosp_lv="05", begntime="2026-03-25 08:00:00", endtime="2026-03-25 10:00:00", gend="1"
        )
        b.line(v, UTERUS, pric="200")
    return b


@pytest.mark.slow
def test_a_year_screened_finalized_assessed_and_watched(tmp_path, monkeypatch):
    con = db.connect(tmp_path / "year.duckdb")
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    for m in range(1, 13):
        # each month's batch arrives and is screened on the 1st of the next month ...
        set_wall_clock(monkeypatch, f"{2026 + (m == 12)}-{m % 12 + 1:02d}-01")
        load_batch(month_batch(m).write(tmp_path / f"b{m:02d}"), con)
        screen(con, lib, scope=Scope("new"))
        if m == 3:
            [fid] = [
                r[0] for r in con.execute("SELECT finding_id FROM findings WHERE fixmedins_code = 'H_A'").fetchall()
            ]
            lifecycle.transition(con, fid, "appeal", "医保办", "患者为女性，登记错误")
            lifecycle.transition(con, fid, "overturn", "李审", "属实")
        # ... and finalized at the end of that month, when the windows have closed
        when = dt.date(2026 + (m == 12), m % 12 + 1, 28)
        set_wall_clock(monkeypatch, when.isoformat())
        deduct.finalize(con, f"2026-{m:02d}", by="结算科")
    a = asm.assess(con, schm.load(), 2026, by="考核科")
    r = {x.code: x for x in a.results}
    assert set(r) == {*CLEAN, OFFENDER, FAKER}
    # level 2: the faker (vetoed) last, the offender just above it, the clean ones first
    lv2 = sorted((x for x in a.results if x.level == 2), key=lambda x: x.rank)
    assert [x.code for x in lv2][-2:] == [OFFENDER, FAKER] and r[FAKER].vetoed and not r[OFFENDER].vetoed
    dead = con.execute("SELECT finding_id FROM findings WHERE rule_id = 'R-DTH-001'").fetchall()[0][0]
    assert [(v[0], v[3]) for v in r[FAKER].vetoes] == [("V1", [dead])] and r[FAKER].grade == "不合格"
    assert r[OFFENDER].measures["violations"] == 24 and r[OFFENDER].measures["count.超支付范围"] == 12
    assert r[OFFENDER].score < min(r[c].score for c in CLEAN)
    assert (r["H_A"].measures["appeals_filed"], r["H_A"].measures["appeals_won"]) == (1, 1)
    assert (r["H_E"].level, r["H_E"].rank, r["H_E"].n_in_level) == (3, 1, 1)
    assert sorted(r[OFFENDER].monthly) == [f"2026-{m:02d}" for m in range(1, 13)]
    assert all(x["violations"] == 2 for x in r[OFFENDER].monthly.values())
    # the same scheme again on the same data: the same result
    assert asm.assess(con, schm.load(), 2026).result_hash == a.result_hash
    # the watchlist at the year's end: the offender and its doctor (48 points), the faker, the doctor and the
    # person of its visit (12 points each for 虚构服务)
    res = watch.update(con, dt.date(2027, 1, 28), "稽核科")
    assert {e for e, _ in res.entered} == {OFFENDER, f"{OFFENDER}/H_C-D0", FAKER, f"{FAKER}/DR01", "person:P-DEAD"}
    # 181 days after they entered with nothing new since: the faker and its doctor and person leave; the offender stays
    # while its points of the last 365 days still reach the threshold
    res = watch.update(con, dt.date(2027, 7, 28), "稽核科")
    assert {e for e, _ in res.left} == {FAKER, f"{FAKER}/DR01", "person:P-DEAD"}
    assert {w["entity"] for w in watch.listing(con)} == {OFFENDER, f"{OFFENDER}/H_C-D0"}
    con.close()
    r = CliRunner().invoke(app, ["credit", "show", OFFENDER, "--db", str(tmp_path / "year.duckdb")])
    assert r.exit_code == 0 and "24 entries" in r.output and "重点监控: yes" in r.output, r.output

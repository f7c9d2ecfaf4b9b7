"""Credit files (never twice for a finding) and the watchlist (entry and exit at their edges)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import duckdb
import pytest
from typer.testing import CliRunner

from medaudit import db
from medaudit.cli import app
from medaudit.hospital_loop import deduct, lifecycle
from medaudit.supervision import credit, store, watch
from test_lifecycle import clock, finding, loop_batch, loop_db

DAY = dt.date


def entries(con):
    return con.execute(
        "SELECT entity, entity_kind, nature, amount, points, finding_id, entry_date FROM credit_entries "
        "ORDER BY entity, finding_id"
    ).fetchall()


# ---------------------------------------------------------------- credit files


def test_finalize_records_each_confirmed_violation_once_per_entity(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex, frq = finding(con, v["both"], "R-SEX-001"), finding(con, v["both"], "R-FRQ-001")
    lifecycle.transition(con, frq["id"], "appeal", "王芳", "三个部位分别造影", clock=clock("2026-04-02"))
    res = deduct.finalize(con, "2026-03", by="结算科", clock=clock("2026-04-16"))
    first = entries(con)
    in_statements = con.execute("SELECT count(*) FROM deduction_items").fetchall()[0][0]
    # institution + doctor + person for each finding of a statement
    assert len(first) == 3 * in_statements and frq["id"] not in {e[5] for e in first}
    both = [e for e in first if e[5] == sex["id"]]
    assert [(e[0], e[1], e[2], e[3], e[4]) for e in both] == [
        ("H001", "institution", "超支付范围", D("180.00"), 2),
        ("H001/DR02", "doctor", "超支付范围", D("180.00"), 2),
        (f"person:{b._visit(v['both'])['psn_no']}", "person", "超支付范围", D("180.00"), 2),
    ]
    assert {e[6] for e in first} == {DAY(2026, 4, 16)}  # the day the statement was judged on
    ev = store.events(con)
    assert [(e["actor"], e["action"]) for e in ev] == [("结算科", "credit_record")]
    assert ev[0]["detail"] == {
        "entries": len(first),
        "findings": in_statements,
        "statements": [s.statement_id for s in res.statements],
    }
    # again, and catching up every statement: nothing new
    assert credit.update(con, "稽核科") == 0 and entries(con) == first
    assert deduct.finalize(con, "2026-03", clock=clock("2026-04-17")).statements == []
    # the appealed finding is upheld later: a supplementary statement adds its entries only
    lifecycle.transition(con, frq["id"], "uphold", "李审", "重复收费", clock=clock("2026-04-20"))
    res = deduct.finalize(con, "2026-03", clock=clock("2026-04-20"))
    assert [s.seq for s in res.statements] == [2]
    added = [e for e in entries(con) if e not in first]
    assert {e[5] for e in added} == {frq["id"]} and len(added) == 3 and {e[2] for e in added} == {"超支付标准"}
    assert credit.update(con, "稽核科") == 0
    # the table itself refuses a second entry of a finding for an entity
    with pytest.raises(duckdb.ConstraintException):
        con.execute("INSERT INTO credit_entries (entity, finding_id, points) VALUES ('H001', ?, 1)", [sex["id"]])


def test_points_table_changes_are_logged_and_apply_to_new_entries_only(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    with pytest.raises(store.SupervisionError, match="--reason is required"):
        credit.set_points(con, "超支付范围", 5, "科长", "")
    credit.set_points(con, "超支付范围", 5, "科长", "2026 年新规")
    deduct.finalize(con, "2026-03", "H002", clock=clock("2026-04-16"))
    credit.set_points(con, "超支付范围", 7, "科长", "再调整")
    deduct.finalize(con, "2026-03", "H001", clock=clock("2026-04-16"))
    pts = dict(
        con.execute(
            "SELECT fixmedins_code, min(points) FROM credit_entries WHERE nature = '超支付范围' GROUP BY 1"
        ).fetchall()
    )
    assert pts == {"H002": 5, "H001": 7}
    assert [(e["action"], e["subject"], e["detail"]) for e in store.events(con) if e["action"] == "credit_points"] == [
        ("credit_points", "超支付范围", {"from": 2, "to": 5}),
        ("credit_points", "超支付范围", {"from": 5, "to": 7}),
    ]


def test_credit_show_prints_the_file_and_refuses_a_malformed_entity(tmp_path, monkeypatch):
    con = loop_db(tmp_path, monkeypatch)
    deduct.finalize(con, "2026-03", by="结算科", clock=clock("2026-04-16"))
    con.close()
    path = str(tmp_path / "loop.duckdb")
    r = CliRunner().invoke(app, ["credit", "show", "H001/DR02", "--db", path])
    assert r.exit_code == 0, r.output
    assert "2 entries" in r.output and "重点监控: no" in r.output and "结算科" in r.output
    r = CliRunner().invoke(app, ["credit", "show", "H001/DR02/x", "--db", path])
    assert r.exit_code == 2 and "write H001 (institution), H001/D01 (doctor) or person:P1" in r.output


# ---------------------------------------------------------------- the watchlist


def empty_db(tmp_path, monkeypatch):
    monkeypatch.setattr(lifecycle, "wall_now", lifecycle.fixed_clock("2026-12-31"))
    return db.connect(tmp_path / "w.duckdb")


def entry(con, entity, day, points, kind="institution", finding=None):
    con.execute(
        "INSERT INTO credit_entries (entity, entity_kind, fixmedins_code, entry_date, nature, amount, points, "
        "finding_id) VALUES (?, ?, ?, ?, '重复收费', 1, ?, ?)",
        [entity, kind, entity.split("/")[0], day, points, finding or f"F-{entity}-{day}-{points}"],
    )


def outlier(con, inst, dr, period, n=[0]):
    n[0] += 1
    con.execute(
        "INSERT INTO findings (finding_id, rule_id, rule_type, stage, status, fixmedins_code, dr_code, period) "
        "VALUES (?, 'R-OUT-001', 'peer_outlier', 'post_hoc', 'pending_review', ?, ?, ?)",
        [f"OUT{n[0]}", inst, dr, period],
    )


def watched(con):
    return {r["entity"]: (r["how"], r["entered_on"], r["left_on"]) for r in watch.listing(con, include_left=True)}


def test_points_threshold_and_window_at_their_edges(tmp_path, monkeypatch):
    con = empty_db(tmp_path, monkeypatch)
    on = DAY(2026, 6, 30)
    entry(con, "HA", on, 12)  # exactly the threshold (12): enters
    entry(con, "HB", on, 11)  # one below: does not
    entry(con, "HC", on - dt.timedelta(days=365), 12)  # the window's first day is excluded ...
    entry(con, "HD", on - dt.timedelta(days=364), 12)  # ... the next one counts
    entry(con, "HE", on + dt.timedelta(days=1), 12)  # after the day: not yet
    r = watch.update(con, on, "稽核科")
    assert [e for e, _ in r.entered] == ["HA", "HD"]
    assert watched(con) == {"HA": ("points", on, None), "HD": ("points", on, None)}
    assert "信用积分 12 ≥ 12" in r.entered[0][1]
    # nothing changes when run again the same day
    r = watch.update(con, on, "稽核科")
    assert r.entered == r.left == []


def test_outliers_in_n_of_the_last_m_months(tmp_path, monkeypatch):
    con = empty_db(tmp_path, monkeypatch)
    for p in ("2026-01", "2026-03", "2026-06"):  # doctor D1: 3 of Jan..Jun
        outlier(con, "H1", "D1", p)
    for p in ("2025-12", "2026-03", "2026-06"):  # doctor D2: Dec is the 7th month back
        outlier(con, "H1", "D2", p)
    for p in ("2026-04", "2026-05", "2026-07"):  # the institution H2: July is after the day
        outlier(con, "H2", None, p)
    r = watch.update(con, DAY(2026, 6, 15), "稽核科")
    assert [e for e, _ in r.entered] == ["H1/D1"]
    assert "3 个月（2026-01、2026-03、2026-06）" in r.entered[0][1]
    r = watch.update(con, DAY(2026, 7, 1), "稽核科")  # now Feb..Jul: H2 has 3 months; D1 still has 2 of them
    assert [e for e, _ in r.entered] == ["H2"] and r.left == []


def test_an_automatic_entry_leaves_after_a_clean_period_a_hand_entry_never(tmp_path, monkeypatch):
    con = empty_db(tmp_path, monkeypatch)
    watch.set_settings(con, {"clean_days": 90, "points_window_days": 30}, "科长", "试行")
    entry(con, "HA", DAY(2026, 3, 1), 12)
    con.execute("INSERT INTO mdtrt_d (mdtrt_id, fixmedins_code, psn_no) VALUES ('V1', 'HM', 'P1')")
    assert watch.update(con, DAY(2026, 3, 10), "稽核科").entered[0][0] == "HA"
    watch.add(con, "HM", DAY(2026, 3, 10), "科长", "群众举报多次")
    # a new violation on Apr 1 (below the threshold alone) restarts the clean period
    entry(con, "HA", DAY(2026, 4, 1), 1)
    assert watch.update(con, DAY(2026, 6, 29), "稽核科").left == []  # 89 days after Apr 1
    r = watch.update(con, DAY(2026, 6, 30), "稽核科")  # 90 days: leaves
    assert [e for e, _ in r.left] == ["HA"] and "自 2026-04-01 起 90 天" in r.left[0][1]
    assert watched(con) == {
        "HA": ("points", DAY(2026, 3, 10), DAY(2026, 6, 30)),
        "HM": ("manual", DAY(2026, 3, 10), None),
    }
    assert watch.update(con, DAY(2026, 12, 31), "稽核科").left == []  # the hand entry stays
    # a new threshold crossing enters it again: a new row, the old one kept
    entry(con, "HA", DAY(2026, 12, 30), 12)
    watch.update(con, DAY(2026, 12, 31), "稽核科")
    assert [(r["entered_on"], r["left_on"]) for r in watch.listing(con, True) if r["entity"] == "HA"] == [
        (DAY(2026, 3, 10), DAY(2026, 6, 30)),
        (DAY(2026, 12, 31), None),
    ]
    acts = [(e["action"], e["subject"]) for e in store.events(con)]
    assert acts == [
        ("watch_settings", "watch"),
        ("watch_enter", "HA"),
        ("watch_add", "HM"),
        ("watch_leave", "HA"),
        ("watch_enter", "HA"),
    ]


def test_hand_entries_are_refused_without_a_reason_twice_or_for_nobody(tmp_path, monkeypatch):
    con = empty_db(tmp_path, monkeypatch)
    con.execute("INSERT INTO mdtrt_d (mdtrt_id, fixmedins_code, psn_no, chfpdr_code) VALUES ('V1', 'H1', 'P1', 'D1')")
    on = DAY(2026, 5, 1)
    with pytest.raises(store.SupervisionError, match="--reason is required"):
        watch.add(con, "H1", on, "科长", " ")
    with pytest.raises(store.SupervisionError, match="H9: no such institution in the loaded data"):
        watch.add(con, "H9", on, "科长", "举报")
    with pytest.raises(store.SupervisionError, match="H1/D2: no such doctor"):
        watch.add(con, "H1/D2", on, "科长", "举报")
    watch.add(con, "H1/D1", on, "科长", "举报")
    watch.add(con, "person:P1", on, "科长", "冒名就医线索")
    with pytest.raises(store.SupervisionError, match="H1/D1 is already watched"):
        watch.add(con, "H1/D1", on, "科长", "举报")
    with pytest.raises(store.SupervisionError, match="H1 is not on the watchlist"):
        watch.remove(con, "H1", on, "科长", "核查完毕")
    watch.remove(con, "H1/D1", on, "科长", "核查完毕")
    assert watched(con) == {"H1/D1": ("manual", on, on), "person:P1": ("manual", on, None)}
    with pytest.raises(store.SupervisionError, match="no entity could ever enter"):
        watch.set_settings(con, {"outlier_months": 7}, "科长", "x")


def test_watched_findings_come_first_and_review_list_watched_shows_only_them(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    watch.add(con, "H001/DR02", DAY(2026, 4, 1), "科长", "重点医生")
    q = lifecycle.queue(con, ["pending_appeal"], watched_only=True)
    assert {r["mdtrt_id"] for r in q} == {v["both"]} and {r["watched"] for r in q} == {"H001/DR02"}
    q = lifecycle.queue(con, ["pending_appeal"], watched_first=True)
    assert q[0]["mdtrt_id"] == v["both"] and q[-1]["watched"] is None
    con.close()
    path = str(tmp_path / "loop.duckdb")
    r = CliRunner().invoke(app, ["review", "list", "--status", "pending_appeal", "--watched", "--db", path])
    assert r.exit_code == 0 and "重点监控 watched: H001/DR02" in r.output and v["both"] in r.output
    assert v["sex"] not in r.output
    r = CliRunner().invoke(app, ["watch", "list", "--db", path])
    assert r.exit_code == 0 and "H001/DR02" in r.output and "重点医生" in r.output
    # the report shows the status
    r = CliRunner().invoke(
        app,
        ["report", "--institution", "H001", "--period", "2026-03", "--out-dir", str(tmp_path / "rep"), "--db", path],
    )
    assert r.exit_code == 0, r.output
    page = (tmp_path / "rep" / "扣款依据报表_H001_2026-03.html").read_text(encoding="utf-8")
    assert "医生 DR02自 2026-04-01 起重点监控（重点医生）" in page

"""Tips and complaints: the lifecycle and its refusals, the reward rule at its edges, the masked contact."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.supervision import assess as asm, scheme as schm, store, tips
from test_lifecycle import loop_batch, loop_db

DAY = dt.date(2026, 3, 20)


def new_tip(con, v, **kw):
    args = (
        dict(
            channel="电话",
            received_on=DAY,
            content="医院给男性患者开子宫造影",
            by="接线员 孙",
            institution="H001",
            doctor="DR02",
            visits=[v["both"]],
            contact="13812345678",
        )
        | kw
    )
    return tips.add(con, **args)


def test_the_lifecycle_refuses_every_move_its_table_has_not(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    t = new_tip(con, v)
    assert tips.show(con, t)["status"] == "受理"
    with pytest.raises(
        tips.TipError, match="tip 1 is 受理; it cannot 认定属实 \\(found\\) \\(from 受理 only: 开始核查"
    ):
        tips.move(con, t, "found", "科长", "属实", recovered="100", nature="虚构服务")
    with pytest.raises(tips.TipError, match="is 受理; it cannot 发放奖励"):
        tips.move(con, t, "reward", "科长")
    tips.move(con, t, "investigate", "稽核员")
    with pytest.raises(tips.TipError, match="is 核查中; it cannot 开始核查"):
        tips.move(con, t, "investigate", "稽核员")
    with pytest.raises(tips.TipError, match="--reason is required"):
        tips.move(con, t, "reject", "科长", " ")
    with pytest.raises(tips.TipError, match="--nature must be one of"):
        tips.move(con, t, "found", "科长", "查实", recovered="100", nature="乱收费")
    with pytest.raises(tips.TipError, match="--recovered"):
        tips.move(con, t, "found", "科长", "查实", recovered="1e3", nature="虚构服务")
    assert tips.show(con, t)["status"] == "核查中"  # a refused move changes nothing
    tips.move(con, t, "reject", "科长", "查无实据")
    for action in ("investigate", "found", "reject", "reward"):
        with pytest.raises(
            tips.TipError, match="is 不属实; it cannot .* \\(from 不属实 only: nothing: it is closed\\)"
        ):
            tips.move(con, t, action, "科长", "x", recovered="1", nature="虚构服务")
    with pytest.raises(tips.TipError, match="tip 99: no such tip"):
        tips.move(con, 99, "investigate", "x")
    assert [e["action"] for e in store.events(con, f"tip:{t}")] == ["tip_add", "tip_investigate", "tip_reject"]


def test_a_tip_found_true_credits_once_rewards_once_and_counts_in_the_assessment(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    t = new_tip(con, v, person=b._visit(v["both"])["psn_no"])
    linked = tips.show(con, t)["findings"]
    assert len(linked) == 2  # the gender and the frequency finding of the named visit
    tips.move(con, t, "investigate", "稽核员")
    tips.move(con, t, "found", "科长", "现场核查属实", recovered="5000", nature="虚构服务")
    s = tips.show(con, t)
    assert (s["status"], s["recovered"], s["reward"]) == ("属实", D("5000.00"), D("250.00"))  # 5% of 5,000
    ents = con.execute("SELECT entity, points, source, finding_id FROM credit_entries ORDER BY 1").fetchall()
    assert ents == [
        ("H001", 12, "tip", "tip:1"),
        ("H001/DR02", 12, "tip", "tip:1"),
        (f"person:{b._visit(v['both'])['psn_no']}", 12, "tip", "tip:1"),
    ]
    tips.move(con, t, "reward", "财务科")
    with pytest.raises(tips.TipError, match="is 奖励已发放; it cannot 发放奖励"):
        tips.move(con, t, "reward", "财务科")
    assert con.execute("SELECT count(*) FROM credit_entries").fetchall()[0][0] == 3
    a = asm.assess(con, schm.load(), 2026, 3, save=False)
    assert {r.code: r.measures["tips_founded"] for r in a.results} == {"H001": 1, "H002": 0}
    # findings show names the tip and the watch status
    from medaudit.supervision import watch

    watch.add(con, "H001/DR02", dt.date(2026, 4, 1), "科长", "举报属实")
    con.close()
    r = CliRunner().invoke(app, ["findings", "show", linked[0], "--db", str(tmp_path / "loop.duckdb")])
    assert r.exit_code == 0 and "tip 1" in r.output and "watched: H001/DR02" in r.output, r.output


@pytest.mark.parametrize(
    "recovered, reward",
    [
        ("0", "200.00"),
        ("3999.99", "200.00"),
        ("4000", "200.00"),
        ("4000.10", "200.01"),
        ("4000000", "200000.00"),
        ("9999999", "200000.00"),
    ],
)
def test_the_reward_rule_at_its_floor_and_cap(recovered, reward):
    assert tips.reward_for(D(recovered), tips.DEFAULTS) == D(reward)


def test_reward_settings_are_checked_and_logged(tmp_path, monkeypatch):
    con = loop_db(tmp_path, monkeypatch)
    with pytest.raises(tips.TipError, match="--reward-share must be between 0 and 1"):
        tips.set_settings(con, {"reward_share": "1.5"}, "科长", "x")
    with pytest.raises(tips.TipError, match="--reward-floor 500.00 is above --reward-cap 300.00"):
        tips.set_settings(con, {"reward_floor": "500", "reward_cap": "300"}, "科长", "x")
    with pytest.raises(tips.TipError, match="--reason is required"):
        tips.set_settings(con, {"reward_share": "0.1"}, "科长", "")
    s = tips.set_settings(con, {"reward_share": "0.1", "reward_cap": "300"}, "科长", "地方办法")
    assert tips.reward_for(D("2500"), s) == D("250.00") and tips.reward_for(D("5000"), s) == D("300.00")
    assert [e["action"] for e in store.events(con)] == ["tip_settings"]


def test_a_tip_is_refused_for_what_the_data_does_not_know_and_keeps_the_contact_masked(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    for kw, msg in (
        (dict(channel="短信"), "--channel must be one of 电话, 微信, 信箱, 网站"),
        (dict(institution="H404"), "--institution H404: no such institution"),
        (dict(doctor="DR99"), "--doctor DR99: no such doctor of H001"),
        (dict(institution=None), "--doctor needs --institution"),
        (dict(visits=[v["other"]]), f"--visit {v['other']} is a visit of H002, not of --institution H001"),
        (dict(content=" "), "--content is required"),
        (dict(received_on=dt.date(2030, 1, 1)), "later than today"),
    ):
        with pytest.raises(tips.TipError, match=msg):
            new_tip(con, v, **kw)
    assert con.execute("SELECT count(*) FROM tips").fetchall()[0][0] == 0
    new_tip(con, v)
    new_tip(con, v, channel="信箱", contact="wangfang@qq.com")
    assert con.execute("SELECT contact_masked FROM tips ORDER BY 1").fetchall() == [("138****5678",), ("w***@qq.com",)]
    stored = repr(con.execute("SELECT * FROM tips").fetchall()) + repr(
        con.execute("SELECT * FROM supervision_events").fetchall()
    )
    assert "13812345678" not in stored and "wangfang" not in stored
    con.close()
    r = CliRunner().invoke(app, ["tips", "list", "--db", str(tmp_path / "loop.duckdb")])
    assert r.exit_code == 0 and "受理" in r.output and "13812345678" not in r.output

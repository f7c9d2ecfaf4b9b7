"""Finding lifecycle: states, refused moves, working-day windows, the audit log, re-screening.

The helpers at the top (a small two-hospital batch and its rules) are shared by the other
hospital-loop tests.
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import shutil
import tempfile
from pathlib import Path
from decimal import Decimal as D

import pytest

from kit import Batch, set_wall_clock, write_rules
from medaudit import db, money
from medaudit.hospital_loop import lifecycle
from medaudit.engine import screen
from medaudit.library import load_library
from medaudit.loader import load_batch

UTERUS = "002101030300000"  # 子宫造影, female only
BED = "001109000010000"  # 床位费, once a day
CHILD_DRUG = "XR05CAZ123A001010100000"  # a children's drug (suspect when billed to an adult)

RULES = f"""
rules:
  - id: R-SEX-001
    version: 1
    name: 限女性使用的检查项目
    type: restrict_gender
    basis: 国家医保局第一批规则库（限定性别对象）
    items: {{codes: ["{UTERUS}"]}}
    params: {{gender: 2}}
  - id: R-FRQ-001
    version: 1
    name: 每日限收一次
    type: frequency_limit
    basis: 国家医保局第八批规则库（限定频次）
    items: {{codes: ["{UTERUS}", "{BED}"]}}
    params: {{max_per_day: 1}}
  - id: R-AGE-001
    version: 1
    name: 限儿童使用的药品
    type: restrict_age
    severity: suspect
    basis: 国家医保局第一批规则库（限定年龄对象）
    items: {{codes: ["{CHILD_DRUG}"]}}
    params: {{group: 儿童}}
"""


def loop_batch() -> tuple[Batch, dict[str, str]]:
    """Two hospitals, March 2026. Returns the batch and named visit ids.

    The ids are fixed (LV1..LV5, persons LP1..LP5; they sort before the kit's generated V<n> as
    they were made before them), so the same batch has the same text and :func:`loop_db` loads
    and screens it once per test process."""
    b = Batch()
    v = {}
    v["sex"] = b.visit(gend="1", psn_name="张三", certno="110101198001011234", mdtrt_id="LV1", psn_no="LP1")
    b.line(v["sex"], UTERUS, hilist_name="子宫造影", pric="180", bkkp_sn="SEX1")
    # one line two rules claim: gender claims 180.00 (whole line), frequency 120.00 (2 excess units)
    v["both"] = b.visit(
        gend="1",
        psn_name="李四",
        certno="110101198202023456",
        adm_dept_codg="D02",
        chfpdr_code="DR02",
        mdtrt_id="LV2",
        psn_no="LP2",
    )
    b.line(
        v["both"],
        UTERUS,
        hilist_name="子宫造影",
        cnt="3",
        pric="60",
        bkkp_sn="BOTH1",
        bilg_dept_codg="D02",
        bilg_dr_code="DR02",
    )
    v["bed"] = b.visit(
        med_type="21",
        begntime="2026-03-05 08:00:00",
        endtime="2026-03-09 10:00:00",
        psn_name="王小明",
        certno="11010119900303567X",
        adm_dept_codg="D03",
        chfpdr_code="DR03",
        mdtrt_id="LV3",
        psn_no="LP3",
    )
    b.line(
        v["bed"],
        BED,
        hilist_name="普通病房床位费",
        pric="30",
        time="2026-03-06 08:00:00",
        bkkp_sn="BED1",
        bilg_dept_codg="D03",
        bilg_dr_code="DR03",
    )
    b.line(
        v["bed"],
        BED,
        hilist_name="普通病房床位费",
        pric="30",
        time="2026-03-06 18:00:00",
        bkkp_sn="BED2",
        bilg_dept_codg="D03",
        bilg_dr_code="DR03",
    )
    v["age"] = b.visit(gend="2", psn_name="赵敏", certno="110101198505058888", mdtrt_id="LV4", psn_no="LP4")
    b.line(v["age"], CHILD_DRUG, hilist_name="小儿氨酚黄那敏颗粒", cnt="2", pric="12.35", bkkp_sn="AGE1")
    v["other"] = b.visit(
        gend="1",
        fixmedins_code="H002",
        fixmedins_name="另一家医院",
        psn_name="钱五",
        certno="110101197001019999",
        mdtrt_id="LV5",
        psn_no="LP5",
    )
    b.line(v["other"], UTERUS, hilist_name="子宫造影", pric="200", bkkp_sn="OTH1")
    return b, v


#: screened loop databases of this test process by what made them (:func:`loop_db`)
_LOOP_DBS: dict[str, Path] = {}


def loop_db(tmp_path, monkeypatch, batch=None, rules=RULES, today="2026-04-01", settings=None, holidays=None):
    """A database with the batch loaded and screened on ``today`` (the clock the engine reads).

    Made once per test process for each batch text, rules, day, settings and holidays, then
    copied (a load and screen cost about a second of CPU, a copy a few ms); the batch, rules
    and holiday files are written to ``tmp_path`` either way. ``load_log.source`` names the
    folder of the first load."""
    if batch is None:
        batch = loop_batch()[0]
    set_wall_clock(monkeypatch, today)
    tmp_path.mkdir(parents=True, exist_ok=True)
    folder = batch.write(tmp_path / "batch")
    write_rules(tmp_path / "rules", rules)
    if holidays:
        (tmp_path / "holidays.txt").write_text(holidays, encoding="utf-8")
    digest = hashlib.sha256(repr((rules, today, sorted((settings or {}).items()), holidays)).encode())
    for f in sorted(folder.iterdir()):
        digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    key = digest.hexdigest()
    if key not in _LOOP_DBS:
        made = tmp_path / "loop.made.duckdb"
        con = db.connect(made)
        try:
            for k, val in (settings or {}).items():
                lifecycle.set_setting(con, k, val)
            if holidays:
                lifecycle.load_holidays(con, tmp_path / "holidays.txt")
            load_batch(folder, con)
            rescreen(tmp_path, con, rules)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        cached = Path(tempfile.mkdtemp(prefix="medaudit-tests-loop-")) / "loop.duckdb"
        atexit.register(shutil.rmtree, cached.parent, True)
        shutil.move(made, cached)
        _LOOP_DBS[key] = cached
    shutil.copyfile(_LOOP_DBS[key], tmp_path / "loop.duckdb")
    return db.connect(tmp_path / "loop.duckdb")


def rescreen(tmp_path, con, rules=RULES, name="rules"):
    return screen(con, load_library(write_rules(tmp_path / name, rules)))


def finding(con, mdtrt_id: str, rule_id: str) -> dict:
    rows = con.execute(
        """SELECT f.finding_id, f.status, f.deduction_amt, f.claimed_amt, f.rule_version, s.deadline,
                  s.appeal_round, s.confirmed, s.statement_id
           FROM findings f JOIN finding_state s USING (finding_id)
           WHERE f.mdtrt_id = ? AND f.rule_id = ? AND f.status <> 'superseded'""",
        [mdtrt_id, rule_id],
    ).fetchall()
    assert len(rows) == 1, f"{mdtrt_id} {rule_id}: {rows}"
    keys = ("id", "status", "deduction", "claimed", "version", "deadline", "round", "confirmed", "statement")
    return dict(zip(keys, rows[0]))


def events(con, fid: str) -> list[tuple]:
    return con.execute(
        "SELECT actor, action, from_status, to_status FROM finding_events WHERE finding_id = ? ORDER BY event_id", [fid]
    ).fetchall()


def clock(day: str):
    return lifecycle.fixed_clock(day)


# ---------------------------------------------------------------------------- calendar


def test_working_days_skip_weekends_holidays_and_count_makeup_days(tmp_path):
    cal = lifecycle.Calendar(set(), set())
    # Wed 2026-04-01 + 10 working days: Apr 2, 3, 6..10, 13, 14, 15
    assert cal.add_working_days(dt.date(2026, 4, 1), 10) == dt.date(2026, 4, 15)
    assert cal.add_working_days(dt.date(2026, 4, 3), 1) == dt.date(2026, 4, 6)  # Friday -> Monday
    f = tmp_path / "h.txt"
    f.write_text("# 2026\n2026-04-06 清明节\n2026-04-11 调休上班\n\n2026-05-01 劳动节\n", encoding="utf-8")
    rows = lifecycle.read_holiday_file(f)
    assert rows == [
        (dt.date(2026, 4, 6), False, "清明节"),
        (dt.date(2026, 4, 11), True, "调休上班"),
        (dt.date(2026, 5, 1), False, "劳动节"),
    ]
    cal = lifecycle.Calendar({r[0] for r in rows if not r[1]}, {r[0] for r in rows if r[1]})
    # Apr 6 is skipped, Saturday Apr 11 counts: 2, 3, 7, 8, 9, 10, 11, 13, 14, 15
    assert cal.add_working_days(dt.date(2026, 4, 1), 10) == dt.date(2026, 4, 15)
    assert cal.add_working_days(dt.date(2026, 4, 1), 4) == dt.date(2026, 4, 8)


def test_bad_holiday_file_names_the_line(tmp_path):
    f = tmp_path / "h.txt"
    f.write_text("2026-04-06\n2026-13-01 bad\n", encoding="utf-8")
    with pytest.raises(lifecycle.LifecycleError, match=r"line 2: '2026-13-01' is not a date"):
        lifecycle.read_holiday_file(f)


def test_screening_opens_windows_with_the_settings_and_holidays(tmp_path, monkeypatch):
    con = loop_db(tmp_path, monkeypatch, settings={"window_days": 5}, holidays="2026-04-06 清明节\n")
    sex = con.execute(
        "SELECT finding_id FROM findings WHERE rule_id = 'R-SEX-001' AND fixmedins_code = 'H001'"
        " ORDER BY mdtrt_id LIMIT 1"
    ).fetchall()[0][0]
    st = con.execute(
        "SELECT window_opened, deadline, appeal_round FROM finding_state WHERE finding_id = ?", [sex]
    ).fetchall()[0]
    # opened Wed Apr 1; 5 working days skipping Mon Apr 6: Apr 2, 3, 7, 8, 9
    assert st == (dt.date(2026, 4, 1), dt.date(2026, 4, 9), 0)
    # suspects get no window until a reviewer confirms them
    age = con.execute(
        "SELECT s.deadline, f.status FROM findings f JOIN finding_state s USING (finding_id)"
        " WHERE f.rule_id = 'R-AGE-001'"
    ).fetchall()
    assert age == [(None, "pending_review")]
    assert events(con, sex) == [("screen run 1", "create", None, "pending_appeal")]


# ---------------------------------------------------------------------------- moves


def test_appeal_review_and_confirm_paths_with_log_and_money(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex = finding(con, v["sex"], "R-SEX-001")
    assert (sex["status"], sex["deduction"], sex["deadline"]) == ("pending_appeal", D("180.00"), dt.date(2026, 4, 15))
    proof = tmp_path / "病历首页.pdf"
    proof.write_bytes(b"%PDF-1.4 record")
    files = lifecycle.attachment_records([proof])
    assert (
        lifecycle.transition(
            con, sex["id"], "appeal", "医院医保办 王芳", "患者实为女性，登记错误", files, clock("2026-04-15")
        )
        == "appealed"
    )  # the deadline day is in time
    assert (
        lifecycle.transition(con, sex["id"], "overturn", "审核员 李", "核实性别登记错误", clock=clock("2026-04-20"))
        == "overturned"
    )
    money.settle_deductions(con)
    assert finding(con, v["sex"], "R-SEX-001")["deduction"] == D("0.00")
    log = lifecycle.history(con, sex["id"])
    assert [(e["actor"], e["action"], e["from_status"], e["to_status"]) for e in log] == [
        ("screen run 1", "create", None, "pending_appeal"),
        ("医院医保办 王芳", "appeal", "pending_appeal", "appealed"),
        ("审核员 李", "overturn", "appealed", "overturned"),
    ]
    assert log[1]["reason"] == "患者实为女性，登记错误"
    assert log[1]["attachments"][0]["name"] == "病历首页.pdf"
    assert log[1]["attachments"][0]["sha256"] == hashlib.sha256(b"%PDF-1.4 record").hexdigest()
    # the log's time is the computer's clock (here the test's 2026-04-01); the simulated day is kept beside it
    assert (log[1]["event_at"], log[1]["as_of"]) == (dt.datetime(2026, 4, 1, 9, 0), dt.date(2026, 4, 15))
    assert (log[0]["event_at"], log[0]["as_of"]) == (dt.datetime(2026, 4, 1, 9, 0), None)

    # a suspect claims nothing until confirmed; confirmed, it claims its amount and opens a window
    age = finding(con, v["age"], "R-AGE-001")
    assert (age["status"], age["deduction"], age["claimed"]) == ("pending_review", D("0.00"), D("24.70"))
    assert lifecycle.transition(con, age["id"], "confirm", "审核员 李", clock=clock("2026-04-02")) == "pending_appeal"
    money.settle_deductions(con)
    age = finding(con, v["age"], "R-AGE-001")
    assert (age["status"], age["deduction"], age["confirmed"], age["deadline"]) == (
        "pending_appeal",
        D("24.70"),
        True,
        dt.date(2026, 4, 16),
    )


def test_expiry_after_the_deadline_day(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    assert lifecycle.expire_due(con, clock("2026-04-15")) == 0
    # every violation of both hospitals: sex, both (two rules), bed, other
    assert lifecycle.expire_due(con, clock("2026-04-16")) == 5
    sex = finding(con, v["sex"], "R-SEX-001")
    assert sex["status"] == "expired"
    assert events(con, sex["id"])[-1] == ("system", "expire", "pending_appeal", "expired")
    assert finding(con, v["age"], "R-AGE-001")["status"] == "pending_review"  # suspects do not expire
    with pytest.raises(
        lifecycle.LifecycleError, match=r"finding %s.*appeal window closed on 2026-04-15" % sex["id"][:12]
    ):
        lifecycle.transition(con, sex["id"], "appeal", "王芳", "迟到的申诉", clock=clock("2026-04-16"))
    assert lifecycle.expire_due(con, clock("2026-04-17")) == 0  # nothing twice


def test_appeal_after_the_deadline_is_refused_even_before_expiry_ran(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex = finding(con, v["sex"], "R-SEX-001")
    with pytest.raises(lifecycle.LifecycleError) as e:
        lifecycle.transition(con, sex["id"], "appeal", "王芳", "理由", clock=clock("2026-04-16"))
    assert (
        sex["id"][:12] in str(e.value) and "pending_appeal" in str(e.value) and "closed on 2026-04-15" in str(e.value)
    )
    assert finding(con, v["sex"], "R-SEX-001")["status"] == "pending_appeal"
    assert len(events(con, sex["id"])) == 1


STATES = [
    "pending_appeal",
    "appealed",
    "upheld",
    "overturned",
    "expired",
    "pending_review",
    "dismissed",
    "superseded",
    "warning",
]
ACTIONS = ["appeal", "uphold", "overturn", "confirm", "dismiss"]
ILLEGAL = [(s, a) for s in STATES for a in ACTIONS if (s, a) not in lifecycle.TRANSITIONS]


@pytest.fixture(scope="module")
def one_finding(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("illegal")
    b, v = loop_batch()
    mp = pytest.MonkeyPatch()
    con = loop_db(tmp, mp, b)
    mp.undo()
    return con, finding(con, v["sex"], "R-SEX-001")["id"]


@pytest.mark.parametrize("state,action", ILLEGAL)
def test_illegal_transition_is_refused_naming_finding_and_state(one_finding, state, action):
    con, fid = one_finding
    con.execute("UPDATE findings SET status = ? WHERE finding_id = ?", [state, fid])
    n = len(events(con, fid))
    with pytest.raises(lifecycle.LifecycleError) as e:
        lifecycle.transition(con, fid, action, "someone", "a reason", clock=clock("2026-04-02"))
    msg = str(e.value)
    assert fid[:12] in msg and state in msg and action in msg, msg
    assert con.execute("SELECT status FROM findings WHERE finding_id = ?", [fid]).fetchall()[0][0] == state
    assert len(events(con, fid)) == n


def test_second_appeal_only_when_enabled_once_and_in_its_window(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    lifecycle.transition(con, sex, "appeal", "王芳", "理由一", clock=clock("2026-04-02"))
    lifecycle.transition(con, sex, "uphold", "李审", "证据不足", clock=clock("2026-04-03"))
    with pytest.raises(lifecycle.LifecycleError, match="second appeal .复议. is not enabled"):
        lifecycle.transition(con, sex, "appeal", "王芳", "复议", clock=clock("2026-04-06"))

    con2 = loop_db(
        tmp_path / "b", monkeypatch, loop_batch()[0], settings={"second_appeal": True, "second_window_days": 3}
    )
    fid = con2.execute(
        "SELECT finding_id FROM findings WHERE rule_id = 'R-SEX-001' AND fixmedins_code = 'H001'"
        " ORDER BY mdtrt_id LIMIT 1"
    ).fetchall()[0][0]
    lifecycle.transition(con2, fid, "appeal", "王芳", "理由一", clock=clock("2026-04-02"))
    lifecycle.transition(con2, fid, "uphold", "李审", "证据不足", clock=clock("2026-04-03"))  # Fri: window to Wed Apr 8
    st = con2.execute("SELECT deadline, appeal_round FROM finding_state WHERE finding_id = ?", [fid]).fetchall()[0]
    assert st == (dt.date(2026, 4, 8), 1)
    with pytest.raises(lifecycle.LifecycleError, match="closed on 2026-04-08"):
        lifecycle.transition(con2, fid, "appeal", "王芳", "复议", clock=clock("2026-04-09"))
    assert lifecycle.transition(con2, fid, "appeal", "王芳", "复议：补充病历", clock=clock("2026-04-08")) == "appealed"
    assert lifecycle.transition(con2, fid, "uphold", "处长", "维持", clock=clock("2026-04-10")) == "upheld"
    with pytest.raises(lifecycle.LifecycleError, match="after its second appeal"):
        lifecycle.transition(con2, fid, "appeal", "王芳", "再次", clock=clock("2026-04-10"))


def test_reasons_and_actor_are_required(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    with pytest.raises(lifecycle.LifecycleError, match="reason is required"):
        lifecycle.transition(con, sex, "appeal", "王芳", "  ", clock=clock("2026-04-02"))
    with pytest.raises(lifecycle.LifecycleError, match="--by"):
        lifecycle.transition(con, sex, "appeal", "", "理由", clock=clock("2026-04-02"))
    with pytest.raises(lifecycle.LifecycleError, match="no such finding"):
        lifecycle.transition(con, "ffffffffff", "appeal", "王芳", "理由", clock=clock("2026-04-02"))


# ---------------------------------------------------------------------------- re-screening


RULES_V2 = RULES.replace(
    "name: 限女性使用的检查项目\n    type: restrict_gender", "name: 限女性使用的检查项目\n    type: restrict_gender"
).replace("  - id: R-SEX-001\n    version: 1", "  - id: R-SEX-001\n    version: 2")


def test_rescreen_same_rules_keeps_everything(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex = finding(con, v["sex"], "R-SEX-001")
    lifecycle.transition(con, sex["id"], "appeal", "王芳", "理由", clock=clock("2026-04-02"))
    before = con.execute("SELECT finding_id, status, deduction_amt FROM findings ORDER BY 1").fetchall()
    n_events = con.execute("SELECT count(*) FROM finding_events").fetchall()[0][0]
    set_wall_clock(monkeypatch, "2026-04-05")
    res = rescreen(tmp_path, con)
    assert res.n_new_findings == 0
    assert con.execute("SELECT finding_id, status, deduction_amt FROM findings ORDER BY 1").fetchall() == before
    assert con.execute("SELECT count(*) FROM finding_events").fetchall()[0][0] == n_events
    assert finding(con, v["sex"], "R-SEX-001")["deadline"] is None  # appealed: no window
    assert finding(con, v["bed"], "R-FRQ-001")["deadline"] == dt.date(2026, 4, 15)  # not moved by the re-run


def test_rescreen_with_a_new_rule_version_supersedes_open_findings_only(tmp_path, monkeypatch):
    assert "version: 2" in RULES_V2
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    both = finding(con, v["both"], "R-SEX-001")["id"]
    lifecycle.transition(con, sex, "appeal", "王芳", "理由", clock=clock("2026-04-02"))
    lifecycle.transition(con, sex, "uphold", "李审", "维持", clock=clock("2026-04-03"))
    set_wall_clock(monkeypatch, "2026-04-07")
    res = rescreen(tmp_path, con, RULES_V2, name="rules2")
    assert res.n_new_findings == 3  # sex, both and other under version 2
    status = dict(con.execute("SELECT finding_id, status FROM findings").fetchall())
    assert status[sex] == "upheld"  # decided: stays
    assert status[both] == "superseded"  # open: replaced
    assert events(con, both)[-1] == ("screen run 2", "supersede", "pending_appeal", "superseded")
    new_both = con.execute(
        "SELECT finding_id, status FROM findings WHERE mdtrt_id = ? AND rule_id = 'R-SEX-001' AND rule_version = '2'",
        [v["both"]],
    ).fetchall()[0]
    assert new_both[1] == "pending_appeal"
    dl = con.execute("SELECT deadline FROM finding_state WHERE finding_id = ?", [new_both[0]]).fetchall()[0][0]
    assert dl == dt.date(2026, 4, 21)  # a fresh window from the re-screening day
    # money: the superseded one carries nothing, the new one carries the line
    ded = dict(con.execute("SELECT finding_id, deduction_amt FROM findings").fetchall())
    assert ded[both] == 0 and ded[new_both[0]] == D("180.00")
    # never twice: the upheld v1 finding and its v2 twin claim the same line; one carries it
    sex_total = con.execute("SELECT sum(deduction_amt) FROM findings WHERE mdtrt_id = ?", [v["sex"]]).fetchall()[0][0]
    assert sex_total == D("180.00")


def test_the_audit_log_only_grows(tmp_path, monkeypatch):
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    snap = lambda: con.execute("SELECT * FROM finding_events ORDER BY event_id").fetchall()  # noqa: E731
    before = snap()
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    lifecycle.transition(con, sex, "appeal", "王芳", "理由", clock=clock("2026-04-02"))
    lifecycle.transition(con, sex, "uphold", "李审", "维持", clock=clock("2026-04-03"))
    lifecycle.expire_due(con, clock("2026-04-30"))
    set_wall_clock(monkeypatch, "2026-05-01")
    rescreen(
        tmp_path, con, RULES.replace("  - id: R-FRQ-001\n    version: 1", "  - id: R-FRQ-001\n    version: 2"), "rules3"
    )
    after = snap()
    assert after[: len(before)] == before
    assert [e[4] for e in after[len(before) :]][:2] == ["appeal", "uphold"]
    assert len({e[0] for e in after}) == len(after)


def test_create_events_take_consecutive_ids_and_later_events_follow(tmp_path, monkeypatch):
    """A screen takes its create events' ids from the sequence at once; an event logged after it,
    and the next screen's create events, get ids above them (none is given twice)."""
    b, v = loop_batch()
    con = loop_db(tmp_path, monkeypatch, b)
    creates = lambda: [
        r[0]
        for r in con.execute(  # noqa: E731
            "SELECT event_id FROM finding_events WHERE action = 'create' ORDER BY event_id"
        ).fetchall()
    ]
    first = creates()
    n = con.execute("SELECT count(*) FROM findings").fetchall()[0][0]
    assert n > 2 and first == list(range(first[0], first[0] + n))
    sex = finding(con, v["sex"], "R-SEX-001")["id"]
    lifecycle.transition(con, sex, "appeal", "王芳", "理由", clock=clock("2026-04-02"))
    appeal = con.execute("SELECT max(event_id) FROM finding_events").fetchall()[0][0]
    assert appeal == first[-1] + 1
    set_wall_clock(monkeypatch, "2026-04-07")
    res = rescreen(tmp_path, con, RULES_V2, name="rules2")
    later = creates()[n:]
    assert len(later) == res.n_new_findings > 0 and min(later) > appeal
    ids = [r[0] for r in con.execute("SELECT event_id FROM finding_events").fetchall()]
    assert len(ids) == len(set(ids))


def test_create_events_when_the_ids_taken_are_not_consecutive(tmp_path, monkeypatch):
    """When the ids taken are not consecutive (another connection took some in between) the
    screen asks the sequence row by row: driven here by a taker that says so, the events are the
    same but for their ids."""

    def screened(folder, take):
        monkeypatch.setattr(lifecycle, "_take_event_ids", take)
        folder.mkdir()
        con = db.connect(folder / "x.duckdb")
        load_batch(b.write(folder / "batch"), con)
        rescreen(folder, con)
        rows = con.execute(
            "SELECT finding_id, actor, action, from_status, to_status, reason, attachments FROM finding_events ORDER BY ALL"
        ).fetchall()
        ids = [r[0] for r in con.execute("SELECT event_id FROM finding_events").fetchall()]
        return rows, ids

    b, _v = loop_batch()
    set_wall_clock(monkeypatch, "2026-04-01")
    taken = lifecycle._take_event_ids
    fast, fast_ids = screened(tmp_path / "a", taken)
    slow, slow_ids = screened(tmp_path / "b", lambda con, n: None)
    assert slow == fast and len(fast) > 2
    assert len(set(slow_ids)) == len(slow_ids) == len(fast_ids)


def test_event_ids_taken_are_used_only_when_consecutive():
    """_take_event_ids reads the smallest and largest id it took: n ids spanning n numbers are
    the caller's alone; a wider span means another connection took ids in between."""

    class Taken:  # the connection's answer to the one statement _take_event_ids runs
        def __init__(self, lo, hi):
            self.row = (lo, hi)

        def execute(self, sql, params):
            assert "nextval('finding_event_seq')" in sql and params == [3]
            return self

        def fetchall(self):
            return [self.row]

    assert lifecycle._take_event_ids(Taken(41, 43), 3) == 41
    assert lifecycle._take_event_ids(Taken(41, 44), 3) is None
    assert lifecycle._take_event_ids(Taken(41, 43), 0) is None


def test_a_reviewer_confirms_part_of_a_suspect(tmp_path, monkeypatch):
    b, v = loop_batch()
    b.line(
        v["age"],
        CHILD_DRUG,
        hilist_name="小儿氨酚黄那敏颗粒",
        cnt="1",
        pric="12.35",
        bkkp_sn="AGE2",
        time="2026-03-02 09:00:00",
    )
    con = loop_db(tmp_path, monkeypatch, b)
    age = finding(con, v["age"], "R-AGE-001")
    assert age["claimed"] == D("37.05")
    with pytest.raises(lifecycle.LifecycleError, match="at most the amount at risk 37.05, got 40.00"):
        lifecycle.transition(con, age["id"], "confirm", "李审", clock=clock("2026-04-02"), amount="40")
    with pytest.raises(lifecycle.LifecycleError, match="only given to confirm"):
        lifecycle.transition(con, age["id"], "dismiss", "李审", "x", clock=clock("2026-04-02"), amount="4")
    lifecycle.transition(con, age["id"], "confirm", "李审", "只认定一次", clock=clock("2026-04-02"), amount="20")
    money.settle_deductions(con)
    age = finding(con, v["age"], "R-AGE-001")
    assert (age["status"], age["deduction"], age["claimed"]) == ("pending_appeal", D("20.00"), D("20.00"))
    claims = dict(con.execute("SELECT bkkp_sn, claim FROM finding_lines WHERE finding_id = ?", [age["id"]]).fetchall())
    assert sum(claims.values()) == D("20")  # exactly, before any rounding
    assert claims["AGE1"] == D("13.333333333334") and claims["AGE2"] == D("6.666666666666")
    assert lifecycle.history(con, age["id"])[-1]["reason"] == "确认扣款 20.00 元（疑点金额 37.05 元）；只认定一次"

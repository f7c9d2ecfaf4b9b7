"""Tips and complaints (举报投诉): received by phone, WeChat, mailbox or website, checked, rewarded.

Lifecycle (``tips.status``)::

    受理 ──investigate──▶ 核查中 ──found──▶ 属实 ──reward──▶ 奖励已发放
                             └──reject──▶ 不属实

Anything else is refused with the tip and its state named. Every move is an event in
``supervision_events`` (subject ``tip:N``: who, when, why).

A tip names an institution, a doctor (within the institution), a person and visits; each named
one must be in the loaded data. The findings of its visits are linked to it (``tip_findings``),
at receipt and again when it is concluded (screening after receipt finds more). The tipster's
contact is kept masked only (``138****5678``; an e-mail ``w***@qq.com``) with a SHA-256 to
recognise a repeated tipster; the full contact never enters the database.

Found true (属实) with the recovered amount and the violation's nature: an entry in the credit
files of the named institution, doctor and person (source ``tip``, once per tip and entity).
The reward is ``recovered × reward_share``, at least ``reward_floor`` and at most
``reward_cap`` (settings, logged), rounded half-up to 0.01, fixed when the tip is found true.
The assessment counts founded tips per institution (``tips_founded``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from decimal import ROUND_HALF_UP, Decimal

import duckdb

from .. import money
from ..hospital_loop import lifecycle
from . import credit, store

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS tip_seq;
CREATE TABLE IF NOT EXISTS tips (
    tip_id INTEGER PRIMARY KEY DEFAULT nextval('tip_seq'),
    received_on DATE,
    channel VARCHAR,
    fixmedins_code VARCHAR,
    dr_code VARCHAR,
    psn_no VARCHAR,
    visits VARCHAR,             -- JSON list of mdtrt_id
    content VARCHAR,
    contact_masked VARCHAR,
    contact_sha256 VARCHAR,
    status VARCHAR,
    nature VARCHAR,             -- when found true
    recovered DECIMAL(18,2),    -- when found true
    reward DECIMAL(18,2)        -- fixed when found true, paid by reward
);
CREATE TABLE IF NOT EXISTS tip_findings (tip_id INTEGER, finding_id VARCHAR, PRIMARY KEY (tip_id, finding_id));
CREATE TABLE IF NOT EXISTS tip_settings (key VARCHAR PRIMARY KEY, value VARCHAR);
"""

CHANNELS = ("电话", "微信", "信箱", "网站")
STATES = ("受理", "核查中", "属实", "不属实", "奖励已发放")
MOVES = {("受理", "investigate"): "核查中", ("核查中", "found"): "属实", ("核查中", "reject"): "不属实",
         ("属实", "reward"): "奖励已发放"}
ACTION_CN = {"investigate": "开始核查", "found": "认定属实", "reject": "认定不属实", "reward": "发放奖励"}
DEFAULTS = {"reward_share": Decimal("0.05"), "reward_floor": Decimal("200"), "reward_cap": Decimal("200000")}
CENT = Decimal("0.01")


class TipError(store.SupervisionError):
    pass


def mask_contact(contact: str) -> str:
    c = (contact or "").strip()
    digits = re.sub(r"\D", "", c)
    if "@" in c:
        user, _, dom = c.partition("@")
        return f"{user[:1]}***@{dom}"
    if len(digits) >= 7 and len(digits) >= len(c) - 3:
        return f"{digits[:3]}****{digits[-4:]}"
    return (c[:1] + "*" * max(len(c) - 2, 1) + c[-1:]) if len(c) > 1 else "*"


def settings(con: duckdb.DuckDBPyConnection) -> dict[str, Decimal]:
    out = dict(DEFAULTS)
    out.update({k: Decimal(v) for k, v in con.execute("SELECT key, value FROM tip_settings").fetchall() if k in DEFAULTS})
    return out


def set_settings(con: duckdb.DuckDBPyConnection, values: dict[str, str], by: str, reason: str) -> dict[str, Decimal]:
    parsed = {}
    for k, v in values.items():
        if k not in DEFAULTS:
            raise TipError(f"unknown tip setting {k!r} (known: {', '.join(DEFAULTS)})")
        opt = "--" + k.replace("_", "-")
        try:
            parsed[k] = money.parse_amount(v, opt) if k != "reward_share" else Decimal(str(v).strip())
        except (money.AmountError, ArithmeticError) as e:
            raise TipError(str(e) if isinstance(e, money.AmountError) else f"{opt} must be a number, got {v!r}") from None
    new = settings(con) | parsed
    if not (Decimal(0) <= new["reward_share"] <= 1) or not new["reward_share"].is_finite():
        raise TipError(f"--reward-share must be between 0 and 1, got {new['reward_share']}")
    if new["reward_floor"] > new["reward_cap"]:
        raise TipError(f"--reward-floor {new['reward_floor']} is above --reward-cap {new['reward_cap']}")
    if not (reason or "").strip():
        raise TipError("--reason is required to change the reward rule")
    with store.transaction(con):
        store.log(con, by, "tip_settings", "tips", reason, {"from": settings(con), "to": new})
        for k, v in parsed.items():
            con.execute("INSERT OR REPLACE INTO tip_settings VALUES (?, ?)", [k, str(v)])
    return new


def reward_for(recovered: Decimal, s: dict[str, Decimal]) -> Decimal:
    """``recovered × share``, at least the floor, at most the cap, rounded half-up to 0.01."""
    r = (Decimal(recovered) * s["reward_share"]).quantize(CENT, ROUND_HALF_UP)
    return min(max(r, s["reward_floor"]), s["reward_cap"]).quantize(CENT, ROUND_HALF_UP)


def _link(con: duckdb.DuckDBPyConnection, tip_id: int) -> int:
    """Link the findings of the tip's visits (post-hoc and in-process) not linked yet."""
    return con.execute(
        """INSERT INTO tip_findings SELECT t.tip_id, f.finding_id FROM tips t, findings f
           WHERE t.tip_id = ? AND list_contains(CAST(json_extract_string(t.visits, '$[*]') AS VARCHAR[]), f.mdtrt_id)
             AND f.status <> 'superseded'
             AND NOT EXISTS (SELECT 1 FROM tip_findings x WHERE x.tip_id = t.tip_id AND x.finding_id = f.finding_id)
           RETURNING finding_id""", [tip_id]).fetchall().__len__()


def add(con: duckdb.DuckDBPyConnection, *, channel: str, received_on: dt.date, content: str, by: str,
        institution: str | None = None, doctor: str | None = None, person: str | None = None,
        visits: list[str] = (), contact: str = "") -> int:
    if channel not in CHANNELS:
        raise TipError(f"--channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    if received_on > lifecycle.wall_now().date():
        raise TipError(f"--date {received_on} is later than today")
    if not (content or "").strip():
        raise TipError("--content is required: what the tip says")
    if doctor and not institution:
        raise TipError("--doctor needs --institution (a doctor is named within an institution)")
    if not (institution or person or visits):
        raise TipError("a tip names at least one of --institution, --person, --visit")
    q = lambda sql, a: con.execute(sql, a).fetchall()[0][0]  # noqa: E731
    if institution and not q("SELECT count(*) FROM mdtrt_d WHERE fixmedins_code = ?", [institution]):
        raise TipError(f"--institution {institution}: no such institution in the loaded data")
    if doctor and not q("SELECT (SELECT count(*) FROM mdtrt_d WHERE fixmedins_code = ? AND chfpdr_code = ?) + "
                        "(SELECT count(*) FROM fee_list_d WHERE fixmedins_code = ? AND bilg_dr_code = ?)",
                        [institution, doctor, institution, doctor]):
        raise TipError(f"--doctor {doctor}: no such doctor of {institution} in the loaded data")
    if person and not q("SELECT count(*) FROM mdtrt_d WHERE psn_no = ?", [person]):
        raise TipError(f"--person {person}: no such person in the loaded data")
    for v in visits:
        row = con.execute("SELECT fixmedins_code, psn_no FROM mdtrt_d WHERE mdtrt_id = ?", [v]).fetchall()
        if not row:
            raise TipError(f"--visit {v}: no such visit in the loaded data")
        if institution and row[0][0] != institution:
            raise TipError(f"--visit {v} is a visit of {row[0][0]}, not of --institution {institution}")
    c = (contact or "").strip()
    with store.transaction(con):
        tid = con.execute(
            """INSERT INTO tips (received_on, channel, fixmedins_code, dr_code, psn_no, visits, content, contact_masked,
                                 contact_sha256, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '受理') RETURNING tip_id""",
            [received_on, channel, institution, doctor, person, json.dumps(list(visits)), content.strip(),
             mask_contact(c) if c else None, hashlib.sha256(c.encode()).hexdigest() if c else None]).fetchall()[0][0]
        n = _link(con, tid)
        store.log(con, by, "tip_add", f"tip:{tid}", "受理", {"channel": channel, "received_on": received_on,
                                                            "linked_findings": n})
    return tid


def _state(con, tip_id: int) -> str:
    rows = con.execute("SELECT status FROM tips WHERE tip_id = ?", [int(tip_id)]).fetchall()
    if not rows:
        raise TipError(f"tip {tip_id}: no such tip")
    return rows[0][0]


def move(con: duckdb.DuckDBPyConnection, tip_id: int, action: str, by: str, reason: str = "",
         recovered=None, nature: str | None = None) -> str:
    """One move of the lifecycle, refused when the table of moves has no such move."""
    with store.transaction(con):
        cur = _state(con, tip_id)
        to = MOVES.get((cur, action))
        if to is None:
            allowed = [f"{ACTION_CN[a]} ({a})" for (s, a) in MOVES if s == cur] or ["nothing: it is closed"]
            raise TipError(f"tip {tip_id} is {cur}; it cannot {ACTION_CN.get(action, action)} ({action}) "
                           f"(from {cur} only: {', '.join(allowed)})")
        if action in ("found", "reject") and not (reason or "").strip():
            raise TipError(f"tip {tip_id}: --reason is required to conclude a tip")
        detail: dict = {"from": cur, "to": to}
        if action == "found":
            from .scheme import NATURES
            if nature not in NATURES:
                raise TipError(f"tip {tip_id}: --nature must be one of {', '.join(NATURES)}, got {nature!r}")
            try:
                amt = money.parse_amount(recovered, "--recovered")
            except money.AmountError as e:
                raise TipError(f"tip {tip_id}: {e}") from None
            reward = reward_for(amt, settings(con))
            con.execute("UPDATE tips SET nature = ?, recovered = ?, reward = ? WHERE tip_id = ?",
                        [nature, amt, reward, int(tip_id)])
            detail |= {"nature": nature, "recovered": amt, "reward": reward}
        if action in ("found", "reject"):
            detail["linked_findings"] = _link(con, int(tip_id))
        con.execute("UPDATE tips SET status = ? WHERE tip_id = ?", [to, int(tip_id)])
        ev = store.log(con, by, f"tip_{action}", f"tip:{tip_id}", reason, detail)
        if action == "found":
            _credit(con, int(tip_id), ev)
    return to


def _credit(con: duckdb.DuckDBPyConnection, tip_id: int, event_id: int) -> None:
    inst, dr, psn, nature, amt, day = con.execute(
        "SELECT fixmedins_code, dr_code, psn_no, nature, recovered, received_on FROM tips WHERE tip_id = ?",
        [tip_id]).fetchall()[0]
    pts = credit.points_table(con).get(nature, 0)
    today = lifecycle.wall_now().date()
    ents = [(inst, "institution", inst)] if inst else []
    ents += [(f"{inst}/{dr}", "doctor", inst)] if dr else []
    ents += [(f"person:{psn}", "person", inst)] if psn else []
    for ent, kind, i in ents:
        con.execute(
            """INSERT INTO credit_entries (entity, entity_kind, fixmedins_code, entry_date, period, nature, amount, points,
                                           source, source_id, finding_id, event_id)
               SELECT ?, ?, ?, ?, ?, ?, ?, ?, 'tip', ?, ?, ?
               WHERE NOT EXISTS (SELECT 1 FROM credit_entries WHERE entity = ? AND finding_id = ?)""",
            [ent, kind, i, today, f"{day:%Y-%m}", nature, amt, pts, str(tip_id), f"tip:{tip_id}", event_id,
             ent, f"tip:{tip_id}"])


def show(con: duckdb.DuckDBPyConnection, tip_id: int) -> dict:
    cur = con.execute("SELECT * FROM tips WHERE tip_id = ?", [int(tip_id)])
    rows = cur.fetchall()
    if not rows:
        raise TipError(f"tip {tip_id}: no such tip")
    t = dict(zip([d[0] for d in cur.description], rows[0]))
    t["findings"] = [r[0] for r in con.execute("SELECT finding_id FROM tip_findings WHERE tip_id = ? ORDER BY 1",
                                                [int(tip_id)]).fetchall()]
    t["events"] = store.events(con, f"tip:{tip_id}")
    return t


def listing(con: duckdb.DuckDBPyConnection, status: str | None = None) -> list[dict]:
    if status and status not in STATES:
        raise TipError(f"--status must be one of {', '.join(STATES)}, got {status!r}")
    cur = con.execute(
        "SELECT tip_id, received_on, channel, fixmedins_code, dr_code, psn_no, status, recovered, reward, "
        "(SELECT count(*) FROM tip_findings f WHERE f.tip_id = t.tip_id) AS n_findings, content FROM tips t "
        + ("WHERE status = ? " if status else "") + "ORDER BY tip_id", [status] if status else [])
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, r)) for r in cur.fetchall()]

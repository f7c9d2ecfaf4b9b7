"""Tips and complaints (举报投诉): received by phone, WeChat, mailbox or website, checked, rewarded.

Lifecycle (``tips.status``)::

    受理 ──investigate──▶ 核查中 ──found──▶ 属实 ──reward──▶ 奖励已发放
                             └──reject──▶ 不属实

Anything else is refused with the tip and its state named. Every move is an event in
``supervision_events`` (subject ``tip:N``: who, when, why).

A tip names an institution, a doctor (within the institution), a person and visits; each named
one must be in the loaded data. The named visits that are loaded are screened
with every rule of the library at receipt (:func:`screen_visits`: the engine's own screening of a
visit subset, every stage their lines are in) and the findings that involve them are linked to
the tip (``tip_findings``, with the event that linked them) in the same transaction; a visit not
loaded yet is kept, and the screening run that loads it links its findings (:func:`link_run`).
Concluding links what screening found since. The tipster's
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
from collections.abc import Sequence
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
-- schema 4: the supervision_events row that linked the finding (tip_add, tip_visits, tip_found,
-- tip_reject, or tip_link by the screening run that found it); NULL on links made before
ALTER TABLE tip_findings ADD COLUMN IF NOT EXISTS event_id BIGINT;
"""

CHANNELS = ("电话", "微信", "信箱", "网站")
STATES = ("受理", "核查中", "属实", "不属实", "奖励已发放")
MOVES = {
    ("受理", "investigate"): "核查中",
    ("核查中", "found"): "属实",
    ("核查中", "reject"): "不属实",
    ("属实", "reward"): "奖励已发放",
}
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
    out.update(
        {k: Decimal(v) for k, v in con.execute("SELECT key, value FROM tip_settings").fetchall() if k in DEFAULTS}
    )
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
            raise TipError(
                str(e) if isinstance(e, money.AmountError) else f"{opt} must be a number, got {v!r}"
            ) from None
    new = settings(con) | parsed
    if not (Decimal(0) <= new["reward_share"] <= 1) or not new["reward_share"].is_finite():
        raise TipError(f"--reward-share must be between 0 and 1, got {new['reward_share']}")
    if new["reward_floor"] > new["reward_cap"]:
        raise TipError(f"--reward-floor {new['reward_floor']} is above --reward-cap {new['reward_cap']}")
    if not (reason or "").strip():
        raise TipError("--reason is required to change the reward rule")
    with store.transaction(con):
        store.log(con, by, "tip_settings", "tips", reason, {"from": settings(con), "to": new})
        for k, amount in parsed.items():
            con.execute("INSERT OR REPLACE INTO tip_settings VALUES (?, ?)", [k, str(amount)])
    return new


def reward_for(recovered: Decimal, s: dict[str, Decimal]) -> Decimal:
    """``recovered × share``, at least the floor, at most the cap, rounded half-up to 0.01."""
    r = (Decimal(recovered) * s["reward_share"]).quantize(CENT, ROUND_HALF_UP)
    return min(max(r, s["reward_floor"]), s["reward_cap"]).quantize(CENT, ROUND_HALF_UP)


#: (tip, finding) pairs not linked yet: findings (not superseded) that involve a visit a tip
#: names, by their visit or by one of their lines (a finding about a person or a month whose
#: lines include the visit's), and are of the tip's institution when it names one. ``{tips}``
#: and ``{runs}`` are constant filters (``t.tip_id = ?``, ``f.last_run = ?`` or ``TRUE``).
_CANDIDATES = """
WITH tv AS (
    SELECT tip_id, fixmedins_code AS tip_inst,
           unnest(CAST(json_extract_string(visits, '$[*]') AS VARCHAR[])) AS mdtrt_id
    FROM tips t WHERE {tips}),
inv AS (
    SELECT tv.tip_id, tv.tip_inst, f.finding_id, f.fixmedins_code, f.status
    FROM tv JOIN findings f ON f.mdtrt_id = tv.mdtrt_id WHERE {runs}
    UNION
    SELECT tv.tip_id, tv.tip_inst, f.finding_id, f.fixmedins_code, f.status
    FROM tv JOIN fee_list_d l ON l.mdtrt_id = tv.mdtrt_id
    JOIN finding_lines fl ON fl.bkkp_sn = l.bkkp_sn JOIN findings f ON f.finding_id = fl.finding_id WHERE {runs})
SELECT DISTINCT tip_id, finding_id FROM inv
WHERE status <> 'superseded' AND (tip_inst IS NULL OR fixmedins_code IS NULL OR fixmedins_code = tip_inst)
  AND NOT EXISTS (SELECT 1 FROM tip_findings x WHERE x.tip_id = inv.tip_id AND x.finding_id = inv.finding_id)
ORDER BY tip_id, finding_id
"""


def _candidate_pairs(
    con: duckdb.DuckDBPyConnection, tip_id: int | None = None, run_id: int | None = None
) -> list[tuple[int, str]]:
    """``(tip_id, finding_id)`` pairs to link, of ``tip_id`` (every tip when None), among the
    findings of screening run ``run_id`` when given."""
    args: list = []
    tips_f, runs_f = "TRUE", "TRUE"
    if tip_id is not None:
        tips_f, args = "t.tip_id = ?", [int(tip_id)]
    if run_id is not None:
        runs_f, args = "f.last_run = ?", args + [int(run_id)] * 2
    # the run filter is in both branches of the UNION: its value is bound twice, in order
    return [(t, f) for t, f in con.execute(_CANDIDATES.format(tips=tips_f, runs=runs_f), args).fetchall()]


def _candidates(con: duckdb.DuckDBPyConnection, tip_id: int) -> list[str]:
    """The findings to link to ``tip_id``."""
    return [f for _, f in _candidate_pairs(con, tip_id)]


def _insert_links(con: duckdb.DuckDBPyConnection, tip_id: int, finding_ids: list[str], event_id: int) -> None:
    if finding_ids:
        con.execute(
            "INSERT INTO tip_findings (tip_id, finding_id, event_id) SELECT ?, unnest(?::VARCHAR[]), ?",
            [int(tip_id), list(finding_ids), event_id],
        )


def link_run(con: duckdb.DuckDBPyConnection, run_id: int) -> dict[int, list[str]]:
    """Inside a screening run's transaction: link its findings that involve a visit some tip names
    (one ``tip_link`` event per tip, by ``screen run N``). A visit named before it was loaded is
    screened by the run that loads it, and its findings reach the tip here. Returns tip -> findings."""
    if not con.execute("SELECT count(*) FROM tips WHERE visits IS NOT NULL AND visits <> '[]'").fetchall()[0][0]:
        return {}
    by_tip: dict[int, list[str]] = {}
    for tid, fid in _candidate_pairs(con, run_id=run_id):
        by_tip.setdefault(tid, []).append(fid)
    for tid, fids in by_tip.items():
        ev = store.log(
            con,
            f"screen run {run_id}",
            "tip_link",
            f"tip:{tid}",
            "筛查发现举报所涉就诊的疑点",
            {"run_id": run_id, "findings": fids},
        )
        _insert_links(con, tid, fids, ev)
    return by_tip


def loaded_visits(con: duckdb.DuckDBPyConnection, visits) -> dict[str, tuple[str, str]]:
    """The named visits that are loaded: mdtrt_id -> (institution, person)."""
    return {
        v: (i, p)
        for v, i, p in con.execute(
            "SELECT mdtrt_id, any_value(fixmedins_code), any_value(psn_no) FROM mdtrt_d "
            "WHERE list_contains(?::VARCHAR[], mdtrt_id) GROUP BY 1",
            [list(visits)],
        ).fetchall()
    }


def screen_visits(con: duckdb.DuckDBPyConnection, library, visits: list[str]) -> list[dict]:
    """Screen ``visits`` with every rule of ``library``, each stage that has lines of theirs
    (post-hoc: settled lines; in-process: lines of stays open or not settled yet), inside the
    caller's transaction; the engine's own incremental screening of a visit subset, so the
    findings and their ids are those a full screen gives. Returns one summary per run."""
    from .. import engine
    from ..incremental import Scope

    out = []
    for stage in ("post_hoc", "in_process"):
        if not visits or not any(stage in r.stages for r in library.rules):
            continue
        # the engine's own stage filter (constant SQL), over the named visits' lines
        n = con.execute(
            f"""SELECT count(*) FROM fee_list_d f JOIN mdtrt_d v ON v.mdtrt_id = f.mdtrt_id
                LEFT JOIN (SELECT setl_id FROM setl_d WHERE coalesce(refd_setl_flag, '0') <> '1') s
                       ON s.setl_id = f.setl_id
                WHERE list_contains(?::VARCHAR[], f.mdtrt_id) AND {engine.STAGE_FILTER[stage]}""",
            [list(visits)],
        ).fetchall()[0][0]
        if not n:
            continue
        r = engine.screen(con, library, stage=stage, scope=Scope.of_visits(visits), own_transaction=False)
        out.append(
            {"stage": stage, "run_id": r.run_id, "lines": r.n_lines, "new_findings": r.n_new_findings, "scope": r.scope}
        )
    return out


def _check_visits(con, visits, institution: str | None) -> tuple[list[str], list[str]]:
    """(loaded, not loaded) of the named visits; a loaded one of another institution is refused."""
    got = loaded_visits(con, visits)
    for v in visits:
        if v in got and institution and got[v][0] != institution:
            raise TipError(f"--visit {v} is a visit of {got[v][0]}, not of --institution {institution}")
    seen: list[str] = []
    for v in visits:
        if v not in seen:
            seen.append(v)
    return [v for v in seen if v in got], [v for v in seen if v not in got]


def add(
    con: duckdb.DuckDBPyConnection,
    *,
    channel: str,
    received_on: dt.date,
    content: str,
    by: str,
    institution: str | None = None,
    doctor: str | None = None,
    person: str | None = None,
    visits: Sequence[str] = (),
    contact: str = "",
    library=None,
) -> int:
    """Receive a tip (受理). Named visits that are loaded are screened with every rule of
    ``library`` (when given) and their findings linked; visits not loaded yet are kept and
    linked when a screening run finds something on them (:func:`link_run`)."""
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
    if doctor and not q(
        "SELECT (SELECT count(*) FROM mdtrt_d WHERE fixmedins_code = ? AND chfpdr_code = ?) + "
        "(SELECT count(*) FROM fee_list_d WHERE fixmedins_code = ? AND bilg_dr_code = ?)",
        [institution, doctor, institution, doctor],
    ):
        raise TipError(f"--doctor {doctor}: no such doctor of {institution} in the loaded data")
    if person and not q("SELECT count(*) FROM mdtrt_d WHERE psn_no = ?", [person]):
        raise TipError(f"--person {person}: no such person in the loaded data")
    if any(not (v or "").strip() for v in visits):
        raise TipError("--visit must name a visit (mdtrt_id), got an empty one")
    loaded, missing = _check_visits(con, visits, institution)
    c = (contact or "").strip()
    with store.transaction(con):
        # the named visits screened with every rule first (the run links its findings to the
        # tips that named them before), then the tip, its event and its links: one transaction
        runs = screen_visits(con, library, loaded) if library is not None else []
        tid = con.execute(
            """INSERT INTO tips (received_on, channel, fixmedins_code, dr_code, psn_no, visits, content, contact_masked,
                                 contact_sha256, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '受理') RETURNING tip_id""",
            [
                received_on,
                channel,
                institution,
                doctor,
                person,
                json.dumps(loaded + missing),
                content.strip(),
                mask_contact(c) if c else None,
                hashlib.sha256(c.encode()).hexdigest() if c else None,
            ],
        ).fetchall()[0][0]
        fids = _candidates(con, tid)
        ev = store.log(
            con,
            by,
            "tip_add",
            f"tip:{tid}",
            "受理",
            {
                "channel": channel,
                "received_on": received_on,
                "linked_findings": len(fids),
                "findings": fids,
                "screened": runs,
                "visits_not_loaded": missing,
            },
        )
        _insert_links(con, tid, fids, ev)
    return tid


def add_visits(con: duckdb.DuckDBPyConnection, tip_id: int, visits: list[str], by: str, library=None) -> dict:
    """Name more visits on an open tip (受理, 核查中): screened with ``library`` like those named at
    receipt, their findings linked, one ``tip_visits`` event. Returns the event's detail."""
    if not visits or any(not (v or "").strip() for v in visits):
        raise TipError(f"tip {tip_id}: give the visits to add (--visit mdtrt_id)")
    with store.transaction(con):
        cur = _state(con, tip_id)
        if cur not in ("受理", "核查中"):
            raise TipError(f"tip {tip_id} is {cur}; visits are added while it is 受理 or 核查中")
        inst, old = con.execute("SELECT fixmedins_code, visits FROM tips WHERE tip_id = ?", [int(tip_id)]).fetchall()[0]
        old = json.loads(old or "[]")
        new = [v for v in dict.fromkeys(visits) if v not in old]
        if not new:
            raise TipError(f"tip {tip_id} names {', '.join(visits)} already")
        loaded, missing = _check_visits(con, new, inst)
        runs = screen_visits(con, library, loaded) if library is not None else []
        con.execute("UPDATE tips SET visits = ? WHERE tip_id = ?", [json.dumps(old + loaded + missing), int(tip_id)])
        fids = _candidates(con, tip_id)
        detail = {
            "visits": loaded + missing,
            "visits_not_loaded": missing,
            "screened": runs,
            "linked_findings": len(fids),
            "findings": fids,
        }
        ev = store.log(con, by, "tip_visits", f"tip:{tip_id}", "追加就诊", detail)
        _insert_links(con, tip_id, fids, ev)
    return detail


def _state(con, tip_id: int) -> str:
    rows = con.execute("SELECT status FROM tips WHERE tip_id = ?", [int(tip_id)]).fetchall()
    if not rows:
        raise TipError(f"tip {tip_id}: no such tip")
    return rows[0][0]


def move(
    con: duckdb.DuckDBPyConnection,
    tip_id: int,
    action: str,
    by: str,
    reason: str = "",
    recovered=None,
    nature: str | None = None,
) -> str:
    """One move of the lifecycle, refused when the table of moves has no such move."""
    with store.transaction(con):
        cur = _state(con, tip_id)
        to = MOVES.get((cur, action))
        if to is None:
            allowed = [f"{ACTION_CN[a]} ({a})" for (s, a) in MOVES if s == cur] or ["nothing: it is closed"]
            raise TipError(
                f"tip {tip_id} is {cur}; it cannot {ACTION_CN.get(action, action)} ({action}) "
                f"(from {cur} only: {', '.join(allowed)})"
            )
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
            con.execute(
                "UPDATE tips SET nature = ?, recovered = ?, reward = ? WHERE tip_id = ?",
                [nature, amt, reward, int(tip_id)],
            )
            detail |= {"nature": nature, "recovered": amt, "reward": reward}
        fids = _candidates(con, int(tip_id)) if action in ("found", "reject") else []
        if action in ("found", "reject"):
            detail |= {"linked_findings": len(fids), "findings": fids}
        con.execute("UPDATE tips SET status = ? WHERE tip_id = ?", [to, int(tip_id)])
        ev = store.log(con, by, f"tip_{action}", f"tip:{tip_id}", reason, detail)
        _insert_links(con, int(tip_id), fids, ev)
        if action == "found":
            _credit(con, int(tip_id), ev)
    return to


def _credit(con: duckdb.DuckDBPyConnection, tip_id: int, event_id: int) -> None:
    inst, dr, psn, nature, amt, day = con.execute(
        "SELECT fixmedins_code, dr_code, psn_no, nature, recovered, received_on FROM tips WHERE tip_id = ?", [tip_id]
    ).fetchall()[0]
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
            [
                ent,
                kind,
                i,
                today,
                f"{day:%Y-%m}",
                nature,
                amt,
                pts,
                str(tip_id),
                f"tip:{tip_id}",
                event_id,
                ent,
                f"tip:{tip_id}",
            ],
        )


def show(con: duckdb.DuckDBPyConnection, tip_id: int) -> dict:
    cur = con.execute("SELECT * FROM tips WHERE tip_id = ?", [int(tip_id)])
    rows = cur.fetchall()
    if not rows:
        raise TipError(f"tip {tip_id}: no such tip")
    t = dict(zip([d[0] for d in cur.description], rows[0]))
    t["findings"] = [
        r[0]
        for r in con.execute(
            "SELECT finding_id FROM tip_findings WHERE tip_id = ? ORDER BY 1", [int(tip_id)]
        ).fetchall()
    ]
    cur = con.execute(
        """SELECT x.finding_id, f.rule_id, f.rule_name, f.stage, f.status, f.mdtrt_id, f.flagged_amt, f.deduction_amt,
                  e.action AS linked_by, e.actor AS linked_actor
           FROM tip_findings x LEFT JOIN findings f USING (finding_id)
           LEFT JOIN supervision_events e ON e.event_id = x.event_id
           WHERE x.tip_id = ? ORDER BY f.mdtrt_id, f.rule_id, x.finding_id""",
        [int(tip_id)],
    )
    keys = [d[0] for d in cur.description]
    t["linked"] = [dict(zip(keys, r)) for r in cur.fetchall()]
    named = json.loads(t["visits"] or "[]")
    got = loaded_visits(con, named)
    t["visit_status"] = {
        v: (
            "loaded"
            if v not in got or not t["fixmedins_code"] or got[v][0] == t["fixmedins_code"]
            else f"a visit of {got[v][0]}, not of {t['fixmedins_code']}: not linked"
        )
        if v in got
        else "not loaded yet"
        for v in named
    }
    t["events"] = store.events(con, f"tip:{tip_id}")
    return t


def listing(con: duckdb.DuckDBPyConnection, status: str | None = None) -> list[dict]:
    if status and status not in STATES:
        raise TipError(f"--status must be one of {', '.join(STATES)}, got {status!r}")
    cur = con.execute(
        "SELECT tip_id, received_on, channel, fixmedins_code, dr_code, psn_no, status, recovered, reward, "
        "(SELECT count(*) FROM tip_findings f WHERE f.tip_id = t.tip_id) AS n_findings, content FROM tips t "
        + ("WHERE status = ? " if status else "")
        + "ORDER BY tip_id",
        [status] if status else [],
    )
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, r)) for r in cur.fetchall()]

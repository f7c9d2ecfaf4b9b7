"""What the pre-alert service keeps in the medaudit database.

- ``prealert_results`` / ``prealert_result_items``: every alert answered (one row per 3101
  ``result``, ``jr_id``) and its items (``judge_result_detail_dtos``: the order ``rx_id``, its
  code, ``vola_item_type`` 1 violating / 2 related, amount), with the institution it was
  answered to: an institution sees and answers only its own.
  ``jr_id`` is time-ordered (:func:`new_id`) and carries no index: an index on it grew by every
  answer for as long as the service ran (about 0.12 KB an answer, the one part of the service's
  memory without a bound); with ids in time order the stored rows' min/max per row group finds
  an id as fast, and the writer's own check keeps each id once (:mod:`.writer`).
- ``prealert_feedback``: the doctor's 3103 answers (``dspo_way`` 1 continue, with the reason
  a senior doctor signed off; 2 change the order), every answer kept, the latest counts.
- ``prealert_api_keys``: SHA-256 of each institution's API key (``medaudit serve-key add``);
  a keys file may give more (:func:`load_keys_file`).

The answer reaches the post-hoc finding it concerns through the view
``finding_prealert`` (finding_id, jr_id, when alerted, the order and code, the answer and its
reason): same rule (or one of ``other_rules``: an alert several rules gave identically), same visit, same institution, and a violating line of the finding with the
code the alert's violating order had. ``finding_prealert_evidence`` (finding_id, text) is the
sentence to show next to a finding's evidence and in the appeal export, e.g.
``事前提醒（2026-03-02 09:15，医嘱 RX1）：医生选择继续执行，理由：患者病情需要，已经上级医师审核``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

import duckdb
import yaml

from .. import db

SCHEMA = """
CREATE TABLE IF NOT EXISTS prealert_results (
    jr_id VARCHAR,  -- time-ordered (new_id); unique by the writer's check, no index (see the module doc)
    fixmedins_code VARCHAR,
    rule_set VARCHAR,
    rule_id VARCHAR,
    rule_version VARCHAR,
    rule_name VARCHAR,
    rule_type VARCHAR,
    severity VARCHAR,
    trig_scen VARCHAR,
    patn_id VARCHAR,
    psn_no VARCHAR,
    mdtrt_id VARCHAR,
    vola_cont VARCHAR,
    vola_amt DECIMAL(18,2),
    created_at TIMESTAMP,
    other_rules VARCHAR[]  -- the other rules of an alert several rules gave identically (one answer for all)
);
-- a database made before other_rules
ALTER TABLE prealert_results ADD COLUMN IF NOT EXISTS other_rules VARCHAR[];
CREATE TABLE IF NOT EXISTS prealert_result_items (
    jr_id VARCHAR,
    jrd_id VARCHAR,
    rx_id VARCHAR,
    hilist_code VARCHAR,
    vola_item_type VARCHAR,
    vola_amt DECIMAL(18,2)
);
CREATE TABLE IF NOT EXISTS prealert_feedback (
    jr_id VARCHAR,
    fixmedins_code VARCHAR,
    warn_type VARCHAR,
    dspo_way VARCHAR,
    dspo_way_rea VARCHAR,
    received_at TIMESTAMP
);
-- journal segments stored (the writer's exactly-once mark, committed with the segment's rows:
-- a segment found here is never stored again, even when the process died before deleting it)
CREATE TABLE IF NOT EXISTS prealert_journal_stored (
    segment VARCHAR,
    stored_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS prealert_api_keys (
    key_sha256 VARCHAR PRIMARY KEY,
    fixmedins_code VARCHAR,
    created_at TIMESTAMP
);
CREATE OR REPLACE VIEW finding_prealert AS
WITH fb AS (
    SELECT jr_id, arg_max(dspo_way, received_at) AS dspo_way, arg_max(dspo_way_rea, received_at) AS dspo_way_rea,
           max(received_at) AS answered_at
    FROM prealert_feedback GROUP BY jr_id)
SELECT DISTINCT f.finding_id, r.jr_id, r.created_at AS alerted_at, ri.rx_id, ri.hilist_code,
       fb.dspo_way, fb.dspo_way_rea, fb.answered_at
FROM findings f
JOIN finding_lines fl ON fl.finding_id = f.finding_id AND fl.role = 'violating'
JOIN fee_list_d fe ON fe.bkkp_sn = fl.bkkp_sn
JOIN prealert_results r ON (r.rule_id = f.rule_id OR list_contains(r.other_rules, f.rule_id)) AND r.mdtrt_id = f.mdtrt_id AND r.fixmedins_code = f.fixmedins_code
JOIN prealert_result_items ri ON ri.jr_id = r.jr_id AND ri.vola_item_type = '1' AND ri.hilist_code = fe.hilist_code
JOIN fb ON fb.jr_id = r.jr_id;
CREATE OR REPLACE VIEW finding_prealert_evidence AS
SELECT finding_id,
       string_agg('事前提醒（' || strftime(alerted_at, '%Y-%m-%d %H:%M') || '，医嘱 ' || rx_id || '）：'
                  || CASE WHEN dspo_way = '1' THEN '医生选择继续执行，理由：' || coalesce(dspo_way_rea, '')
                          ELSE '医生选择返回修改医嘱' END,
                  '；' ORDER BY alerted_at, rx_id) AS text
FROM (SELECT DISTINCT finding_id, alerted_at, rx_id, dspo_way, dspo_way_rea FROM finding_prealert)
GROUP BY finding_id;
"""


def ensure(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA)


def drop_result_index(con: duckdb.DuckDBPyConnection) -> bool:
    """A database made before the ids were time-ordered has ``prealert_results.jr_id`` as its
    primary key, whose index grows by every answer: the table is rewritten without it (same rows,
    same columns; the caller's transaction makes it all or nothing). Returns whether it did."""
    if not db.drop_primary_key(con, "prealert_results"):
        return False
    con.execute(SCHEMA)  # the views over it, made again
    return True


def new_id() -> str:
    """A result id: 32 hex digits like a UUID, the first 12 the current time in milliseconds
    (as UUIDv7 lays them out), the other 20 random. Ids of later answers sort later, so a
    lookup by id reads one row group, not the whole table."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def evidence_for(con: duckdb.DuckDBPyConnection, finding_ids: list[str] | None = None) -> dict[str, str]:
    """The pre-alert sentence of each finding that has one (all findings when ``finding_ids`` is None).

    For the appeal export and any other place that shows a finding's evidence; the same text
    is in the view ``finding_prealert_evidence``.
    """
    if not has_views(con):
        return {}
    if finding_ids is None:
        rows = con.execute("SELECT finding_id, text FROM finding_prealert_evidence").fetchall()
    elif not finding_ids:
        return {}
    else:
        rows = con.execute(
            f"SELECT finding_id, text FROM finding_prealert_evidence WHERE finding_id IN ({', '.join('?' for _ in finding_ids)})",
            list(finding_ids),
        ).fetchall()
    return dict(rows)


def has_views(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = 'finding_prealert_evidence' AND NOT temporary"
        ).fetchall()[0][0]
    )


# ---------------------------------------------------------------------------- API keys


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def add_key(con: duckdb.DuckDBPyConnection, institution: str) -> str:
    """Make a new API key for an institution; only its hash is stored. Returns the key."""
    key = "mk_" + secrets.token_urlsafe(24)
    con.execute("INSERT INTO prealert_api_keys VALUES (?, ?, now()::TIMESTAMP)", [key_hash(key), institution])
    return key


def load_keys_file(path: str | Path) -> dict[str, str]:
    """A keys file (YAML or JSON): ``{institution code: key}`` (a key may also be a list of keys).

    Returns {sha256 of key: institution}. Raises ValueError naming the problem.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the keys file: {e}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: the keys file must map institution codes to keys, e.g. H001: <key>")
    out: dict[str, str] = {}
    for inst, keys in data.items():
        for k in keys if isinstance(keys, list) else [keys]:
            if not isinstance(k, str) or len(k) < 16:
                raise ValueError(f"{path}: institution {inst}: a key must be text of at least 16 characters")
            h = key_hash(k)
            if h in out and out[h] != str(inst):
                raise ValueError(f"{path}: one key is given to two institutions ({out[h]} and {inst})")
            out[h] = str(inst)
    return out


class KeyRing:
    """API key -> institution, from a keys file and the database.

    Keys are compared by their SHA-256 (a dict lookup: the hash of a guess says nothing about
    how close the guess was). A key found in the database is remembered for the life of the
    service, so a check costs no query; a key the service has not seen is looked up (keys
    made with ``medaudit serve-key`` while the service runs are found on their first use)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, file_keys: dict[str, str] | None = None):
        self.con = con
        self.known: dict[str, str] = dict(file_keys or {})

    def institution(self, key: str | None) -> str | None:
        if not key:
            return None
        h = key_hash(key)
        inst = self.known.get(h)
        if inst is None:
            cur = self.con.cursor()
            rows = cur.execute("SELECT fixmedins_code FROM prealert_api_keys WHERE key_sha256 = ?", [h]).fetchall()
            cur.close()
            if rows:
                inst = self.known[h] = rows[0][0]
        return inst

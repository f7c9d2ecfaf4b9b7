"""Tiny hand-built batches for tests: write only the fields a case is about.

    b = Batch()
    v = b.visit(gend="1", brdy="1980-01-01")              # a settled outpatient visit
    b.line(v, "002101030300000", hilist_name="子宫造影", pric="180")
    found = b.screen(tmp_path, RULES_YAML)                # -> list of finding dicts

Every visit gets a settlement (settled at its end) unless ``settled=False``; every line
defaults to 1 unit of 10.00 at the visit's start. ``Batch.write`` writes CSV files that the
real loader reads, so tests go through the same path as a bureau's extract.
"""

from __future__ import annotations

import atexit
import csv
import hashlib
import itertools
import shutil
import tempfile
import textwrap
from decimal import Decimal
from pathlib import Path

from medaudit import db
from medaudit.contract import TABLES
from medaudit.engine import screen
from medaudit.library import load_library
from medaudit.loader import load_batch

_ids = itertools.count(1)


class Batch:
    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {t: [] for t in TABLES}

    def visit(self, settled: bool = True, refunded: bool = False, **kw) -> str:
        n = next(_ids)
        row = {
            "mdtrt_id": f"V{n}",
            "psn_no": f"P{n}",
            "gend": "1",
            "brdy": "1980-05-05",
            "insutype": "310",
            "fixmedins_code": "H001",
            "fixmedins_name": "测试医院",
            "hosp_lv": "05",
            "med_type": "11",
            "begntime": "2026-03-02 08:00:00",
            "endtime": "2026-03-02 10:00:00",
            "adm_dept_codg": "D01",
            "chfpdr_code": "DR01",
        }
        row.update({k: v for k, v in kw.items()})
        self.rows["mdtrt_d"].append(row)
        if settled:
            self.rows["setl_d"].append(
                {
                    "setl_id": f"S{row['mdtrt_id']}",
                    "mdtrt_id": row["mdtrt_id"],
                    "psn_no": row["psn_no"],
                    "fixmedins_code": row["fixmedins_code"],
                    "setl_time": row.get("endtime") or row["begntime"],
                    "medfee_sumamt": "0",
                    "fund_pay_sumamt": "0",
                    "refd_setl_flag": "1" if refunded else "0",
                }
            )
        return row["mdtrt_id"]

    def _visit(self, mdtrt_id: str) -> dict:
        return next(v for v in self.rows["mdtrt_d"] if v["mdtrt_id"] == mdtrt_id)

    def line(self, mdtrt_id: str, code: str, cnt="1", pric="10", time: str | None = None, **kw) -> str:
        v = self._visit(mdtrt_id)
        sn = kw.pop("bkkp_sn", None) or f"L{next(_ids)}"
        list_type = "101" if code[:1] in ("X", "Z") else "301" if code[:1] == "C" else "201"
        row = {
            "bkkp_sn": sn,
            "mdtrt_id": mdtrt_id,
            "setl_id": f"S{mdtrt_id}",
            "psn_no": v["psn_no"],
            "fixmedins_code": v["fixmedins_code"],
            "fee_ocur_time": time or v["begntime"],
            "hilist_code": code,
            "hilist_name": kw.pop("hilist_name", f"项目{code[-4:]}"),
            "list_type": list_type,
            "chrgitm_lv": "01",
            "cnt": str(cnt),
            "pric": str(pric),
            "det_item_fee_sumamt": str(Decimal(str(cnt)) * Decimal(str(pric))),
            "bilg_dept_codg": "D01",
            "bilg_dr_code": "DR01",
        }
        row.update(kw)
        self.rows["fee_list_d"].append(row)
        return sn

    def refund(self, sn: str, cnt="-1", **kw) -> str:
        orig = next(r for r in self.rows["fee_list_d"] if r["bkkp_sn"] == sn)
        return self.line(
            orig["mdtrt_id"],
            orig["hilist_code"],
            cnt=cnt,
            pric=orig["pric"],
            time=orig["fee_ocur_time"],
            init_feedetl_sn=sn,
            **kw,
        )

    def diag(self, mdtrt_id: str, code: str, main: bool = True) -> None:
        self.rows["setl_list_diag_d"].append(
            {"mdtrt_id": mdtrt_id, "maindiag_flag": "1" if main else "0", "diag_code": code}
        )

    def add(self, table: str, **row) -> None:
        self.rows[table].append(row)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for table, rows in self.rows.items():
            if not rows and not TABLES[table].required:
                continue
            cols = list(TABLES[table].column_names)
            for r in rows:
                cols += [c for c in r if c not in cols]
            with open(folder / f"{table}.csv", "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=cols)
                w.writeheader()
                for r in rows:
                    w.writerow(r)
        return folder

    def screen(self, tmp_path: Path, rules_yaml: str, stage: str = "post_hoc", tables: dict[str, str] | None = None):
        """Load this batch into a fresh database, screen it, and return the findings with their lines.

        The load goes through :func:`loaded_db`: a test that screens one batch with several rule
        sets (or stages) loads it once and screens copies."""
        con = loaded_db(self, tmp_path / "t.duckdb", tmp_path / "batch")
        lib = write_rules(tmp_path / "rules", rules_yaml, tables)
        screen(con, load_library(lib), stage=stage)
        return findings(con)


#: loaded database files by the text of their batch (:func:`loaded_db`), in a folder of this process;
#: the oldest go beyond _LOADED_KEEP (about 2 MB each)
_LOADED: dict[str, Path] = {}
_LOADED_KEEP = 64
_LOADED_DIR: list[Path] = []


def loaded_db(batch: Batch, path: Path, folder: Path | None = None):
    """``db.connect(path)`` holding ``batch`` as ``load_batch(batch.write(folder), con)`` leaves
    it (``folder`` defaults to ``batch`` beside ``path``; it is written either way).

    The real loader runs once per test process for each distinct batch text; later calls copy that
    database file instead (a load costs about half a second of CPU, a copy a few ms). For fixtures
    that need loaded data, not for tests about loading: ``load_log`` names the folder of the first
    load. Give every visit an ``mdtrt_id`` and ``psn_no`` and every line a ``bkkp_sn``, or the
    generated ids make each call's text new (still correct, only not shared)."""
    folder = batch.write(folder or path.parent / "batch")
    digest = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    key = digest.hexdigest()
    if key not in _LOADED:
        if not _LOADED_DIR:
            _LOADED_DIR.append(Path(tempfile.mkdtemp(prefix="medaudit-tests-loaded-")))
            atexit.register(shutil.rmtree, _LOADED_DIR[0], True)
        cached = _LOADED_DIR[0] / f"{key[:32]}.duckdb"
        con = db.connect(cached)
        try:
            load_batch(folder, con)
        finally:
            con.close()
        _LOADED[key] = cached
        while len(_LOADED) > _LOADED_KEEP:
            _LOADED.pop(next(iter(_LOADED))).unlink(missing_ok=True)
    else:
        _LOADED[key] = _LOADED.pop(key)  # the most recently used last
    shutil.copyfile(_LOADED[key], path)
    return db.connect(path)


def write_rules(folder: Path, rules_yaml: str, tables: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(textwrap.dedent(rules_yaml), encoding="utf-8")
    for name, text in (tables or {}).items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def findings(con) -> list[dict]:
    """Findings as dicts, each with 'violating' and 'related' {bkkp_sn: claim} and 'carried'."""
    out = []
    rows = con.execute("SELECT * FROM findings ORDER BY rule_id, mdtrt_id, finding_id").fetchall()
    cols = [d[0] for d in con.description]
    for r in rows:
        f = dict(zip(cols, r))
        lines = con.execute(
            "SELECT bkkp_sn, role, claim, carried FROM finding_lines WHERE finding_id = ? ORDER BY bkkp_sn",
            [f["finding_id"]],
        ).fetchall()
        f["violating"] = {sn: c for sn, role, c, _ in lines if role == "violating"}
        f["related"] = sorted(sn for sn, role, _, _ in lines if role == "related")
        f["carried"] = {sn: k for sn, role, _, k in lines if role == "violating"}
        out.append(f)
    return out


def set_wall_clock(monkeypatch, when) -> None:
    """Test-only: make the computer's clock say ``when`` (``YYYY-MM-DD`` is 09:00 that day).

    Moves everything the real clock drives (today's deadlines, the audit log's ``event_at``);
    production code has no such switch (``deduct finalize --as-of`` is the logged way to judge
    on another day)."""
    from medaudit.hospital_loop import lifecycle

    monkeypatch.setattr(lifecycle, "wall_now", lifecycle.fixed_clock(when))

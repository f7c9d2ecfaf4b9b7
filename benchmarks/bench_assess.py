"""Benchmark: ``medaudit assess`` over a year of final statements for N institutions.

    .venv/bin/python benchmarks/bench_assess.py                        # 200 institutions
    .venv/bin/python benchmarks/bench_assess.py --institutions 50 --findings 20 --settlements 100

The sample generator draws a fixed handful of institutions over a few months, so the year is
synthesised in SQL, straight into the tables assess reads: per institution and month
``--settlements`` settlements (``setl_d``, fund payment 500-5,500) and ``--findings`` final
findings across the six natures (about 1 in 400 of the institution-years gets a 虚构服务 one,
so vetoes occur), each in its month's deduction statement; levels from ``mdtrt_d.hosp_lv``;
a tenth of the findings appealed, a third of those overturned. Then times, with wall and CPU
seconds: the assessment (measures, scores, storing the run), the workbook and the HTML page,
credit entries for every statement (``credit update``) and one ``watch update``. Results go to
benchmarks/assess_results.json (one entry per size, replaced when re-run). The machine is
shared: CPU seconds and the load average are recorded next to the wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_screen import cpu_s, peak_rss_mb  # noqa: E402

from medaudit import db  # noqa: E402
from medaudit.supervision import assess as asm, assess_report, credit, scheme as schm, watch  # noqa: E402

NATURES = ["超支付范围", "超支付标准", "重复收费", "不合理诊疗", "不合理收费", "虚构服务"]


def synthesize(con, n_inst: int, n_setl: int, n_find: int) -> dict:
    """A year of settlements and final statements, generated in SQL (constants bound with ?)."""
    con.execute("BEGIN TRANSACTION")
    con.execute(
        """INSERT INTO mdtrt_d (mdtrt_id, psn_no, fixmedins_code, fixmedins_name, hosp_lv, begntime)
                   SELECT 'V' || i, 'P' || i, 'H' || lpad(CAST(i AS VARCHAR), 4, '0'), '医院' || i,
                          ['01', '05', '08'][1 + i % 3], TIMESTAMP '2026-01-01'
                   FROM range(?) t(i)""",
        [n_inst],
    )
    con.execute(
        """INSERT INTO setl_d (setl_id, mdtrt_id, psn_no, fixmedins_code, setl_time, medfee_sumamt, fund_pay_sumamt,
                                       refd_setl_flag)
                   SELECT 'S' || i || '-' || m || '-' || k, 'V' || i, 'P' || k, 'H' || lpad(CAST(i AS VARCHAR), 4, '0'),
                          TIMESTAMP '2026-01-01' + to_months(m) + to_days(k % 28),
                          1000, CAST(500 + (hash(i, m, k) % 5000) AS DECIMAL(18,2)), '0'
                   FROM range(?) a(i), range(12) b(m), range(?) c(k)""",
        [n_inst, n_setl],
    )
    con.execute(
        """INSERT INTO findings (finding_id, rule_id, rule_version, rule_name, rule_type, stage, severity, nature,
                                         fixmedins_code, dr_code, psn_no, mdtrt_id, period, flagged_amt, claimed_amt,
                                         deduction_amt, status)
                   SELECT 'F' || i || '-' || m || '-' || k, 'R-' || (k % 6), '1', '规则', 'x', 'post_hoc', 'violation',
                          CASE WHEN k = 0 AND hash(i, m) % 400 = 0 THEN '虚构服务' ELSE (?)[1 + (k % 5)] END,
                          'H' || lpad(CAST(i AS VARCHAR), 4, '0'), 'D' || (k % 7), 'P' || (hash(i, k) % 5000),
                          'V' || i, strftime(DATE '2026-01-01' + to_months(m), '%Y-%m'),
                          CAST(10 + hash(i, m, k) % 900 AS DECIMAL(18,2)), CAST(10 + hash(i, m, k) % 900 AS DECIMAL(18,2)),
                          CAST(10 + hash(i, m, k) % 900 AS DECIMAL(18,2)), 'expired'
                   FROM range(?) a(i), range(12) b(m), range(?) c(k)""",
        [NATURES[:5], n_inst, n_find],
    )
    con.execute("""INSERT INTO deduction_statements (statement_id, period, fixmedins_code, seq, created_at, created_by,
                                                     n_findings, n_lines, total)
                   SELECT row_number() OVER (ORDER BY fixmedins_code, period), period, fixmedins_code, 1,
                          CAST(strptime(period || '-28', '%Y-%m-%d') AS TIMESTAMP) + INTERVAL 1 MONTH, 'bench',
                          count(*), count(*), sum(deduction_amt)
                   FROM findings GROUP BY period, fixmedins_code""")
    con.execute("""INSERT INTO deduction_items (statement_id, finding_id, status, amount)
                   SELECT s.statement_id, f.finding_id, f.status, f.deduction_amt FROM findings f
                   JOIN deduction_statements s ON s.period = f.period AND s.fixmedins_code = f.fixmedins_code""")
    con.execute("""INSERT INTO finding_events (finding_id, event_at, actor, action, from_status, to_status, reason, attachments)
                   SELECT finding_id, TIMESTAMP '2026-06-01', 'h', 'appeal', 'pending_appeal', 'appealed', 'r', '[]'
                   FROM findings WHERE hash(finding_id) % 10 = 0
                   UNION ALL
                   SELECT finding_id, TIMESTAMP '2026-06-02', 'b', 'overturn', 'appealed', 'overturned', 'r', '[]'
                   FROM findings WHERE hash(finding_id) % 10 = 0 AND hash(finding_id || 'w') % 3 = 0""")
    con.execute("COMMIT")
    q = lambda s: con.execute(s).fetchall()[0][0]  # noqa: E731
    return {
        "settlements": q("SELECT count(*) FROM setl_d"),
        "findings": q("SELECT count(*) FROM findings"),
        "statements": q("SELECT count(*) FROM deduction_statements"),
        "appeal_events": q("SELECT count(*) FROM finding_events"),
    }


def timed(fn):
    w, c = time.perf_counter(), cpu_s()
    out = fn()
    return out, round(time.perf_counter() - w, 2), round(cpu_s() - c, 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--institutions", type=int, default=200)
    ap.add_argument("--settlements", type=int, default=400, help="per institution and month")
    ap.add_argument("--findings", type=int, default=40, help="final findings per institution and month")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        con = db.connect(Path(tmp) / "bench.duckdb")
        sizes, gen_wall, _ = timed(lambda: synthesize(con, a.institutions, a.settlements, a.findings))
        sch = schm.load()
        res, assess_wall, assess_cpu = timed(lambda: asm.assess(con, sch, 2026, by="bench"))
        again = asm.assess(con, sch, 2026, save=False)
        assert again.result_hash == res.result_hash, "the same scheme on the same data gave another result"
        _, xlsx_wall, xlsx_cpu = timed(lambda: assess_report.write_xlsx(res, con, Path(tmp) / "a.xlsx"))
        _, html_wall, html_cpu = timed(lambda: assess_report.write_html(res, con, Path(tmp) / "a.html"))
        n_entries, credit_wall, credit_cpu = timed(lambda: credit.update(con, "bench"))
        moved, watch_wall, watch_cpu = timed(lambda: watch.update(con, dt.date(2027, 1, 31), "bench"))
        entry = {
            "institutions": a.institutions,
            **sizes,
            "generate_s": gen_wall,
            "assess_wall_s": assess_wall,
            "assess_cpu_s": assess_cpu,
            "xlsx_wall_s": xlsx_wall,
            "xlsx_cpu_s": xlsx_cpu,
            "html_wall_s": html_wall,
            "html_cpu_s": html_cpu,
            "credit_update_wall_s": credit_wall,
            "credit_update_cpu_s": credit_cpu,
            "credit_entries": n_entries,
            "watch_update_wall_s": watch_wall,
            "watch_update_cpu_s": watch_cpu,
            "watch_entered": len(moved.entered),
            "vetoed": sum(1 for r in res.results if r.vetoed),
            "peak_rss_mb": round(peak_rss_mb()),
            "load_avg": os.getloadavg()[0],
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "when": dt.datetime.now().isoformat(timespec="seconds"),
        }
        con.close()
    print(json.dumps(entry, ensure_ascii=False, indent=1))
    out = ROOT / "benchmarks" / "assess_results.json"
    old = json.loads(out.read_text()) if out.exists() else []
    old = [
        e
        for e in old
        if (e["institutions"], e["settlements"], e["findings"])
        != (entry["institutions"], entry["settlements"], entry["findings"])
    ]
    out.write_text(json.dumps(old + [entry], ensure_ascii=False, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

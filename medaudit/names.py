"""Names beside codes in the workbooks and reports: ``心血管内科 (D01)``.

The extracts carry department and doctor codes without names (the data contract has no name
columns for them) and the institution's name in ``mdtrt_d.fixmedins_name`` when the hospital
filled it. A name comes from the batch where it has one (the institution's
``fixmedins_name``), else from the bureau's reference table ``code_names`` (a knowledge table
a batch may hold, see :mod:`medaudit.contract`): ``kind`` dept / doctor / institution,
``code``, ``code_name``, and ``fixmedins_code`` when the code is that institution's own (its
row wins over a row with an empty ``fixmedins_code``, which holds for every institution). A
code with no name anywhere is shown as the code alone. Screening never reads names.
"""

from __future__ import annotations

import duckdb


def label(name, code) -> str:
    """``名称 (code)``; the code alone when there is no name (or the name is the code)."""
    code = "" if code is None else str(code)
    name = "" if name is None else str(name).strip()
    if not code:
        return name
    return f"{name} ({code})" if name and name != code else code


class Names:
    """Every name the database knows, read once (the table is small)."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._ref: dict[tuple[str, str, str], str] = {}
        # a database made before the table existed (opened read-only, say) simply has no names
        has_table = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'code_names' "
            "AND schema_name = 'main' AND NOT temporary"
        ).fetchall()[0][0]
        rows = (
            con.execute("SELECT kind, code, code_name, coalesce(fixmedins_code, '') FROM code_names").fetchall()
            if has_table
            else []
        )
        for kind, code, name, inst in rows:
            self._ref[(kind, code, inst)] = name
        self._inst = dict(
            con.execute(
                """SELECT fixmedins_code, any_value(fixmedins_name) FROM mdtrt_d
               WHERE nullif(trim(fixmedins_name), '') IS NOT NULL GROUP BY 1"""
            ).fetchall()
        )

    def name(self, kind: str, code, institution=None) -> str:
        if code is None or code == "":
            return ""
        if kind == "institution" and self._inst.get(code):
            return self._inst[code]
        return self._ref.get((kind, code, institution or ""), self._ref.get((kind, code, ""), ""))

    def institution(self, code) -> str:
        return label(self.name("institution", code), code)

    def dept(self, institution, code) -> str:
        return label(self.name("dept", code, institution), code)

    def doctor(self, institution, code) -> str:
        return label(self.name("doctor", code, institution), code)

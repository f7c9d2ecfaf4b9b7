"""Named inputs (issue 10): every rule type's query reads only the tables it is handed.

A type's query names each table it reads in braces (``{lines}``, ``{visits}`` ...) and the
engine formats it with the tables it hands over (:func:`medaudit.engine.type_names`). Here each
query is formatted with every input renamed and parsed by DuckDB; a table read by its bare name
(``FROM lines``) would read whatever another module left on the connection under that name,
and fails this test by name.
"""

import json

import duckdb
import pytest

from medaudit import engine
from medaudit.types import REGISTRY
from medaudit.types.base import INPUTS

#: the engine's own tables a query may read besides its inputs: none (its rules come as ``{r}``,
#: their parameters as ``{p}``, its matched lines as ``{m}``)
ENGINE_TABLES: set[str] = set()


def tables_read(sql: str) -> set[str]:
    """The base tables a query reads (lower case), CTE names of the query excluded."""
    con = duckdb.connect()
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    assert not tree.get("error"), tree.get("error_message")
    out: set[str] = set()

    def walk(node, scope: frozenset[str]) -> None:
        if isinstance(node, list):
            for v in node:
                walk(v, scope)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if isinstance(kind, str) and kind.endswith("_NODE"):
            inner = scope
            for entry in (node.get("cte_map") or {}).get("map") or []:
                inner = inner | {str(entry.get("key")).lower()}  # recursive CTEs see themselves
                walk(entry.get("value"), inner)
            if node.get("cte_name"):
                inner = inner | {str(node["cte_name"]).lower()}
            for k, v in node.items():
                if k != "cte_map":
                    walk(v, inner)
            return
        if kind == "BASE_TABLE" and "sample" in node:
            name = str(node["table_name"]).lower()
            if name not in scope:
                out.add(name)
            return
        for v in node.values():
            walk(v, scope)

    walk(tree.get("statements"), frozenset())
    return out


def renamed(rt) -> dict[str, str]:
    names = engine.type_names(rt, **{t: f"in_{t}" for t in INPUTS})
    # the matched lines, the parameter table and the rules as plain names (as pre-alert inlines {m})
    names["m"], names["p"], names["r"] = f"in_m_{rt.name}", f"in_p_{rt.name}", f"in_r_{rt.name}"
    return names


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_type_reads_only_the_tables_it_is_handed(name):
    rt = REGISTRY[name]
    names = renamed(rt)
    if rt.compose is not None:
        sql = rt.compose(names, None)
    else:
        sql = rt.sql(names)
    read = tables_read(sql)
    handed = set(names.values()) | ENGINE_TABLES
    extra = {"sql_rule_rows"} if name == "sql" else set()  # filled by the type's own prepare step
    bare = read - handed - extra
    assert not bare, f"{name} reads {sorted(bare)} by its bare name; name it in braces ({{lines}}) instead"


def test_the_check_sees_a_bare_name():
    assert tables_read("WITH a AS (SELECT * FROM lines) SELECT * FROM a JOIN in_visits v USING (x)") == {
        "lines",
        "in_visits",
    }
    assert tables_read("SELECT 1 FROM x WHERE EXISTS (SELECT 1 FROM diag d WHERE d.k = x.k)") == {"x", "diag"}


def test_an_unknown_input_is_refused():
    with pytest.raises(ValueError, match="not a table a rule type reads: linez"):
        engine.type_names(REGISTRY["duplicate_line"], linez="x")

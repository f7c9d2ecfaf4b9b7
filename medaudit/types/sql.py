"""自定义 SQL sql: the escape hatch, a read-only SELECT that names the lines to flag.

**What it flags.** The screened lines whose `bkkp_sn` the rule's `query` returns. The query
is one read-only SELECT over the canonical tables: `lines` (the stage's screened lines, refunds
netted, visit attributes joined: see `medaudit rules explain`), `visits`, `diag`, `deaths` and
the loaded contract tables (`mdtrt_d`, `setl_d`, `fee_list_d`, `setl_list_diag_d`,
`setl_list_oprn_d`, `psn_death`, `purchases`, `hilist`). It returns a column `bkkp_sn` and,
optionally:

- `amount`: the deduction the rule claims on the line, else the line's deductible amount.
  An amount is never more than the line's deductible nor below 0;
- `evidence`: a sentence added to the line's evidence.

A line the query returns several times counts once (the largest amount; each distinct
evidence sentence). Lines that are not screened in this stage (refunded, fully refunded, of
another stage) and lines whose deductible is 0 are not flagged, as for every line-level type.
The rule's validity and scope are applied to each line (its fee date, med_type, level,
institution).

**Refused at load time**, with a message naming the rule: anything but a single statement;
any statement but a SELECT (INSERT, UPDATE, DELETE, ATTACH, COPY, PRAGMA, SET, CREATE ...); a
SELECT that writes (a CTE holding an INSERT, UPDATE or DELETE: DuckDB runs those); a table
that is not a canonical one (findings, files named as tables, other databases); table
functions that read outside the database (`read_csv`, `read_parquet`, `glob`, `query` ...;
`unnest`, `range` and `generate_series` are allowed). The check walks DuckDB's own parse
tree (`duckdb.extract_statements` and `json_serialize_sql`), not the text. A query that refers
to a missing column fails the screening with the rule's id and DuckDB's message.

**How it runs.** Like every type, once for all its rules: each rule's query becomes a subquery
tagged with its rule key, and the subqueries are joined with UNION ALL into one statement,
which then meets `lines` in one set-based join. This is the honest set-based form for rules
whose logic is their own SQL.

**Why it matters.** A bureau meets new schemes faster than rule types are written; an
analyst's query (for instance from a special inspection, 专项检查) can run in the same
screening, with the same findings, evidence, money and appeal as every other rule.

**Deduction.** `whole_line` (the line's deductible) or the query's `amount`. Default severity
`suspect`: a hand-written query goes to review unless its rule says `severity: violation`.

**Example.**

```yaml
- id: R-SQL-001
  version: 1
  name: 门诊收取住院诊查费
  type: sql
  nature: 不合理收费
  params:
    query: |
      SELECT bkkp_sn, '门诊就诊不应收取住院诊查费' AS evidence
      FROM lines WHERE NOT inpatient AND hilist_code = '001102000010000'
```

gives `项目【住院诊查费】(001102000010000) 2026-03-02 收费 1 次，金额 20.00 元，门诊就诊不应收取住院诊查费`.
"""

from __future__ import annotations

import json

import duckdb

from ..contract import TABLES
from .base import LINE_FACT, Param, RuleType, rule_applies

#: what a rule's query may read
CANONICAL_TABLES = ("lines", "visits", "diag", "deaths", *TABLES)
#: table functions that only compute (everything else may read files or other databases)
SAFE_TABLE_FUNCTIONS = ("unnest", "range", "generate_series")
#: query nodes that only read
READ_NODES = ("SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE")


def _walk(node, found: dict) -> None:
    if isinstance(node, dict):
        t = node.get("type")
        if isinstance(t, str) and t.endswith("_NODE") and t not in READ_NODES:
            found["writes"].append(t.removesuffix("_QUERY_NODE").removesuffix("_NODE"))
        if t == "BASE_TABLE":
            found["tables"].append((node.get("catalog_name") or "", node.get("schema_name") or "", node.get("table_name")))
        if t == "TABLE_FUNCTION":
            fn = (node.get("function") or {}).get("function_name")
            found["functions"].append(fn)
        cte = node.get("cte_map")
        if isinstance(cte, dict):
            found["ctes"].extend(str(e.get("key", "")).lower() for e in cte.get("map") or [])
        for v in node.values():
            _walk(v, found)
    elif isinstance(node, list):
        for v in node:
            _walk(v, found)


def check_query(query: str) -> str | None:
    """Why ``query`` is not one read-only SELECT over the canonical tables (None when it is)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        return f"params.query is not valid SQL: {str(e).splitlines()[0]}"
    if len(statements) != 1:
        return f"params.query must be a single SELECT, got {len(statements)} statements"
    kind = statements[0].type.name
    if kind != "SELECT":
        return f"params.query must be a read-only SELECT; {kind} statements are refused"
    con = duckdb.connect()
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchall()[0][0])
    finally:
        con.close()
    if tree.get("error"):
        return f"params.query cannot be checked: {tree.get('error_message', 'DuckDB could not serialise it')}"
    found: dict[str, list] = {"writes": [], "tables": [], "functions": [], "ctes": []}
    _walk(tree.get("statements"), found)
    if found["writes"]:
        return f"params.query must only read, but it holds a writing {found['writes'][0]} (a CTE that writes)"
    for fn in found["functions"]:
        if str(fn).lower() not in SAFE_TABLE_FUNCTIONS:
            return f"params.query may read only the canonical tables, not the table function {fn}()"
    for catalog, schema, table in found["tables"]:
        name = str(table).lower()
        if catalog or schema.lower() not in ("", "main", "temp"):
            return f"params.query may read only the canonical tables, not {'.'.join(x for x in (catalog, schema, table) if x)}"
        if name not in CANONICAL_TABLES and name not in found["ctes"]:
            return (f"params.query may read only the canonical tables ({', '.join(CANONICAL_TABLES)}), "
                    f"not {table}")
    return None


def _validate(params: dict) -> str | None:
    q = params.get("query")
    return check_query(q) if q else None


def _strip(query: str) -> str:
    """The query without its closing semicolons (comments after them included), to nest it."""
    raw = query.encode("utf-8")  # the tokenizer's positions are byte offsets
    tokens = [(pos, kind.name) for pos, kind in duckdb.tokenize(query)]
    while tokens and (tokens[-1][1] == "comment" or raw[tokens[-1][0]:].lstrip().startswith(b";")):
        if tokens[-1][1] != "comment":
            raw = raw[: tokens[-1][0]]
        tokens.pop()
    return raw.decode("utf-8")


def compose(names: dict[str, str], con) -> str:
    """One statement for all rules of the type: their queries, tagged, under UNION ALL."""
    if con is None:
        raise RuntimeError("the sql rule type builds its query from the rules in the database: pass the connection")
    rules = con.execute(
        f"SELECT p.rule_key, r.rule_id, p.query FROM {names['p']} p JOIN r_all r USING (rule_key) ORDER BY p.rule_key"
    ).fetchall()
    parts = []
    for key, rule_id, query in rules:
        q = _strip(query)
        try:
            cols = {c.lower() for c in con.sql(q).columns}
        except duckdb.Error as e:
            raise RuntimeError(f"rule {rule_id}: its query failed: {str(e).splitlines()[0]}") from None
        if "bkkp_sn" not in cols:
            raise RuntimeError(f"rule {rule_id}: its query must return a column bkkp_sn (it returns {', '.join(sorted(cols))})")
        amount = "CAST(q.amount AS DECIMAL(38,12))" if "amount" in cols else "CAST(NULL AS DECIMAL(38,12))"
        evidence = "CAST(q.evidence AS VARCHAR)" if "evidence" in cols else "CAST(NULL AS VARCHAR)"
        parts.append(f"SELECT {key} AS rule_key, CAST(q.bkkp_sn AS VARCHAR) AS bkkp_sn, {amount} AS amount, "
                     f"{evidence} AS evidence FROM (\n{q}\n) q")
    union = "\nUNION ALL\n".join(parts)
    return f"""
        WITH raw AS ({union}),
        h AS (SELECT rule_key, bkkp_sn, max(amount) AS amount, bool_or(amount IS NOT NULL) AS has_amount,
                     array_to_string(list_sort(list(DISTINCT evidence) FILTER (WHERE evidence IS NOT NULL)), '；') AS evidence
              FROM raw WHERE bkkp_sn IS NOT NULL GROUP BY rule_key, bkkp_sn),
        x AS (
            SELECT h.rule_key, h.evidence, h.has_amount, l.*,
                   CASE WHEN h.has_amount THEN greatest(least(h.amount, l.deductible), 0) ELSE l.deductible END AS claim
            FROM h JOIN lines l ON l.bkkp_sn = h.bkkp_sn
            JOIN r_all r ON r.rule_key = h.rule_key
            WHERE l.deductible > 0 AND {rule_applies('r', 'l.fee_date', 'l')})
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role, claim, '' AS ev_head,
               item_ref(list_type, hilist_name, hilist_code) || ' ' || {LINE_FACT}
                   || coalesce('，' || nullif(evidence, ''), '')
                   || CASE WHEN has_amount THEN '，按规则计 ' || yuan(claim) || ' 元' ELSE '' END AS ev_line
        FROM x
    """


RULE_TYPE = RuleType(
    name="sql",
    title="自定义 SQL",
    nature="其他",
    mode="whole_line",
    doc=__doc__,
    items="none",
    default_severity="suspect",
    validate=_validate,
    params=(Param("query", "str", "one read-only SELECT returning bkkp_sn (and optionally amount, evidence)",
                  required=True),),
    query="",
    compose=compose,
)

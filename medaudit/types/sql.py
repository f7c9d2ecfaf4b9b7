"""自定义 SQL sql: the escape hatch, a read-only SELECT that names the lines to flag.

**What it flags.** The screened lines whose `bkkp_sn` the rule's `query` returns. The query
is one read-only SELECT over the canonical tables: `lines` (the stage's screened lines, refunds
netted, visit attributes joined: see `medaudit rules explain`), `visits`, `diag`, `deaths` and
the loaded contract tables (`mdtrt_d`, `setl_d`, `fee_list_d`, `setl_list_diag_d`,
`setl_list_oprn_d`, `psn_death`, `purchases`, `hilist`, `code_names`). It returns a column `bkkp_sn` and,
optionally:

- `amount`: the deduction the rule claims on the line, else the line's deductible amount.
  An amount is never more than the line's deductible nor below 0;
- `evidence`: a sentence added to the line's evidence.

A line the query returns several times counts once (the largest amount; each distinct
evidence sentence). Lines that are not screened in this stage (refunded, fully refunded, of
another stage) and lines whose deductible is 0 are not flagged, as for every line-level type.
The rule's validity and scope are applied to each line (its fee date, med_type, level,
institution).

**Refused**, at load time (`medaudit rules check`, every load of the library) and again by
the screening and pre-alert's SQL path, by one function (`check_query`) and with one message
naming the rule and the offending name, e.g. `rule R-SQL-009: params.query: table
prealert_api_keys is not one a sql rule may read (allowed: lines, visits, ...)`. The check walks
DuckDB's own parse tree (`duckdb.extract_statements`, `json_serialize_sql`), not the text:

- anything but a single statement, and any statement but a SELECT (INSERT, UPDATE, DELETE,
  ATTACH, COPY, PRAGMA, SET, INSTALL, LOAD, EXPORT, CALL, CREATE, EXPLAIN ...); a PIVOT expands
  to several statements and is refused with them;
- a SELECT that writes (a CTE holding an INSERT, UPDATE or DELETE: DuckDB runs those);
- a table that is not one of the canonical tables above, by its bare name. A CTE's name counts
  only inside the query that defines it (its later CTEs, its body and subqueries), so
  `... FROM prealert_api_keys WHERE EXISTS (WITH prealert_api_keys AS (...) ...)` is refused;
  a name with a schema or database (`main.fee_list_d`, `information_schema.tables`), a file
  named as a table (`FROM 'x.csv'`), a name in other than ASCII letters (a look-alike is
  another name), DESCRIBE/SUMMARIZE and time travel (`AT`) are refused;
- a table function other than `unnest`, `range` and `generate_series` (`read_csv`, `read_text`,
  `glob`, `query`, `query_table`, `duckdb_tables()`, `duckdb_settings()`, table macros ...);
- a function that is not a built-in scalar, aggregate or window function of DuckDB or one of
  the project's macros (`med_type_cn`, `yuan` ...), or that reads or changes something outside
  the rows: settings, variables, environment, secrets, the session, the catalog (`current_setting`,
  `getvariable`, `getenv`, `which_secret`, `pg_catalog` macros such as `pg_get_viewdef`),
  sequences, the log (the list is `DENIED_FUNCTIONS`, taken from `duckdb_functions()`), or is
  named with a schema.

A query that refers to a missing column fails the screening with the rule's id and DuckDB's message.

**Nightly runs.** A nightly `medaudit screen` screens what the new batches touch. A query may
compare anything loaded, so by default (`reach: all`) it runs over every screened line each
night. A query that judges each visit on its own lines (like the example below) says
`reach: visit`: it is then given the lines of the touched visits only, and costs what the
night's data costs.

**How it runs.** Each rule's query runs alone in a **sandbox**: a separate in-memory DuckDB
database with the project's macros, into which the screening hands, as Arrow tables, only the
canonical tables the sql rules read, as the screening connection sees them, and of those only
the columns the queries name (all of them for a `*`, `COLUMNS()`, a NATURAL join, a renamed
column list or a whole-row reference). Before any query runs the sandbox sets
`autoinstall_known_extensions` and `autoload_known_extensions` off, `allow_community_extensions`
off, `enable_external_access = false` (no file, no network, no extension, no ATTACH/COPY, no
Python-variable scans) and `lock_configuration = true` (no SET can undo that). So even a query
the check missed can read nothing but those tables: not the medaudit database (findings, API
keys, other batches' lines at pre-alert), not a file. The rows (rule_key, bkkp_sn, amount,
evidence) come back as `sql_rule_rows`, which the type's one statement then meets with `lines`
in one set-based join. A sandbox per screening run (pre-alert: one per session, kept).

Why this over the other options DuckDB offers (see "Securing DuckDB" in its docs):
`enable_external_access`, `disabled_filesystems` and `allowed_directories` only govern files
and are database-wide, and the screening connection needs its files and its other tables; a
separate database is the only way for a query to see no table but the ones given to it.
Cost: the sandbox holds a copy of the named columns only. For R-SQL-001 (4 of the 42 columns
of `lines`): 0.3 MB on the committed sample (6,694 lines; all columns would be 3.1 MB) and
8.6 MB on a generated batch of 195,084 lines (`sample generate --visits 10000 --seed 1`; all
columns 90.6 MB), about 45 bytes a line, so some 450 MB at 10M lines where all columns would
take some 4.6 GB. Time: opening the sandbox takes tens of milliseconds, the copy and the run
a few hundred milliseconds at 200k lines (measured on a loaded 2-core machine).

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
    reach: visit
    query: |
      SELECT bkkp_sn, '门诊就诊不应收取住院诊查费' AS evidence
      FROM lines WHERE NOT inpatient AND hilist_code = '001102000010000'
```

gives `项目【住院诊查费】(001102000010000) 2026-03-02 收费 1 次，金额 20.00 元，门诊就诊不应收取住院诊查费`.
"""

from __future__ import annotations


#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """自定义 SQL：兜底方式，一条只读 SELECT 查询指出要标记的明细。

**查什么。** 规则的 `query` 返回的 `bkkp_sn` 对应的被审核明细。查询是一条只读 SELECT，只能读规范表：`lines`（本环节被审核的明细，已冲减退费并关联就诊属性）、`visits`、`diag`、`deaths` 以及已加载的数据契约表（`mdtrt_d`、`setl_d`、`fee_list_d`、`setl_list_diag_d`、`setl_list_oprn_d`、`psn_death`、`purchases`、`hilist`、`code_names`）。它返回 `bkkp_sn` 列，还可以返回：

- `amount`：规则对该明细主张的扣款，没有时为明细的可扣金额；不超过可扣金额，不低于 0；
- `evidence`：加到该明细证据中的一句话。

同一明细被返回多次只算一次（取最大金额；每句不同的证据都保留）。本环节不被审核的明细（已退费、全额退费、属于其他环节）和可扣金额为 0 的明细不报，与其他明细级类型相同。规则的有效期和适用范围按每条明细判断（其收费日期、就诊类型、机构等级、机构）。

**拒绝的查询。** 在加载规则库时（`medaudit rules check` 以及每次加载）以及审核和事前提醒的 SQL 路径中，由同一个函数（`check_query`）检查，报错写明规则和违规的名称。检查基于 DuckDB 自己的语法树而不是文本：多条语句、非 SELECT 语句、写数据的 CTE、规范表以外的表（包括带 schema 的名称、文件当表、非 ASCII 名称、DESCRIBE/SUMMARIZE、时间旅行 `AT`）、`unnest`/`range`/`generate_series` 以外的表函数、DuckDB 内置函数和本项目宏以外的函数，或读取/修改行以外内容的函数（设置、变量、环境、密钥、会话、目录、序列、日志）都被拒绝。引用不存在的列时，审核失败并给出规则编号和 DuckDB 的报错。

**运行方式。** 每条规则的查询在**沙箱**中单独运行：一个独立的内存 DuckDB 数据库，只装入 SQL 规则读取的规范表中被查询用到的列，并关闭外部访问、扩展自动加载，锁定配置。因此即使检查漏掉了某个查询，它也只能读到这些表，读不到 medaudit 数据库本身（问题、API 密钥、其他批次）或任何文件。沙箱的设计理由和内存开销见英文说明（`--lang en`）。

**每晚运行。** 每晚的 `medaudit screen` 只审核新批次涉及的内容。查询可能比较任何已加载的数据，所以默认（`reach: all`）每晚对全部被审核明细运行；只按每次就诊自身明细判断的查询（如下例）可写 `reach: visit`，此时只拿到被涉及就诊的明细，代价与当晚数据量相当。

**为什么。** 新的违规手法出现得比规则类型开发得快；分析人员的查询（例如专项检查）可以在同一次审核中运行，与其他规则一样有问题、证据、金额和申诉。

**扣款。** `whole_line`（明细的可扣金额）或查询给出的 `amount`。默认严重程度 `suspect`：手写的查询进入复核，除非规则写明 `severity: violation`。
"""

import functools
import json
import threading
from dataclasses import dataclass, field

import duckdb

from .. import db as dbm
from .. import resources
from ..contract import TABLES
from .base import LINE_FACT, Param, Reach, RuleType, claim, rule_applies

#: what a rule's query may read: the screened views and the loaded contract tables, by their bare name
CANONICAL_TABLES = ("lines", "visits", "diag", "deaths", *TABLES)
#: table functions that only compute (every other one reads files, other databases, the catalog or
#: settings, runs SQL of its own — query(), query_table(), json_execute_serialized_sql() — or writes)
SAFE_TABLE_FUNCTIONS = ("unnest", "range", "generate_series")
#: query nodes that only read (any other ``*_NODE`` in the tree is a write inside a CTE)
READ_NODES = ("SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE")
#: table references the check understands; others (SHOW_REF behind DESCRIBE/SUMMARIZE, PIVOT, ...) are refused
TABLE_REFS = ("BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION", "EXPRESSION_LIST", "EMPTY")
#: Built-in functions a rule may not call although ``duckdb_functions()`` lists them as scalar,
#: aggregate or macro. Derived by going through that list (DuckDB 2.0) for every function whose
#: result depends on something other than its arguments and the rows, or that changes state:
#: settings, variables, secrets, the session, the catalog (every pg_catalog macro, and the macros
#: whose definition holds a SELECT over duckdb_*(): format_type, get_block_size, pg_get_viewdef,
#: pg_get_constraintdef), sequences, the random seed, the log, sleeping, and SQL (de)serialising.
#: getenv (a CLI function) is listed should it appear. A function that is not in the list of a
#: plain connection at all (an extension's, autoloaded on first use) is refused too.
DENIED_FUNCTIONS = frozenset(
    {
        "getenv",
        "current_setting",
        "getvariable",
        "which_secret",
        "current_catalog",
        "current_database",
        "current_schema",
        "current_schemas",
        "current_query",
        "current_query_id",
        "current_connection_id",
        "current_transaction_id",
        "txid_current",
        "current_user",
        "current_role",
        "session_user",
        "user",
        "in_search_path",
        "version",
        "format_type",
        "get_block_size",
        "nextval",
        "currval",
        "setval",
        "setseed",
        "write_log",
        "sleep_ms",
        "pg_sleep",
        "json_serialize_sql",
        "json_deserialize_sql",
        "parse_duckdb_log_message",
    }
)


class Refused(ValueError):
    """A rule's query is not one the sql type runs; the message names what is wrong."""


@functools.lru_cache(maxsize=1)
def allowed_functions() -> frozenset[str]:
    """The scalar, aggregate and window functions (and the project's macros) a rule may call."""
    con = duckdb.connect(":memory:")
    try:
        dbm.install_macros(con)
        rows = con.execute(
            "SELECT DISTINCT lower(function_name), schema_name FROM duckdb_functions() "
            "WHERE function_type IN ('scalar', 'aggregate', 'window', 'macro')"
        ).fetchall()
    finally:
        con.close()
    return frozenset(
        name
        for name, schema in rows
        if schema != "pg_catalog" and name not in DENIED_FUNCTIONS and not name.startswith("__")
    )


_PARSER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _parser() -> duckdb.DuckDBPyConnection:
    """An empty in-memory connection that only serialises queries (opening one costs ~20-70 ms)."""
    return duckdb.connect(":memory:")


@dataclass
class Reads:
    """What a query reads: canonical tables, and the column names it mentions (for pruning)."""

    tables: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)  # every identifier of a column reference, lower case
    whole: bool = False  # a * / COLUMNS(), a NATURAL join, renamed columns or a row reference: all columns
    aliases: set[str] = field(default_factory=set)


def _allowed_list() -> str:
    return ", ".join(CANONICAL_TABLES)


def _table(node: dict, scope: frozenset[str], reads: Reads) -> None:
    parts = [node.get("catalog_name") or "", node.get("schema_name") or "", node.get("table_name") or ""]
    shown = ".".join(p for p in parts if p)
    name = parts[2]
    if parts[0] or parts[1]:
        raise Refused(
            f"table {shown} is not one a sql rule may read: name it without a schema or "
            f"database (allowed: {_allowed_list()})"
        )
    # DuckDB folds only ASCII letters: a look-alike letter makes another name (then a file)
    low = name.lower() if name.isascii() else None
    if node.get("at_clause"):
        raise Refused(f"table {shown} is read AT a version; a sql rule reads the tables as they are")
    if low is not None and low in scope:
        return  # a CTE of this query node or of one around it
    if low not in CANONICAL_TABLES:
        raise Refused(f"table {shown} is not one a sql rule may read (allowed: {_allowed_list()})")
    reads.tables.add(low)
    if node.get("column_name_alias"):
        reads.whole = True
    reads.aliases.add((node.get("alias") or low).lower())
    reads.aliases.add(low)


def _function(name: str, node: dict, table: bool) -> None:
    shown = ".".join(p for p in (node.get("catalog") or "", node.get("schema") or "", name) if p)
    if table:
        if node.get("catalog") or node.get("schema") or not name.isascii() or name.lower() not in SAFE_TABLE_FUNCTIONS:
            raise Refused(
                f"table function {shown}() is not one a sql rule may call (allowed: {', '.join(SAFE_TABLE_FUNCTIONS)})"
            )
        return
    if node.get("catalog") or node.get("schema") or not name.isascii() or name.lower() not in allowed_functions():
        raise Refused(
            f"function {shown}() is not one a sql rule may call (it reads or changes something "
            "outside the rows, or is not a built-in one)"
        )


def _walk(node, scope: frozenset[str], reads: Reads) -> None:
    if isinstance(node, list):
        for v in node:
            _walk(v, scope, reads)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if "class" in node:  # an expression
        cls = node["class"]
        if cls == "FUNCTION":
            _function(str(node.get("function_name")), node, table=False)
        elif cls == "WINDOW":
            _function(str(node.get("function_name")), node, table=False)
        elif cls == "STAR":
            reads.whole = True
        elif cls == "COLUMN_REF":
            names = [str(n).lower() for n in node.get("column_names") or []]
            reads.names.update(names)
            if len(names) == 1:
                reads.names.add("\0row:" + names[0])  # a bare name: maybe a whole row (SELECT l FROM lines l)
        for k, v in node.items():
            _walk(v, scope, reads)
        return
    if isinstance(kind, str) and kind.endswith("_NODE"):  # a query node
        if kind not in READ_NODES:
            raise Refused(
                f"the query must only read, but it holds a writing "
                f"{kind.removesuffix('_QUERY_NODE').removesuffix('_NODE')} (a CTE that writes)"
            )
        inner = scope
        for entry in (node.get("cte_map") or {}).get("map") or []:
            # a CTE's body sees the CTEs around it and the ones defined before it, not itself
            # (a recursive one sees itself through its RECURSIVE_CTE_NODE below)
            _walk(entry.get("value"), inner, reads)
            key = str(entry.get("key", ""))
            if not key.isascii():
                raise Refused(f"CTE {key} must have a plain (ASCII) name")
            inner = inner | {key.lower()}
        if kind == "RECURSIVE_CTE_NODE" or node.get("cte_name"):
            name = str(node.get("cte_name") or "")
            inner = inner | ({name.lower()} if name.isascii() else set())
        for k, v in node.items():
            if k != "cte_map":
                _walk(v, inner, reads)
        return
    if "sample" in node and isinstance(kind, str):  # a table reference
        if kind not in TABLE_REFS:
            raise Refused(f"a {kind.lower().replace('_', ' ')} is not something a sql rule may read from")
        if kind == "BASE_TABLE":
            _table(node, scope, reads)
            return
        if kind == "TABLE_FUNCTION":
            fn = node.get("function") or {}
            _function(str(fn.get("function_name")), fn, table=True)
            _walk(fn.get("arguments") or fn.get("children"), scope, reads)
            return
        if kind == "JOIN":
            if node.get("ref_type") == "NATURAL":
                reads.whole = True
            reads.names.update(str(c).lower() for c in node.get("using_columns") or [])
        if kind == "SUBQUERY" and node.get("alias"):
            reads.aliases.add(str(node["alias"]).lower())
    for v in node.values():
        _walk(v, scope, reads)


def analyse(query: str) -> Reads:
    """The canonical tables ``query`` reads; raises :class:`Refused` when it is not a sql rule's query."""
    refusal, tables, names, whole = _analysed(query)
    if refusal is not None:
        raise Refused(refusal)
    return Reads(set(tables), set(names), whole)


@functools.lru_cache(maxsize=4096)
def _analysed(query: str) -> tuple[str | None, frozenset, frozenset, bool]:
    """:func:`_analyse`, remembered (pre-alert checks the same queries on every request)."""
    try:
        r = _analyse(query)
    except Refused as e:
        return str(e), frozenset(), frozenset(), False
    return None, frozenset(r.tables), frozenset(r.names), r.whole


def _analyse(query: str) -> Reads:
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise Refused(f"not valid SQL: {str(e).splitlines()[0]}") from None
    if len(statements) != 1:
        raise Refused(f"must be a single SELECT, got {len(statements)} statements")
    kind = statements[0].type.name
    if kind != "SELECT":
        raise Refused(f"must be a read-only SELECT; {kind} statements are refused")
    with _PARSER_LOCK:
        tree = json.loads(_parser().execute("SELECT json_serialize_sql(?)", [query]).fetchall()[0][0])
    if tree.get("error"):
        raise Refused(f"cannot be checked: {tree.get('error_message', 'DuckDB could not serialise it')}")
    reads = Reads()
    _walk(tree.get("statements"), frozenset(), reads)
    if any(n.startswith("\0row:") and n[5:] in reads.aliases for n in reads.names):
        reads.whole = True
    reads.names = {n for n in reads.names if not n.startswith("\0")}
    return reads


def check_query(query: str) -> str | None:
    """Why ``query`` is not a sql rule's query, as ``params.query ...`` (None when it is one).

    The one check: the rule library (``medaudit rules check``, every load), the screening and
    pre-alert's SQL path all call it, so they refuse exactly the same queries.
    """
    try:
        analyse(query)
    except Refused as e:
        return f"params.query: {e}"
    return None


def _validate(params: dict) -> str | None:
    q = params.get("query")
    return check_query(q) if q else None


# ---------------------------------------------------------------------------- the sandbox

#: settings of the sandbox connection, applied in this order before any rule's query runs; the
#: last one locks them (a rule cannot SET them back)
SANDBOX_SETTINGS = (
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)
#: what the sandbox hands back to the screening connection, one row per row of a rule's query
ROWS_TABLE = "sql_rule_rows"


def open_sandbox() -> duckdb.DuckDBPyConnection:
    """A new in-memory database with the project's macros, no file or network access, and locked settings."""
    sb = duckdb.connect(":memory:")
    dbm.install_macros(sb)
    # the same memory cap as every connection (a rule returning every line must not take the
    # machine); set before the settings are locked
    sb.execute("SET memory_limit = ?", [resources.current().duckdb_memory_limit])
    for s in SANDBOX_SETTINGS:
        sb.execute(s)
    return sb


def _strip(query: str) -> str:
    """The query without its closing semicolons (comments after them included)."""
    raw = query.encode("utf-8")  # the tokenizer's positions are byte offsets
    tokens = [(pos, kind.name) for pos, kind in duckdb.tokenize(query)]
    while tokens and (tokens[-1][1] == "comment" or raw[tokens[-1][0] :].lstrip().startswith(b";")):
        if tokens[-1][1] != "comment":
            raw = raw[: tokens[-1][0]]
        tokens.pop()
    return raw.decode("utf-8")


def _rule_rows(sb: duckdb.DuckDBPyConnection, key: int, rule_id: str, query: str):
    try:
        rel = sb.sql(_strip(query))
    except duckdb.Error as e:
        raise RuntimeError(f"rule {rule_id}: its query failed: {str(e).splitlines()[0]}") from None
    if rel is None:  # a statement that is not a query (only reachable when the check is bypassed)
        raise RuntimeError(f"rule {rule_id}: its query returned no rows set")
    cols = {c.lower() for c in rel.columns}
    if "bkkp_sn" not in cols:
        raise RuntimeError(
            f"rule {rule_id}: its query must return a column bkkp_sn (it returns {', '.join(sorted(cols))})"
        )
    amount = "CAST(amount AS DECIMAL(38,12))" if "amount" in cols else "CAST(NULL AS DECIMAL(38,12))"
    evidence = "CAST(evidence AS VARCHAR)" if "evidence" in cols else "CAST(NULL AS VARCHAR)"
    try:
        return rel.project(
            f"CAST({int(key)} AS INTEGER) AS rule_key, CAST(bkkp_sn AS VARCHAR) AS bkkp_sn, "
            f"{amount} AS amount, {evidence} AS evidence"
        ).to_arrow_table()
    except duckdb.Error as e:
        raise RuntimeError(f"rule {rule_id}: its query failed: {str(e).splitlines()[0]}") from None


def run_rules(
    con: duckdb.DuckDBPyConnection,
    rules: list[tuple[int, str, str]],
    sandbox: duckdb.DuckDBPyConnection | None = None,
    tables: dict[str, str] | None = None,
) -> int:
    """Run each rule's query in the sandbox; its rows go into ``sql_rule_rows`` on ``con``.

    ``rules`` are (rule_key, rule_id, query). The sandbox sees only the canonical tables the
    queries read, as ``con`` sees them by their bare name, and of those only the columns the
    queries mention (all of them for a query with ``*``, a NATURAL join or a renamed column
    list). This function does not run :func:`check_query` (the caller does): whatever a query
    is, the sandbox has no other table, no file and no network to give it. Returns rows added.

    ``tables``: where ``con`` holds a canonical table under another name (an incremental run's
    ``lines`` of a person's window: ``{"lines": "lines_person"}``); the sandbox still calls it by
    its canonical name.
    """
    tables = tables or {}
    need: dict[str, set[str] | None] = {}  # table -> column names mentioned (None: all)
    for _key, _rid, query in rules:
        try:
            reads = analyse(query)
        except Refused:
            continue  # the caller's business; the sandbox holds nothing for it
        for t in reads.tables:
            seen = need.setdefault(t, set())
            if reads.whole or seen is None:
                need[t] = None
            else:
                seen.update(reads.names)
    own = sandbox is None
    sb = open_sandbox() if sandbox is None else sandbox
    registered = []
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {ROWS_TABLE} "
        "(rule_key INTEGER, bkkp_sn VARCHAR, amount DECIMAL(38,12), evidence VARCHAR)"
    )
    try:
        for t, names in sorted(need.items()):
            if t not in CANONICAL_TABLES:  # never: analyse() keeps only these
                continue
            src = dbm.ident(tables.get(t, t))
            all_cols = [d[0] for d in con.execute(f"SELECT * FROM {src} LIMIT 0").description]
            cols = [c for c in all_cols if names is None or c.lower() in names] or all_cols[:1]
            data = con.sql(f"SELECT {', '.join(dbm.ident(c) for c in cols)} FROM {src}").to_arrow_table()
            sb.register(t, data)
            registered.append(t)
        added = 0
        for key, rule_id, query in rules:
            rows = _rule_rows(sb, key, rule_id, query)
            if rows.num_rows:
                con.register("__sql_rule_rows", rows)
                try:
                    con.execute(f"INSERT INTO {ROWS_TABLE} SELECT * FROM __sql_rule_rows")
                finally:
                    con.unregister("__sql_rule_rows")
                added += rows.num_rows
        return added
    finally:
        for t in registered:
            sb.unregister(t)
        if own:
            sb.close()


def prepare(
    con: duckdb.DuckDBPyConnection,
    sandbox: duckdb.DuckDBPyConnection | None = None,
    tables: dict[str, str] | None = None,
) -> None:
    """Check every sql rule of ``p_sql`` (as the library did) and run them in the sandbox over
    the tables the engine hands the type (``tables``: :func:`medaudit.engine.type_names`)."""
    names = tables or {}
    rules = con.execute(
        f"SELECT p.rule_key, r.rule_id, p.query FROM {names.get('p', 'p_sql')} p "
        f"JOIN {names.get('r', 'r_all')} r USING (rule_key) ORDER BY p.rule_key"
    ).fetchall()
    for _key, rule_id, query in rules:
        msg = check_query(query)
        if msg:
            raise RuntimeError(f"rule {rule_id}: {msg}")
    handed = {t: n for t, n in (tables or {}).items() if t in CANONICAL_TABLES and n != t}
    run_rules(con, rules, sandbox, handed)


def names_read(con: duckdb.DuckDBPyConnection, names: dict[str, str]) -> frozenset[str] | None:
    """The column names the type's rules' queries mention (None: a query reads whole rows of
    ``lines``, with ``*``, ``COLUMNS()``, a NATURAL join, renamed columns or a row reference, or
    cannot be read; :func:`prepare` refuses the latter): what a full screen keeps of the spare
    columns of ``lines`` (``engine.slim_columns``)."""
    read: set[str] = set()
    for (query,) in con.execute(
        f"SELECT p.query FROM {names.get('p', 'p_sql')} p JOIN {names.get('r', 'r_all')} r USING (rule_key)"
    ).fetchall():
        try:
            reads = analyse(query)
        except Refused:
            return None
        if "lines" in reads.tables and reads.whole:
            return None
        read |= reads.names
    return frozenset(read)


def compose(names: dict[str, str], con=None) -> str:
    """The type's statement over ``sql_rule_rows`` (filled by :func:`prepare` before each run)."""
    return f"""
        -- {ROWS_TABLE}: the rows of each rule's query, run in the sandbox (medaudit.types.sql.prepare)
        WITH h AS (SELECT rule_key, bkkp_sn, max(amount) AS amount, bool_or(amount IS NOT NULL) AS has_amount,
                     array_to_string(list_sort(list(DISTINCT evidence) FILTER (WHERE evidence IS NOT NULL)), '；') AS evidence
              FROM {ROWS_TABLE} WHERE bkkp_sn IS NOT NULL GROUP BY rule_key, bkkp_sn),
        x AS (
            SELECT h.rule_key, h.evidence, h.has_amount, l.*,
                   -- the rule's own amount (within 0 and the deductible) when its query gives one, else
                   -- what the declared mode claims
                   CASE WHEN h.has_amount THEN greatest(least(h.amount, l.deductible), 0)
                        ELSE {claim("whole_line", deductible="l.deductible")} END AS claim
            FROM h JOIN {names["lines"]} l ON l.bkkp_sn = h.bkkp_sn
            JOIN {names["r"]} r ON r.rule_key = h.rule_key
            WHERE l.deductible > 0 AND {rule_applies("r", "l.fee_date", "l")})
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
    doc_zh=DOC_ZH,
    items="none",
    default_severity="suspect",
    validate=_validate,
    params=(
        Param(
            "query", "str", "one read-only SELECT returning bkkp_sn (and optionally amount, evidence)", required=True
        ),
        Param(
            "reach",
            "choice",
            "what a nightly run gives the query: all (every screened line) or visit "
            "(the lines of the visits the new batches touch; for a query that judges each visit alone)",
            default="all",
            choices=("all", "visit"),
        ),
    ),
    reach=lambda rule: Reach(scope="person") if rule.params.get("reach") == "visit" else Reach(scope="all"),
    query="",
    compose=compose,
    prepare=prepare,
    names_read=names_read,
)

"""The engine's DuckDB SQL rendered for Spark SQL: the ONE place where the dialects differ.

Every query the Spark runner runs is the text the DuckDB engine produces (:mod:`medaudit.engine`,
the rule types' queries, :func:`medaudit.engine.findings_sql`), rendered here:

1. the project's SQL macros (:func:`medaudit.db.install_macros`: ``yuan``, ``qty``,
   ``age_years``, ``item_ref``, ``*_cn``) are expanded inline from their one DuckDB definition
   (Spark SQL has no SQL macros); ``xdiv`` stays a call: the runner registers its Python twin
   (:func:`medaudit.semantics.xdiv`) as a Spark function, since Spark has no 128-bit integers;
2. ``*`` and ``t.*`` (with DuckDB's ``EXCLUDE``) are expanded against the known columns of the
   Spark views (sqlglot's qualifier), and ``UNION ALL BY NAME`` branches are put in one column
   order, since Spark SQL has neither;
3. list functions Spark lacks (``list_has_all``, ``list_slice``, ``count(DISTINCT) OVER``) are
   written out, and list indices become 1-based ``element_at`` with the index as written;
4. sqlglot transpiles the rest (``read="duckdb", write="spark"``).

A statement that does not render raises :class:`NotPortable` naming the construct.
"""

from __future__ import annotations

import re
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.qualify_columns import qualify_columns
from sqlglot.optimizer.qualify_tables import qualify_tables


class NotPortable(Exception):
    """A DuckDB construct with no Spark rendering here."""


#: macros rendered as a registered Spark function rather than inline (see the module doc)
FUNCTION_MACROS = frozenset({"xdiv"})


class _Recorder:
    """Stands in for a connection to capture the macro script of :func:`medaudit.db.install_macros`."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def execute(self, sql: str, *_a):
        self.sql.append(sql)
        return self


_MACRO = re.compile(r"CREATE OR REPLACE TEMP MACRO\s+(\w+)\s*\(([^)]*)\)\s+AS\s+(.*?);\s*(?=--|CREATE|$)", re.S)


@lru_cache(maxsize=1)
def macros() -> dict[str, tuple[list[str], exp.Expr]]:
    """name -> (argument names, parsed body), from the one definition in :mod:`medaudit.db`."""
    from .. import db

    rec = _Recorder()
    db.install_macros(rec)
    script = "\n".join(rec.sql)
    script = "\n".join(ln for ln in script.splitlines() if not ln.strip().startswith("--"))
    out = {}
    for name, args, body in _MACRO.findall(script + "\n"):
        if name in FUNCTION_MACROS:
            continue
        out[name] = ([a.strip() for a in args.split(",")], sqlglot.parse_one(body, read="duckdb"))
    if not {"yuan", "qty", "age_years", "item_ref"} <= set(out):
        raise RuntimeError("the project's macros were not found in medaudit.db.install_macros")
    return out


def _expand_macros(tree: exp.Expr) -> exp.Expr:
    defs = macros()

    def repl(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Anonymous) and node.name.lower() in defs:
            names, body = defs[node.name.lower()]
            args = [_expand_macros(a.copy()) for a in node.expressions]
            if len(args) != len(names):
                raise NotPortable(f"macro {node.name} takes {len(names)} arguments, got {len(args)}")
            bound = dict(zip(names, args))

            def sub(n: exp.Expr) -> exp.Expr:
                if isinstance(n, exp.Column) and not n.table and n.name in bound:
                    return exp.Paren(this=bound[n.name].copy())
                return n

            return exp.Paren(this=body.copy().transform(sub))
        return node

    return tree.transform(repl)


def _union_by_name(tree: exp.Expr) -> exp.Expr:
    """``A UNION ALL BY NAME B``: B's projections put in A's column order (after star expansion)."""
    for u in list(tree.find_all(exp.Union)):
        if not u.args.get("by_name"):
            continue
        branches = []

        def flat(n):
            if isinstance(n, exp.Union) and n.args.get("by_name"):
                flat(n.left)
                flat(n.right)
            else:
                branches.append(n)

        flat(u)
        first = [s.alias_or_name for s in branches[0].selects]
        for b in branches[1:]:
            by = {s.alias_or_name: s for s in b.selects}
            if set(by) != set(first):
                raise NotPortable(f"UNION BY NAME with different columns: {sorted(set(by) ^ set(first))}")
            b.set("expressions", [by[c] for c in first])
        for n in [u, *u.find_all(exp.Union)]:
            n.set("by_name", None)
    return tree


def _inline_windows(tree: exp.Expr) -> exp.Expr:
    """``f() OVER w ... WINDOW w AS (...)``: the named window written out at each use (Spark's
    parser reads ``OVER w - x`` as one dashed name)."""
    for sel in list(tree.find_all(exp.Select)):
        named = {w.this.name: w for w in sel.args.get("windows") or []}
        if not named:
            continue
        for w in list(sel.find_all(exp.Window)):
            ref = w.args.get("alias")
            if ref is None or ref.name not in named or w.parent_select is not sel:
                continue
            spec = named[ref.name]
            for k in ("partition_by", "order", "spec"):
                if not w.args.get(k) and spec.args.get(k):
                    w.set(k, spec.args[k].copy() if hasattr(spec.args[k], "copy") else [e.copy() for e in spec.args[k]])
            w.set("alias", None)
        sel.set("windows", None)
    return tree


_RANKING = (exp.RowNumber, exp.Rank, exp.DenseRank, exp.Lag, exp.Lead, exp.Ntile, exp.PercentRank, exp.CumeDist)


def _ranking_frames(tree: exp.Expr) -> exp.Expr:
    """A frame on ``row_number()``/``rank()``/``lag()`` (DuckDB ignores it; Spark refuses it) is dropped."""
    for w in tree.find_all(exp.Window):
        if isinstance(w.this, _RANKING) and w.args.get("spec"):
            w.set("spec", None)
        # row_number() over no order (DuckDB: any row of the partition; Spark wants an order):
        # ordered by the partition keys, which leaves it as unspecified as in DuckDB
        if isinstance(w.this, exp.RowNumber) and not w.args.get("order") and w.args.get("partition_by"):
            w.set("order", exp.Order(expressions=[exp.Ordered(this=e.copy()) for e in w.args["partition_by"]]))
    return tree


def _sp(e: exp.Expr) -> str:
    return e.sql(dialect="spark", identify=True)


def _string_agg(tree: exp.Expr) -> exp.Expr:
    """``string_agg(x, sep [ORDER BY o, ...]) [FILTER (WHERE c)]`` (Spark 3.5 has no ordered
    string aggregate): the values collected with their sort keys, sorted, joined; NULL values
    skipped and NULL when none is left, as in DuckDB. ``DISTINCT`` values are joined in their
    own order (DuckDB's order is then unspecified; ordered by the values themselves it is the same)."""
    for gc in list(tree.find_all(exp.GroupConcat)):
        sep = gc.args.get("separator") or exp.Literal.string(",")
        node, order = gc.this, None
        if isinstance(node, exp.Order):
            order, node = node.expressions, node.this
        distinct = isinstance(node, exp.Distinct)
        value = node.expressions[0] if distinct else node
        outer = gc.parent if isinstance(gc.parent, exp.Filter) else None  # ... FILTER (WHERE c)
        filt = outer.expression.this if outer is not None else None
        fsql = f" FILTER (WHERE {_sp(filt)})" if filt is not None else ""
        if distinct:
            if order and not (len(order) == 1 and order[0].this == value and not order[0].args.get("desc")):
                raise NotPortable("string_agg(DISTINCT ...) ordered by something else than its value")
            arr = f"array_sort(collect_set({_sp(value)}){fsql})"
        elif order:
            if any(o.args.get("desc") for o in order):
                raise NotPortable("string_agg(... ORDER BY ... DESC)")
            keys = ", ".join(f"'k{i}', {_sp(o.this)}" for i, o in enumerate(order))
            arr = (
                f"transform(filter(array_sort(collect_list(named_struct({keys}, 'v', {_sp(value)})){fsql}), "
                f"s -> s.v IS NOT NULL), s -> s.v)"
            )
        else:
            arr = f"collect_list({_sp(value)}){fsql}"
        new = sqlglot.parse_one(
            f"CASE WHEN size({arr}) = 0 THEN NULL ELSE array_join({arr}, {_sp(sep)}) END", read="spark"
        )
        (outer if outer is not None and filt is not None else gc).replace(new)
    return tree


def _regexp_groups(tree: exp.Expr) -> exp.Expr:
    """``regexp_replace``'s group references: ``\\1`` in DuckDB (RE2), ``$1`` in Spark (Java)."""
    for rr in tree.find_all(exp.RegexpReplace):
        rep = rr.args.get("replacement")
        if isinstance(rep, exp.Literal) and rep.is_string:
            text = rep.this.replace("$", "\\$")
            rr.set("replacement", exp.Literal.string(re.sub(r"\\(\d)", r"$\1", text)))
    return tree


def _count_distinct_windows(tree: exp.Expr) -> exp.Expr:
    """``count(DISTINCT x) OVER (PARTITION BY ...)`` (Spark has no DISTINCT window aggregates): the
    size of the partition's set of ``x`` (NULLs left out of both). Only over whole partitions."""
    for w in list(tree.find_all(exp.Window)):
        c = w.this
        if not (isinstance(c, exp.Count) and isinstance(c.this, exp.Distinct)):
            continue
        if w.args.get("order") or w.args.get("spec") or len(c.this.expressions) != 1:
            raise NotPortable("count(DISTINCT ...) over an ordered window or of several values")
        value = _sp(c.this.expressions[0])
        w.set("this", sqlglot.parse_one(f"collect_set({value})", read="spark"))
        w.replace(exp.Anonymous(this="size", expressions=[w.copy()]))
    return tree


def _list_index(tree: exp.Expr) -> exp.Expr:
    """``v[i]``, DuckDB's 1-based list index: ``element_at(v, i)``, 1-based in Spark too (NULL out
    of range with ANSI off, as in DuckDB). sqlglot's own rendering shifts only indices it can read
    as ``int + literal`` (``v[least(i + 2, n)]`` or ``v[k]`` came out one place off). A string
    index (a struct field or map key) is left as it is."""
    for b in list(tree.find_all(exp.Bracket)):
        if len(b.expressions) != 1:
            raise NotPortable("a list slice or a multi-index")
        idx = b.expressions[0]
        if isinstance(idx, exp.Literal) and idx.is_string:
            continue
        # the parser took DuckDB's offset off where it could read the index as an integer: put it
        # back the same way, so the index is the one written in the DuckDB query
        from sqlglot.expressions.builders import apply_index_offset

        (one_based,) = apply_index_offset(b.this, [idx.copy()], 1, dialect="duckdb")
        # element_at wants an INT index (least(int, bigint) is a BIGINT)
        b.replace(
            exp.Anonymous(
                this="element_at", expressions=[b.this.copy(), exp.Cast(this=one_based, to=exp.DataType.build("INT"))]
            )
        )
    return tree


def _list_slice(tree: exp.Expr) -> exp.Expr:
    """``list_slice(l, a, b)`` / ``array_slice``: DuckDB's slice is 1-based with both ends
    included, a negative end counting from the list's end (-1: the last) and ends out of range
    clamped; Spark's ``slice(l, start, length)`` takes a length and refuses a start of 0 (sqlglot
    passed the end as the length). Rendered with the ends resolved against ``size(l)``."""
    for f in list(tree.find_all(exp.Anonymous, exp.ArraySlice)):
        if isinstance(f, exp.ArraySlice):
            if f.args.get("step") is not None or f.args.get("is_length"):
                raise NotPortable("array_slice with a step or a length")
            args = [f.this, f.args.get("start"), f.args.get("end")]
        elif f.name.lower() in ("list_slice", "array_slice"):
            args = list(f.expressions)
        else:
            continue
        if len(args) != 3 or any(a is None for a in args):
            raise NotPortable("list_slice takes a list, a begin and an end")
        lst, a, b = (_sp(x) for x in args)
        n = f"size({lst})"
        start = f"greatest(CASE WHEN ({a}) < 0 THEN {n} + ({a}) + 1 ELSE ({a}) END, 1)"
        end = f"least(CASE WHEN ({b}) < 0 THEN {n} + ({b}) + 1 ELSE ({b}) END, {n})"
        f.replace(
            sqlglot.parse_one(
                f"CASE WHEN ({lst}) IS NULL OR ({a}) IS NULL OR ({b}) IS NULL THEN NULL "
                f"ELSE slice({lst}, {start}, greatest({end} - {start} + 1, 0)) END",
                read="spark",
            )
        )
    return tree


def _list_has_all(tree: exp.Expr) -> exp.Expr:
    """``list_has_all(a, b)`` (every non-NULL element of ``b`` is in ``a``; NULL when a list is
    NULL, as in DuckDB): Spark has no such function, so ``b`` minus ``a`` must be empty."""
    for f in list(tree.find_all(exp.Anonymous)):
        if f.name.lower() not in ("list_has_all", "array_has_all"):
            continue
        if len(f.expressions) != 2:
            raise NotPortable(f"{f.name} takes 2 arguments, got {len(f.expressions)}")
        a, b = (_sp(e) for e in f.expressions)
        f.replace(
            sqlglot.parse_one(
                f"CASE WHEN ({a}) IS NULL OR ({b}) IS NULL THEN NULL "
                f"ELSE size(array_except(filter({b}, x__ -> x__ IS NOT NULL), {a})) = 0 END",
                read="spark",
            )
        )
    return tree


def render(sql: str, schema: dict[str, dict[str, str]]) -> str:
    """One DuckDB SELECT (or SELECT-like statement) as Spark SQL; ``schema``: view -> column -> type."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as e:
        raise NotPortable(f"does not parse: {str(e).splitlines()[0]}") from e
    tree = _expand_macros(tree)
    if any(
        isinstance(s, exp.Star) or (isinstance(s, exp.Column) and isinstance(s.this, exp.Star))
        for s in tree.find_all(exp.Star, exp.Column)
    ):
        try:
            tree = qualify_tables(tree, dialect="duckdb")
            # (a copy of schema: sqlglot annotates it as dict[str, object], invariant)
            tree = qualify_columns(
                tree, schema=dict(schema), expand_stars=True, allow_partial_qualification=True, dialect="duckdb"
            )
        except Exception as e:  # sqlglot raises OptimizeError and others
            raise NotPortable(f"columns could not be resolved: {e}") from e
    tree = _union_by_name(tree)
    tree = _inline_windows(tree)
    tree = _ranking_frames(tree)
    tree = _string_agg(tree)
    tree = _regexp_groups(tree)
    tree = _list_has_all(tree)
    tree = _list_slice(tree)
    tree = _list_index(tree)
    tree = _count_distinct_windows(tree)
    try:
        return tree.sql(dialect="spark", identify=True, unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.UnsupportedError as e:
        raise NotPortable(str(e)) from e

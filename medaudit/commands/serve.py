"""``medaudit serve``: the pre-alert service (3101 analysis, 3103 feedback) on uvicorn;
``medaudit serve-key``: make an institution's API key."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ..clihelp import fail


#: DuckDB's memory limit for the service when none is given (``medaudit --memory-limit`` or
#: medaudit.toml): the service's queries are small (one visit's context; the results it appends),
#: and the buffer manager would otherwise keep up to a quarter of the machine of the database's
#: pages as results accumulate. Beyond it DuckDB evicts pages (and spills, if ever needed).
SERVICE_MEMORY_LIMIT = "1GiB"
#: ... and once the service is up, for the connection that stores the answers: DuckDB keeps the
#: pages of the tables it appends to cached up to its limit, so under 1 GiB the writer grew by
#: about 0.5 GB an hour at 500 answers a second (a soak of 8 minutes with 2 workers: their
#: memory flat, the writer's DuckDB memory 18 -> 46 MB, its RSS +33 MB in 3.5 minutes). The
#: writer of ``--workers N`` (the parent) only appends answers and reads one institution's back,
#: which stream: a small limit; the one process of a service without workers also runs the SQL
#: path's queries over its connection: more room.
WRITER_MEMORY_LIMIT = "64MiB"
ONE_PROCESS_MEMORY_LIMIT = "256MiB"


def register(app: typer.Typer) -> None:
    console = Console()
    err = Console(stderr=True)

    @app.command()
    def serve(
        db: Path = typer.Option(
            Path("medaudit.duckdb"), "--db", help="the medaudit database (history, results, feedback)"
        ),
        rules: Path = typer.Option(Path("rules"), "--rules", help="the rule library of the rule set 'default'"),
        rule_set: List[str] = typer.Option(
            [], "--rule-set", help="another rule set: NAME=PATH (repeatable); requests choose one with ?rule_set=NAME"
        ),
        keys: Optional[Path] = typer.Option(
            None,
            "--keys",
            help="API keys file (YAML: institution code: key); "
            "keys made with `medaudit serve-key` are read from the database",
        ),
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(8000, "--port"),
        sessions: int = typer.Option(2, "--sessions", help="checks run at once (one database cursor each)"),
        batch: int = typer.Option(
            16,
            "--batch",
            help="requests waiting for a session are checked together, up to this many per run (1: one at a time)",
        ),
        threads: int = typer.Option(1, "--threads", help="DuckDB threads per query (small queries: 1 is fastest)"),
        engine: str = typer.Option(
            "fast",
            "--engine",
            help="fast: in-memory evaluators for the rule types "
            "that have one, the batch engine's SQL for the others; sql: always the SQL (the reference)",
        ),
        cache_ttl: float = typer.Option(
            300.0, "--cache-ttl", help="seconds a visit's stored context stays cached (fast engine)"
        ),
        async_results: bool = typer.Option(
            True,
            "--async-results/--sync-results",
            help="store answered results in the background, many per INSERT (read endpoints and 3103 flush first)",
        ),
        preload: bool = typer.Option(
            False,
            "--preload",
            help="fast engine: load every stored visit's context and "
            "the catalogue at startup (one set-based pass); no request then queries the "
            "database, and (with --async-results) checks run on the event loop",
        ),
        max_body: int = typer.Option(
            2 * 1024 * 1024,
            "--max-body",
            min=1,
            help="largest request body in bytes (413 beyond, refused before it is read)",
        ),
        max_patients: int = typer.Option(20, "--max-patients", min=1, help="patients per 3101 request (422 beyond)"),
        max_orders: int = typer.Option(
            1000,
            "--max-orders",
            min=1,
            help="orders per 3101 request, all patients together, earlier orders included (422 beyond)",
        ),
        max_warns: int = typer.Option(1000, "--max-warns", min=1, help="answers per 3103 request (422 beyond)"),
        journal: Optional[Path] = typer.Option(
            None,
            "--journal",
            help="folder of the result writer's journal "
            "(answered results and feedback not stored yet; default: next to "
            "the database, <db>.prealert-journal)",
        ),
        max_queue_rows: int = typer.Option(
            20_000,
            "--max-queue-rows",
            min=1,
            help="answered rows the writer "
            "keeps in memory; beyond, the journal alone holds them and /health "
            "says the queue is full (answers continue)",
        ),
        writer_reopen_rows: int = typer.Option(
            1_000_000,
            "--writer-reopen-rows",
            min=1,
            help="with --workers: rows the writer stores between closing the database and "
            "opening it again (an open DuckDB database keeps about a byte of memory for every "
            "row appended to it)",
        ),
        max_inflight: int = typer.Option(
            64,
            "--max-inflight",
            min=1,
            help="requests in progress at once; beyond (after --max-wait), 503 with Retry-After",
        ),
        max_wait: float = typer.Option(
            0.1,
            "--max-wait",
            min=0.0,
            help="seconds a request may wait for a place (or the event loop may lag) before it is answered 503",
        ),
        history_days: Optional[int] = typer.Option(
            None,
            "--history-days",
            min=0,
            help="with --preload: preload "
            "only the visits of the last N days (default: as far back as the "
            "served rules look, e.g. period_limit's longest period_days); "
            "older ones are checked by SQL",
        ),
        whole_history: bool = typer.Option(
            False, "--whole-history", help="with --preload: preload every stored visit, however old"
        ),
        max_db_checks: Optional[int] = typer.Option(
            None,
            "--max-db-checks",
            min=1,
            help="3101 checks needing "
            "the database (SQL path) running or waiting at once; beyond "
            "(after --max-wait), 503 (default: sessions x batch)",
        ),
        watched_rule_set: Optional[str] = typer.Option(
            None,
            "--watched-rule-set",
            help="a rule set (--rule-set "
            "NAME=PATH) for the orders of doctors on the watchlist (重点监控, "
            "medaudit watch): it replaces the one a request asks for; the "
            "watchlist is read again every minute",
        ),
        workers: str = typer.Option(
            "1",
            "--workers",
            help="answering processes on the port (a number, or auto: "
            "one per core); each holds its own read-only context, one writer stores "
            "every worker's answers (docs/prealert.md)",
        ),
        cache_visits: int = typer.Option(
            50_000,
            "--cache-visits",
            min=1,
            help="visit contexts loaded on first use kept in memory (fast engine without --preload)",
        ),
    ) -> None:
        """Serve pre-alert checks over HTTP (OpenAPI docs at /docs).

        The service owns the database file while it runs (DuckDB allows one writing process):
        load and screen batches before starting it, or after stopping it.
        """
        import uvicorn

        from .. import db as dbm
        from ..library import RuleLibraryError, load_library
        from ..prealert import store
        from ..prealert.app import create_app

        from ..prealert.workers import resolve

        try:
            n_workers = resolve(workers)
        except ValueError as e:
            fail(str(e))
        if n_workers > 1 and not async_results:
            fail("--sync-results needs --workers 1 (several workers journal their answers for the one writer)")
        libs, lib_paths = {}, {}
        for name, path in [("default", str(rules))] + [x.split("=", 1) if "=" in x else ("", x) for x in rule_set]:
            if not name:
                fail(f"--rule-set must be NAME=PATH, got {path!r}")
            try:
                libs[name] = load_library(path)
                lib_paths[name] = str(Path(path).resolve())
            except RuleLibraryError as e:
                fail(f"rule set {name} ({path}) has problems:\n" + "\n".join(e.problems))
        if watched_rule_set is not None and watched_rule_set not in libs:
            fail(
                f"--watched-rule-set {watched_rule_set!r} is not a rule set given with --rule-set NAME=PATH "
                f"(rule sets: {', '.join(sorted(libs))})"
            )
        file_keys = {}
        if keys:
            try:
                file_keys = store.load_keys_file(keys)
            except ValueError as e:
                fail(str(e))
        if not db.exists():
            fail(f"{db}: no such database (load a batch first: medaudit load BATCH --db {db})")
        if engine not in ("fast", "sql"):
            fail(f"--engine must be fast or sql, got {engine!r}")
        con = dbm.connect(db)
        con.execute(f"SET threads = {max(1, int(threads))}")
        from .. import resources

        if (
            resources.current().memory_limit is None
        ):  # not given: the service's own default, not a quarter of the machine
            con.execute("SET memory_limit = ?", [SERVICE_MEMORY_LIMIT])
        steady = resources.current().memory_limit is None  # the limit tightens once the service is up
        if n_workers > 1:
            if steady:  # the parent only stores answers and reads them back; workers preload their own
                con.execute("SET memory_limit = ?", [WRITER_MEMORY_LIMIT])
            return _serve_workers(
                con,
                db,
                n_workers,
                host,
                port,
                journal,
                max_queue_rows,
                writer_reopen_rows,
                console,
                err,
                {
                    "libraries": lib_paths,
                    "keys": str(Path(keys).resolve()) if keys else None,
                    "threads": threads,
                    "memory_limit": resources.current().duckdb_memory_limit
                    if resources.current().memory_limit
                    else SERVICE_MEMORY_LIMIT,
                    "app": dict(
                        sessions=sessions,
                        batch=batch,
                        engine=engine,
                        cache_ttl=cache_ttl,
                        preload=preload,
                        async_results=True,
                        max_body=max_body,
                        max_patients=max_patients,
                        max_orders=max_orders,
                        max_warns=max_warns,
                        max_inflight=max_inflight,
                        max_wait=max_wait,
                        window=not whole_history,
                        history_days=history_days,
                        cache_visits=cache_visits,
                        max_db_checks=max_db_checks or max(1, sessions) * max(1, batch),
                        watched_rule_set=watched_rule_set,
                    ),
                },
            )
        application = create_app(
            con,
            libs,
            file_keys,
            sessions=sessions,
            batch=batch,
            engine=engine,
            cache_ttl=cache_ttl,
            preload=preload,
            async_results=async_results,
            max_body=max_body,
            max_patients=max_patients,
            max_orders=max_orders,
            max_warns=max_warns,
            journal=str(journal) if journal else None,
            max_queue_rows=max_queue_rows,
            max_inflight=max_inflight,
            max_wait=max_wait,
            window=not whole_history,
            history_days=history_days,
            cache_visits=cache_visits,
            max_db_checks=max_db_checks or max(1, sessions) * max(1, batch),
            watched_rule_set=watched_rule_set,
        )
        n_keys = len(file_keys) + con.execute("SELECT count(*) FROM prealert_api_keys").fetchall()[0][0]
        if not n_keys:
            err.print("[yellow]warning:[/] no API keys: every call will be refused (medaudit serve-key INSTITUTION)")
        for name, lib in libs.items():
            n = sum(1 for r in lib.rules if "pre_alert" in r.stages)
            console.print(f"rule set {name}: {n:,} of {len(lib.rules):,} rules run at pre_alert")
            if engine == "fast":
                from ..prealert.fast import EVALUATORS

                slow = sorted({r.type for r in lib.rules if "pre_alert" in r.stages and r.type not in EVALUATORS})
                console.print(
                    "  engine: fast"
                    + (
                        f" (by SQL in the same request, the types without an in-memory evaluator: {', '.join(slow)})"
                        if slow
                        else ""
                    )
                )
            else:
                console.print("  engine: sql")
        console.print(f"serving http://{host}:{port}  (docs: /docs)")
        # Everything made so far lives as long as the service (rule indexes, preloaded visits):
        # the collector need not walk it again. A full collection over a preloaded history of
        # 2,000 visits took 88 ms, and every request waited behind it.
        gc.freeze()
        if steady:  # preloaded: from now on the connection mostly appends answers
            con.execute("SET memory_limit = ?", [ONE_PROCESS_MEMORY_LIMIT])
        uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)

    def _serve_workers(
        con,
        db: Path,
        n: int,
        host: str,
        port: int,
        journal,
        max_queue_rows: int,
        reopen_rows: int,
        console,
        err,
        config: dict,
    ) -> None:
        """Several answering processes and one writer (:mod:`medaudit.prealert.workers`)."""
        import socket

        from ..prealert import store
        from ..prealert.workers import Supervisor

        store.ensure(con)
        try:  # the port must be free (the workers share it with SO_REUSEPORT, nobody else may hold it)
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.bind((host, port))
        except OSError as e:
            fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
        n_keys = (1 if config["keys"] else 0) + con.execute("SELECT count(*) FROM prealert_api_keys").fetchall()[0][0]
        if not n_keys:
            err.print("[yellow]warning:[/] no API keys: every call will be refused (medaudit serve-key INSTITUTION)")
        sup = Supervisor(
            con, db, n, host, port, config, journal=journal, max_queue_rows=max_queue_rows, reopen_rows=reopen_rows
        )
        try:
            sup.start()
            console.print(
                f"{n} workers starting (each loads its own context from {sup.snapshot.name}); writer: {sup.journal}"
            )
            if not sup.wait_ready():
                err.print("[red]error:[/] a worker ended while starting (its message is above)")
                raise typer.Exit(1)
            console.print(f"serving http://{host}:{port} with {n} workers  (docs: /docs)")
            sup.run()
        finally:
            sup.stop()

    @app.command("serve-key")
    def serve_key(
        institution: str = typer.Argument(..., help="institution code (fixmedins_code)"),
        db: Path = typer.Option(Path("medaudit.duckdb"), "--db"),
    ) -> None:
        """Make a new API key for an institution (only its hash is stored); prints the key once."""
        from .. import db as dbm
        from ..prealert import store

        con = dbm.connect(db)
        key = store.add_key(con, institution)
        console.print(key, highlight=False)

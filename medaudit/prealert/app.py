"""The pre-alert HTTP service (FastAPI): 3101 analysis, 3103 feedback, an institution's results.

Every call carries the institution's API key in the ``X-API-Key`` header; the key decides the
institution, and an institution sees and answers only its own results (another institution's
``jr_id`` is "not found", as if it did not exist). Isolation on 3101: the request's institution
(the encounter's ``medins_id``, and the message's ``fixmedins_code`` when given) must be the
key's, and a visit the database holds for another institution is refused (403 naming the
visit, not its institution) before anything is checked; the person's lines at other
institutions (period_limit counts the units paid anywhere) are shown only as "paid at another
institution on that date" (:func:`medaudit.prealert.alerts.redact`). Bad input is a 4xx with
the field path (``patient_dtos.0.fsi_encounter_dtos.0.fsi_order_dtos.2.cnt: ...``), never a 500.

Limits (``create_app``'s ``max_*``, ``medaudit serve --max-*``): a body over ``max_body``
bytes is refused with 413 before it is read (by its ``Content-Length``, or by counting the
bytes as they stream in); more than ``max_patients`` patients or ``max_orders`` orders in a
3101 request, or ``max_warns`` answers in a 3103, is a 422 naming the field.

The 3101 route is the hot path and is built for it: it is answered on its own ASGI lane
(:class:`Lane3101`), not through FastAPI's routing and dependency solving (the FastAPI route
stays for the docs and answers the same), pydantic-core validates the body straight from its
bytes, the answer is written with orjson, a check the fast path can answer from memory
runs on the event loop itself (no thread hand-off), and answered results are stored in the
background as Arrow batches (:class:`ResultWriter`). Checks that need the database (the SQL
path, a visit's context not loaded yet) and the other endpoints run in the thread pool.

Endpoints (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):

- ``POST /prealert/3101?rule_set=default``: analyse the new orders of each patient's current
  visit; returns ``output.result[]`` (empty: nothing to say);
- ``POST /prealert/3103``: the doctor's answers to results (``warns[]``);
- ``GET /prealert/results/{jr_id}``, ``GET /prealert/results?mdtrt_id=``: what was answered.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, Optional

import duckdb
import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import ValidationError
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect

from ..library import Library
from . import store
from .alerts import Alert, CheckRequest, ForeignVisitError, RuleSetError
from .checker import OrderChecker
from .metrics import Admission, Instrument, Metrics, Overloaded, malloc_bytes, rss_bytes
from .writer import ResultWriter, write_rows
from .schemas import Request3101, Request3103, Response3101, Response3103, error_message, to_check_request

API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="the institution's API key")
SEV_DEG = {"violation": "1", "suspect": "2"}

#: default limits. A 3101 order is about 660 bytes of JSON as hospital systems send it (every
#: national field filled), so 1,000 orders are about 0.66 MB and 2 MiB leaves room for the
#: patients' encounters and diagnoses. An inpatient request carries the stay's earlier orders
#: (``curr_drord_flag`` 0) every time, so a long stay sends hundreds: 1,000 orders per request
#: (all patients together) keeps a month's stay in one call. A HIS sends one patient per call,
#: a ward round a few: 20. The patients of a request are checked one after another; measured
#: on a shared 2-core machine, the SQL path took 1.1 s for 1 patient with 1,000 orders, 3.6 s
#: for 20 patients (37 s for 200), the fast path 0.13-0.25 s for any of these.
MAX_BODY = 2 * 1024 * 1024
MAX_PATIENTS = 20
MAX_ORDERS = 1000
MAX_WARNS = 1000


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(
            413, f"request body larger than {limit:,} bytes (the service's limit, medaudit serve --max-body)"
        )


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is refused with 413 before it is read.

    A ``Content-Length`` over the limit is answered at once, without calling the route. A body
    without one (chunked), or longer than it says, is counted as it streams in: the chunk that
    passes the limit raises :class:`BodyTooLarge` in the route's read, which the app answers as
    413; at most ``limit`` bytes and one chunk are ever held."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _reply(send, 400, "Content-Length is not a number")
                if declared > self.limit:
                    return await _reply(send, 413, BodyTooLarge(self.limit).detail)
        seen = 0
        limit = self.limit

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return await self.app(scope, limited, send)


async def _reply(send, status: int, msg: str) -> None:
    body = orjson.dumps({"infcode": -1, "err_msg": msg})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _http_error(exc: HTTPException) -> JSONResponse:
    """The service's answer to an :class:`HTTPException` (its status and headers, the national
    error shape ``{"infcode": -1, "err_msg": ...}``): the app's handler and :class:`Lane3101`."""
    return JSONResponse(
        status_code=exc.status_code,
        content={"infcode": -1, "err_msg": str(exc.detail)},
        headers=getattr(exc, "headers", None),
    )


def _unauthorized() -> HTTPException:
    return HTTPException(401, "missing or unknown API key (header X-API-Key)", headers={"WWW-Authenticate": "APIKey"})


#: the 3101 route's path, and its ``rule_set`` when the query does not name one
LANE_PATH = "/prealert/3101"
LANE_RULE_SET = "default"


async def _read_body(receive) -> bytes:
    """The request's body, read as Starlette's ``Request.body`` reads it (``ClientDisconnect`` when
    the client goes away first); :class:`BodyLimit`'s ``receive`` raises past the limit."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            if body:
                chunks.append(body)
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


class Lane3101:
    """ASGI middleware, just inside :class:`BodyLimit` and :class:`Instrument`: answers
    ``POST /prealert/3101`` itself, everything else goes on to FastAPI untouched.

    The pre-alert check is the service's hot path, and FastAPI's routing and dependency solving
    cost a fifth of the application's CPU per check (0.94 -> 0.75 ms a check of 10 orders with the
    national library, ``benchmarks/bench_prealert_lane.py``). This lane does what the route's dependencies do, in the same order and with
    the same answers: the ``X-API-Key`` header (the first one, as Starlette's ``Headers.get``)
    through the same ``KeyRing.institution`` (401 with ``WWW-Authenticate``), the institution set
    in ``scope["state"]`` for Instrument's metrics label (as ``request.state`` does), ``rule_set``
    from the query as FastAPI reads it (Starlette's ``QueryParams``: the last one given, blank
    kept; any text is a valid ``str``), then the body and ``answer`` (the route's own function,
    ``create_app``'s ``answer_3101``). An :class:`HTTPException` (BodyLimit's 413 included) is
    answered by :func:`_http_error`, as the app's exception handler does. Only the exact path
    is taken (``/prealert/3101/`` still gets FastAPI's redirect, ``GET`` its 405), and only
    without a ``root_path`` (FastAPI matches the path less it then)."""

    def __init__(self, app, answer, keys: store.KeyRing):
        self.app, self.answer, self.keys = app, answer, keys

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != LANE_PATH or scope["method"] != "POST" or scope.get("root_path"):
            return await self.app(scope, receive, send)
        try:
            response = await self._answer(scope, receive)
        except HTTPException as e:
            response = _http_error(e)
        await response(scope, receive, send)

    async def _answer(self, scope, receive) -> Response:
        key = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                key = value.decode("latin-1")
                break
        inst = self.keys.institution(key)
        if inst is None:
            raise _unauthorized()
        scope.setdefault("state", {})["medaudit_institution"] = inst  # the metrics' label
        rule_set = LANE_RULE_SET
        query = scope.get("query_string")
        if query:
            rule_set = QueryParams(query).get("rule_set", LANE_RULE_SET)
        return await self.answer(inst, rule_set, await _read_body(receive))


def _too_many(field: str, what: str, n: int, limit: int, option: str) -> JSONResponse:
    msg = f"{n:,} {what} in this request; at most {limit:,} (the service's limit, medaudit serve {option})"
    return JSONResponse(
        status_code=422,
        content={
            "infcode": -1,
            "err_msg": f"{field}: {msg}",
            "detail": [{"field": field, "msg": msg, "type": "too_long"}],
        },
    )


def _over_limits(body: Request3101, max_patients: int, max_orders: int) -> JSONResponse | None:
    """422 when the request has more patients or orders than the service takes."""
    if len(body.patient_dtos) > max_patients:
        return _too_many("patient_dtos", "patients", len(body.patient_dtos), max_patients, "--max-patients")
    counts = {
        (i, j): len(e.fsi_order_dtos)
        for i, p in enumerate(body.patient_dtos)
        for j, e in enumerate(p.fsi_encounter_dtos)
    }
    total = sum(counts.values())
    if total > max_orders:
        (i, j), n = max(counts.items(), key=lambda x: x[1])
        field = (
            f"patient_dtos.{i}.fsi_encounter_dtos.{j}.fsi_order_dtos"
            if n > max_orders
            else "patient_dtos.*.fsi_encounter_dtos.*.fsi_order_dtos"
        )
        return _too_many(field, "orders", total, max_orders, "--max-orders")
    return None


def _path(loc) -> str:
    parts = [str(x) for x in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _invalid(errors) -> JSONResponse:
    """422 naming each bad field: ``patient_dtos.0.fsi_encounter_dtos.0.fsi_order_dtos.2.cnt: ...``."""
    errors = [{"field": _path(e["loc"]), "msg": error_message(e), "type": e["type"]} for e in errors]
    msg = "; ".join(f"{e['field']}: {e['msg']}" for e in errors)
    return JSONResponse(status_code=422, content={"infcode": -1, "err_msg": msg, "detail": errors})


def _json_default(x):
    if isinstance(x, Decimal):  # amounts as JSON numbers, as the national output has them: they are
        return float(x)  # 0.01-rounded and far below 2**53 cents, so the shortest float text is the amount
    raise TypeError(f"{type(x).__name__} is not JSON")


def _body_schema(model) -> dict:
    """OpenAPI request body of a route that reads its body itself (the model is in components)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


#: where the service serves Swagger UI's files (from the swagger-ui-bundle-v2 package)
DOCS_ASSETS = "/docs/assets"


def _offline_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from files installed with the project (``swagger-ui-bundle-v2``), not a CDN."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


class WatchedDoctors:
    """The doctors on the watchlist (``watchlist`` rows of kind doctor still watched), by
    institution; read again every ``ttl`` seconds, so a ``medaudit watch add`` reaches a running
    service within that (one small query, on the request that finds the copy stale)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, ttl: float = 60.0):
        self.con, self.ttl = con, ttl
        self._read_at = float("-inf")
        self._by_inst: dict[str, frozenset] = {}
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        cur = self.con.cursor()
        try:
            rows = cur.execute(
                """SELECT fixmedins_code, split_part(entity, '/', 2) FROM watchlist
                   WHERE entity_kind = 'doctor' AND left_on IS NULL"""
            ).fetchall()
        finally:
            cur.close()
        by: dict[str, set] = {}
        for inst, dr in rows:
            by.setdefault(inst, set()).add(dr)
        self._by_inst = {k: frozenset(v) for k, v in by.items()}

    def any(self, inst: str, doctors) -> bool:
        now = time.monotonic()
        if now - self._read_at > self.ttl:
            with self._lock:
                if now - self._read_at > self.ttl:
                    self._refresh()
                    self._read_at = now
        mine = self._by_inst.get(inst)
        if not mine:
            return False
        return any(d in mine for d in doctors if d)


class _App(FastAPI):
    """The service's application: its OpenAPI schema also holds the 3101 request's model (the 3101
    route reads its body itself, see ``analyse``, so FastAPI does not find the model on its own)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            spec = get_openapi(title=self.title, version=self.version, description=self.description, routes=self.routes)
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            model = Request3101.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(model.pop("$defs", {}))
            schemas["Request3101"] = model
            self.openapi_schema = spec
        return self.openapi_schema


def create_app(
    con: duckdb.DuckDBPyConnection,
    libraries: dict[str, Library],
    file_keys: dict[str, str] | None = None,
    sessions: int = 2,
    batch: int = 1,
    warm: bool = True,
    engine: str = "fast",
    cache_ttl: float = 300.0,
    preload: bool = False,
    async_results: bool = False,
    max_body: int = MAX_BODY,
    max_patients: int = MAX_PATIENTS,
    max_orders: int = MAX_ORDERS,
    max_warns: int = MAX_WARNS,
    journal: str | None = None,
    max_queue_rows: int = 20_000,
    max_inflight: int = 64,
    max_wait: float = 0.1,
    window: bool = False,
    history_days: int | None = None,
    cache_visits: int | None = None,
    max_db_checks: int | None = None,
    watched_rule_set: str | None = None,
    writer=None,
    remote=None,
    lane: bool = True,
) -> FastAPI:
    """The service over an open database connection and the named rule libraries.

    ``sessions``: checks that run at once (each has its own cursor with the rules registered;
    ``warm`` opens them now rather than on the first requests); ``batch``: requests waiting for
    a session are checked together, up to this many per run; ``async_results``: answered results
    are stored in the background (:class:`ResultWriter`); ``engine``: ``fast`` (the in-memory
    evaluators for the types that have one, the SQL path for the others in the same request) or
    ``sql`` (always the SQL path). Each 3101 answer says which paths answered in the header
    ``X-Medaudit-Engine`` (``fast``, ``sql``, ``fast+sql``). ``max_body``
    (bytes), ``max_patients``, ``max_orders`` (per 3101 request, all patients together),
    ``max_warns`` (per 3103): see the module's doc. ``journal`` (a folder; default next to the
    database) and ``max_queue_rows``: the result writer's (:mod:`.writer`); ``max_inflight`` and
    ``max_wait`` (seconds): admission (:class:`.metrics.Admission`): past them a request is
    answered at once with 503 and ``Retry-After``; ``max_db_checks`` (``medaudit serve``'s
    default ``sessions`` x ``batch``; None: no bound but ``max_inflight``): 3101 checks that need the database (SQL path, a context not loaded) in progress or
    waiting for a session at once, the same way. ``window`` and ``history_days``: the preloaded
    history only as far back as the rules look (:mod:`.window`; ``medaudit serve --preload`` does
    this unless ``--whole-history``); ``cache_visits``: visit contexts
    loaded on first use kept at most (fast engine without preload).

    One of several answering processes (``medaudit serve --workers N``, :mod:`.workers`): ``con``
    is the read-only snapshot, ``writer`` the process's :class:`.writer.JournalProducer` and
    ``remote`` the client of the one writer (:class:`.workers.WriterClient`), which answers the
    reads of stored results (3103's ownership check, ``/prealert/results``) after storing every
    process's answers so far, and gives ``/health`` and ``/metrics`` the other processes' figures.

    ``lane``: ``POST /prealert/3101`` is answered by :class:`Lane3101` rather than through
    FastAPI's routing and dependencies (the same answers for less CPU); False leaves it to the
    FastAPI route (the parity tests compare the two)."""
    for name, x in (
        ("max_body", max_body),
        ("max_patients", max_patients),
        ("max_orders", max_orders),
        ("max_warns", max_warns),
    ):
        if not isinstance(x, int) or x < 1:
            raise ValueError(f"{name} must be a positive whole number, got {x!r}")
    if remote is None:  # a worker's snapshot is read-only: the writer made the tables
        store.ensure(con)
    checker = OrderChecker(
        con,
        libraries,
        sessions=sessions,
        batch=batch,
        engine=engine,
        cache_ttl=cache_ttl,
        preload=preload,
        window=window,
        history_days=history_days,
        cache_visits=cache_visits,
    )
    if warm:
        checker.warm()
    if writer is not None:
        checker.writer = writer
    else:
        checker.writer = ResultWriter(con, journal, max_rows=max_queue_rows) if async_results else None
    keys = store.KeyRing(con, file_keys)
    metrics = Metrics()
    admission = Admission(max_inflight, max_wait)
    # None: no bound of its own (``medaudit serve`` gives sessions x batch)
    db_gate = Admission(max_db_checks or 1_000_000, max_wait, watch_lag=False)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        import asyncio

        watch = asyncio.get_running_loop().create_task(admission.watch())
        try:
            yield
        finally:
            watch.cancel()
            if checker.writer:  # what is still queued is stored before the service ends
                checker.writer.close()

    app = _App(
        lifespan=lifespan,
        title="medaudit pre-alert (事前提醒)",
        version="1",
        description=__doc__,
        docs_url=None,  # served below from the project's own files: no CDN on a hospital intranet
        redoc_url=None,
    )
    _offline_docs(app)
    app.state.checker = checker
    app.state.metrics, app.state.admission = metrics, admission
    app.state.remote = remote

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError):
        return _invalid(exc.errors())

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return _http_error(exc)

    async def institution(request: Request, key: Optional[str] = Depends(API_KEY)) -> str:  # async: no thread hand-off
        inst = keys.institution(key)
        if inst is None:
            raise _unauthorized()
        request.state.medaudit_institution = inst  # the metrics' label (an organisation code)
        return inst

    def memory() -> dict:
        cur = con.cursor()
        try:
            tags = {
                t: int(b)
                for t, b in cur.execute(
                    "SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0"
                ).fetchall()
            }
            limit = cur.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        finally:
            cur.close()
        # by_tag: what DuckDB's buffer manager holds it for (BASE_TABLE blocks, ART_INDEX, HASH_TABLE, ...)
        return {
            "rss_bytes": rss_bytes(),
            "duckdb_bytes": sum(tags.values()),
            "duckdb_limit": limit,
            "duckdb_by_tag": tags,
            # glibc malloc's view: native memory in use vs freed but held (None elsewhere)
            "malloc": malloc_bytes(),
        }

    if watched_rule_set is not None and watched_rule_set not in libraries:
        raise ValueError(
            f"watched rule set {watched_rule_set!r} is not one of the rule sets ({', '.join(sorted(libraries))})"
        )
    watched = WatchedDoctors(con) if watched_rule_set else None

    def rule_set_of(req: CheckRequest, inst: str, asked: str) -> str:
        """The rule set a patient's orders are checked with: the watched set when a new order's
        doctor is on the watchlist (重点监控, ``medaudit watch``) at this institution."""
        if (
            watched is not None
            and watched_rule_set is not None
            and watched.any(inst, (o.get("bilg_dr_code") for o in req.orders if o.get("new")))
        ):
            return watched_rule_set
        return asked

    def gauges_of_worker() -> dict:
        """This process's figures, as a worker reports them to the writer (:mod:`.workers`)."""
        fast = checker.fast
        mem = memory()
        return {
            "inflight": admission.inflight,
            "db_checks": db_gate.inflight,
            "loop_lag_s": round(admission.lag, 4),
            "rss_bytes": mem["rss_bytes"],
            "duckdb_bytes": mem["duckdb_bytes"],
            "malloc": mem["malloc"],
            "context_cache_visits": len(fast.cache._data) if fast else None,
            "answered": dict(checker.answered),
        }

    app.state.gauges_of_worker = gauges_of_worker

    def from_writer(call, *args):
        try:
            return call(*args)
        except OSError as e:  # the writer process is restarting or gone: say so, do not guess
            raise HTTPException(
                503, f"the result writer is not answering ({e}); retry later", headers={"Retry-After": "1"}
            ) from None

    @app.get("/health")
    def health() -> dict:
        fast = checker.fast
        if remote is not None:  # the one writer's status, and each worker's figures
            state = from_writer(remote.status)
            results = state["writer"]
        else:
            state = None
            results = checker.writer.status() if checker.writer else {"status": "stored with each answer"}
        out = {
            "status": "ok" if results["status"] in ("ok", "stored with each answer") else "degraded",
            "results": results,
            "memory": memory(),
            "admission": {
                "inflight": admission.inflight,
                "max_inflight": admission.limit,
                "db_checks": db_gate.inflight,
                "max_db_checks": db_gate.limit,
                "max_wait_s": admission.max_wait,
                "loop_lag_s": round(admission.lag, 4),
            },
            "history_window": checker.window.describe() if checker.window else None,
            "rule_sets": {k: len(v) for k, v in checker.rule_sets.items()},
            "engine": checker.engine,
            "fast_covers": {k: fast.covered[k] for k in checker.rule_sets} if fast else {},
            "answered": dict(checker.answered),
            "context_cache": {"visits": len(fast.cache._data), "loads": fast.cache.loads, "hits": fast.cache.hits}
            if fast
            else None,
        }
        if state is not None:
            assert checker.writer is not None  # a worker (remote set) writes through its journal
            out["worker"] = {**state["me"], "journal": checker.writer.status()}
            # the writer process's own memory (it appends every answer to the database)
            out["writer_memory"] = {
                "rss_bytes": state.get("writer_rss_bytes"),
                "duckdb_bytes": state.get("writer_duckdb_bytes"),
                "duckdb_limit": state.get("writer_duckdb_limit"),
                "malloc": state.get("writer_malloc"),
            }
            out["workers"] = {
                **state["workers"],
                "each": [{k: v for k, v in w.items() if k != "metrics"} for w in state["workers"]["each"]],
            }
            if state["workers"]["ready"] < state["workers"]["of"]:
                out["status"] = "degraded"
        return out

    @app.get("/metrics", include_in_schema=True, summary="Prometheus metrics (text format 0.0.4)")
    def prometheus() -> Response:
        if remote is not None:  # every worker's counters summed, its gauges labelled worker="N"
            state = from_writer(remote.status)
            return Response(
                workers_metrics(metrics, state, gauges_of_worker(), state["writer"]),
                media_type="text/plain; version=0.0.4; charset=utf-8",
            )
        w = checker.writer.status() if checker.writer else None
        mem = memory()
        fast = checker.fast
        gauges = [
            ("medaudit_prealert_inflight", "Requests in progress (admission counts them).", admission.inflight),
            ("medaudit_prealert_max_inflight", "Admission limit on requests in progress.", admission.limit),
            ("medaudit_prealert_db_checks", "3101 checks needing the database, running or waiting.", db_gate.inflight),
            ("medaudit_prealert_loop_lag_seconds", "How far behind the event loop runs.", admission.lag),
            (
                "medaudit_prealert_writer_queue_rows",
                "Answered rows queued in memory, not stored yet.",
                w["queued_rows"] if w else None,
            ),
            ("medaudit_prealert_writer_max_rows", "Rows the writer's queue holds.", w["max_rows"] if w else None),
            (
                "medaudit_prealert_writer_journal_segments",
                "Journal segments not stored yet.",
                w["journal_segments"] if w else None,
            ),
            (
                "medaudit_prealert_writer_oldest_unstored_seconds",
                "How long the oldest answer not stored yet has waited.",
                w["oldest_unstored_s"] if w else None,
            ),
            (
                "medaudit_prealert_writer_full",
                "1 while the writer's queue is full (answers kept in the journal).",
                int(checker.writer.full) if checker.writer and w else None,
            ),
            (
                "medaudit_prealert_writer_failures_total",
                "Stores that failed (retried from the journal).",
                w["failures"] if w else None,
            ),
            (
                "medaudit_prealert_context_cache_visits",
                "Visit contexts in memory (fast engine).",
                len(fast.cache._data) if fast else None,
            ),
            ("process_resident_memory_bytes", "Resident memory of the service process.", mem["rss_bytes"]),
            ("medaudit_duckdb_memory_bytes", "Memory DuckDB's buffer manager holds.", mem["duckdb_bytes"]),
        ]
        return Response(metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def answer_3101(inst: str, rule_set: str, raw: bytes) -> Response:
        """The 3101 answer to ``raw`` (the request's body) for the key's institution ``inst``,
        checked with ``rule_set``: the one place the check is made, for the FastAPI route below
        and for :class:`Lane3101`, which answers the served ``POST /prealert/3101`` without
        FastAPI's routing. A request that cannot be answered is a returned 422/503 response or a
        raised :class:`HTTPException` (404 rule set, 400/403/422 from the request's content),
        which both callers turn into the same answer (:func:`_http_error`).

        The body is parsed and validated by pydantic-core straight from the bytes, and the answer
        written with orjson: FastAPI's own body handling and response model cost more than the
        check. A check the fast path answers from memory runs right here on the event loop (no
        thread hand-off); one that needs the database (SQL path, a context not loaded yet, or
        results stored synchronously) runs in the thread pool."""
        try:
            body = Request3101.model_validate_json(raw)
        except ValidationError as e:
            return _invalid(e.errors(include_url=False))
        over = _over_limits(body, max_patients, max_orders)
        if over is not None:
            return over
        try:
            checker.rules(rule_set)
        except RuleSetError as e:
            raise HTTPException(404, str(e)) from None
        reqs = [(p, req, rule_set_of(req, inst, rule_set)) for p, req in _check_requests(body, inst)]
        # inline only when nothing waits on the database: the check from memory, the answer queued
        if checker.writer is not None and all(checker.in_memory(req, rs) for _p, req, rs in reqs):
            results, used = _analyse(checker, inst, body.trig_scen, reqs)
        else:
            try:  # the database's sessions are few: past them, refuse rather than queue
                await db_gate.enter()
            except Overloaded:
                metrics.refused("/prealert/3101", "database")
                return JSONResponse(
                    status_code=503,
                    headers={"Retry-After": str(db_gate.retry_after)},
                    content={
                        "infcode": -1,
                        "err_msg": "the pre-alert service's database checks are at capacity; retry later "
                        "(the order may go ahead unchecked)",
                    },
                )
            try:
                results, used = await run_in_threadpool(_analyse, checker, inst, body.trig_scen, reqs)
            finally:
                await db_gate.leave()
        out = {"infcode": 0, "err_msg": "", "output": {"result": results}}
        return Response(
            orjson.dumps(out, default=_json_default),
            media_type="application/json",
            headers={"X-Medaudit-Engine": ",".join(sorted(used))},
        )

    @app.post(
        "/prealert/3101",
        response_model=Response3101,
        summary="明细审核事前事中分析 (3101)",
        openapi_extra=_body_schema(Request3101),
    )
    async def analyse(
        request: Request,
        inst: str = Depends(institution),
        rule_set: str = Query(LANE_RULE_SET, description="which rule library to use"),
    ) -> Response:
        # served by Lane3101 (create_app's ``lane``); this route gives the OpenAPI docs, answers
        # when the lane is off, and behind a root path (which the lane leaves to FastAPI)
        return await answer_3101(inst, rule_set, await request.body())

    # each added one wraps the ones before: the lane just inside BodyLimit and Instrument, so
    # admission, metrics and the body limit apply to its answers as to the routes'
    if lane:
        app.add_middleware(Lane3101, answer=answer_3101, keys=keys)
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(Instrument, metrics=metrics, admission=admission)  # outermost: refuses before anything

    @app.post("/prealert/3103", response_model=Response3103, summary="事前事中服务反馈 (3103)")
    def feedback(body: Request3103, inst: str = Depends(institution)) -> Response3103 | JSONResponse:
        if len(body.warns) > max_warns:
            return _too_many("warns", "answers", len(body.warns), max_warns, "--max-warns")
        cur = con.cursor()
        ids = [w.warn_rslt_id for w in body.warns]

        def owned() -> set:
            if remote is not None:  # the writer stores every worker's answers so far, then looks
                return from_writer(remote.owned, inst, ids)
            return {
                r[0]
                for r in cur.execute(
                    f"SELECT jr_id FROM prealert_results WHERE fixmedins_code = ? AND jr_id IN ({', '.join('?' for _ in ids)})",
                    [inst, *ids],
                ).fetchall()
            }

        own = owned()
        if (
            len(own) < len(set(ids)) and checker.writer and remote is None
        ):  # answered moments ago: stored once the writer is flushed
            checker.writer.flush()
            own = owned()
        missing = [
            f"warns.{i}.warn_rslt_id {w.warn_rslt_id!r}" for i, w in enumerate(body.warns) if w.warn_rslt_id not in own
        ]
        if missing:
            raise HTTPException(404, "no such result of this institution: " + ", ".join(missing))
        stored = []
        for w in body.warns:
            row = checker.hub.feedback(w.warn_rslt_id, w.dspo_way, w.dspo_way_rea, body.warn_type, inst)
            if row is None:  # the event rules took no action (cannot happen after validation)
                raise HTTPException(422, f"feedback for {w.warn_rslt_id} was not accepted")
            stored.append(row)
        now = dt.datetime.now()
        rows = [
            (r["jr_id"], r["fixmedins_code"], r["warn_type"], r["dspo_way"], r.get("dspo_way_rea"), now) for r in stored
        ]
        if checker.writer:  # stored in the background, as results are (reads flush first)
            checker.writer.add_feedback(rows)
        else:
            write_rows(con, {"prealert_feedback": rows})
        return Response3103(output={"accepted": len(stored)})

    @app.get("/prealert/results/{jr_id}", summary="one answered result of this institution")
    def result(jr_id: str, inst: str = Depends(institution)) -> dict:
        if remote is not None:  # answered by any worker: the writer stores them all, then reads
            assert checker.writer is not None  # a worker (remote set) writes through its journal
            checker.writer.flush()
            rows = from_writer(remote.results, inst, "jr_id", jr_id, 1)
        else:
            if checker.writer:
                checker.writer.flush()
            rows = _results(con, inst, "r.jr_id = ?", [jr_id])
        if not rows:
            raise HTTPException(404, f"no result {jr_id!r} for this institution")
        return rows[0]

    @app.get("/prealert/results", summary="answered results of this institution")
    def results(
        inst: str = Depends(institution), mdtrt_id: Optional[str] = None, limit: int = Query(100, ge=1, le=1000)
    ) -> dict:
        if remote is not None:
            assert checker.writer is not None  # a worker (remote set) writes through its journal
            checker.writer.flush()
            return {"result": from_writer(remote.results, inst, "mdtrt_id", mdtrt_id, limit)}
        if checker.writer:
            checker.writer.flush()
        where, args = ("r.mdtrt_id = ?", [mdtrt_id]) if mdtrt_id else ("TRUE", [])
        return {"result": _results(con, inst, where, args, limit)}

    return app


def workers_metrics(metrics: Metrics, state: dict, mine: dict, writer: dict) -> str:
    """``/metrics`` of a service of several workers: the counters and the latency histogram summed
    over every worker (this one's live, the others' as last reported, at most a second old), the
    writer's gauges once, each worker's gauges with a ``worker`` label (its slot, 0..N-1)."""
    total = Metrics()
    me = state["me"]["slot"]
    total.absorb(metrics.state())
    for w in state["workers"]["each"]:
        if w["slot"] != me and w.get("metrics"):
            total.absorb(w["metrics"])
    each = {w["slot"]: w.get("gauges") or {} for w in state["workers"]["each"]}
    each[me] = mine

    def per(key):
        return [((("worker",), (str(k),)), g.get(key)) for k, g in sorted(each.items()) if g.get(key) is not None]

    gauges = [
        ("medaudit_prealert_workers", "Answering processes configured.", state["workers"]["of"]),
        ("medaudit_prealert_workers_ready", "Answering processes up and reporting.", state["workers"]["ready"]),
        ("medaudit_prealert_inflight", "Requests in progress (admission counts them), per worker.", per("inflight")),
        (
            "medaudit_prealert_db_checks",
            "3101 checks needing the database, running or waiting, per worker.",
            per("db_checks"),
        ),
        ("medaudit_prealert_loop_lag_seconds", "How far behind each worker's event loop runs.", per("loop_lag_s")),
        (
            "medaudit_prealert_writer_journal_segments",
            "Journal segments not stored yet (every worker's).",
            writer["journal_segments"],
        ),
        (
            "medaudit_prealert_writer_oldest_unstored_seconds",
            "How long the oldest answer not stored yet has waited (every worker's).",
            writer["oldest_unstored_s"],
        ),
        (
            "medaudit_prealert_writer_failures_total",
            "Stores that failed (retried from the journal).",
            writer["failures"],
        ),
        ("medaudit_prealert_writer_stored_rows_total", "Rows the writer stored.", writer["stored_rows"]),
        (
            "medaudit_prealert_context_cache_visits",
            "Visit contexts in memory (fast engine), per worker.",
            per("context_cache_visits"),
        ),
        ("process_resident_memory_bytes", "Resident memory of each worker process.", per("rss_bytes")),
        (
            "medaudit_prealert_writer_resident_memory_bytes",
            "Resident memory of the writer process.",
            state.get("writer_rss_bytes"),
        ),
        (
            "medaudit_prealert_writer_duckdb_memory_bytes",
            "Memory the writer's DuckDB buffer manager holds (cached pages of the result tables).",
            state.get("writer_duckdb_bytes"),
        ),
        ("medaudit_duckdb_memory_bytes", "Memory DuckDB's buffer manager holds, per worker.", per("duckdb_bytes")),
    ]
    return total.render(gauges)


def _check_requests(body: Request3101, inst: str) -> list[tuple[str, CheckRequest]]:
    """(patn_id, check request) of each patient's current visit; 403/400/422 for what cannot be checked."""
    out = []
    for i, p in enumerate(body.patient_dtos):
        enc = p.current()
        where = f"patient_dtos.{i}.fsi_encounter_dtos[mdtrt_id={enc.mdtrt_id}]"
        if enc.medins_id != inst:
            raise HTTPException(403, f"{where}.medins_id {enc.medins_id!r} is not the institution of this API key")
        if not enc.fsi_order_dtos:
            raise HTTPException(400, f"{where}.fsi_order_dtos is empty: there is no order to check")
        ids = [o.rx_id for o in enc.fsi_order_dtos]
        if len(set(ids)) != len(ids):
            dup = sorted({x for x in ids if ids.count(x) > 1})
            raise HTTPException(422, f"{where}.fsi_order_dtos: rx_id {', '.join(dup)} given more than once")
        out.append((p.patn_id, to_check_request(p, body.rule_ids)))
    if body.fixmedins_code and body.fixmedins_code != inst:
        raise HTTPException(403, f"fixmedins_code {body.fixmedins_code!r} is not the institution of this API key")
    return out


def _analyse(
    checker: OrderChecker, inst: str, trig_scen: str, reqs: list[tuple[str, CheckRequest, str]]
) -> tuple[list[dict], set[str]]:
    """The 3101 results of the requests, each (patn_id, request, rule set), stored as answered;
    and the paths that answered."""
    results: list[dict] = []
    used: set[str] = set()
    # every visit first: a refused one stops the request before any answer is stored
    for i, (_p, req, _rs) in enumerate(reqs):
        try:
            checker.authorize(req, inst)
        except ForeignVisitError as e:
            raise HTTPException(403, f"patient_dtos.{i}.curr_mdtrt_id: {e}") from None
    for patn_id, req, rule_set in reqs:
        try:
            alerts = checker.check(req, rule_set)
        except RuleSetError as e:
            raise HTTPException(422, f"rule_ids: {e}") from None
        used.add(req.engine or checker.engine)
        results.extend(_record(checker, inst, rule_set, trig_scen, patn_id, req, alerts))
    return results, used


def _collapse(alerts: list[Alert]) -> list[list[Alert]]:
    """Alerts that say the same thing about the same lines (two libraries' rules of one type on one
    item: the sample library's R-SEX-001 and the national NHSA-B1-ITEM-GENDER) -> one group each,
    in the order of their first alert. Same visit, same evidence, same items with the same roles
    and amounts: the doctor would read the same alert twice."""
    groups: dict[tuple, list[Alert]] = {}
    for a in alerts:
        key = (a.mdtrt_id, a.evidence, tuple((i.bkkp_sn, i.role, i.claim) for i in a.items))
        groups.setdefault(key, []).append(a)
    return list(groups.values())


def _distinct(xs) -> list:
    return list(dict.fromkeys(x for x in xs if x))


def _record(
    checker: OrderChecker, inst: str, rule_set: str, trig_scen: str, patn_id: str, req, alerts: list[Alert]
) -> list[dict]:
    """Store the alerts and shape them as 3101 results (``Result3101``'s fields, in its order).

    Identical alerts of several rules (:func:`_collapse`) are one result: ``rule_id`` the first
    rule's, ``rule_name`` and ``vola_evid`` every rule's (distinct, joined by ``；``), ``sev_deg``
    the gravest, and ``rules`` listing each rule with its name, basis and severity. It is stored
    once, with the other rules' ids (``other_rules``), so the doctor's one answer reaches each
    rule's post-hoc finding."""
    if not alerts:
        return []
    now = dt.datetime.now()
    task = uuid.uuid4().hex
    out: list[dict] = []
    res_rows, item_rows = [], []
    for grp in _collapse(alerts):
        a = grp[0]
        jr = store.new_id()
        details = []
        for n, it in enumerate(a.items, start=1):
            kind = "1" if it.role == "violating" else "2"
            details.append(
                {
                    "jrd_id": f"{jr}-{n}",
                    "patn_id": patn_id,
                    "mdtrt_id": a.mdtrt_id,
                    "rx_id": it.bkkp_sn,
                    "hilist_code": it.hilist_code,
                    "vola_item_type": kind,
                    "vola_amt": it.claim,
                }
            )
            item_rows.append((jr, f"{jr}-{n}", it.bkkp_sn, it.hilist_code, kind, it.claim))
        rules = [
            {
                "rule_id": x.rule_id,
                "rule_name": x.rule_name,
                "vola_evid": x.basis or x.rule_name,
                "sev_deg": SEV_DEG.get(x.severity, "2"),
            }
            for x in grp
        ]
        out.append(
            {
                "jr_id": jr,
                "rule_id": a.rule_id,
                "rule_name": "；".join(_distinct(x.rule_name for x in grp)),
                "vola_cont": a.evidence,
                "patn_id": patn_id,
                "mdtrt_id": a.mdtrt_id,
                "judge_result_detail_dtos": details,
                "vola_amt": a.amount,
                "vola_amt_stas": "1",
                "sev_deg": min(r["sev_deg"] for r in rules),
                "vola_evid": "；".join(_distinct(r["vola_evid"] for r in rules)),
                "vola_bhvr_type": "；".join(_distinct(x.nature for x in grp)),
                "task_id": task,
                "rules": rules,
            }
        )
        res_rows.append(
            (
                jr,
                inst,
                rule_set,
                a.rule_id,
                a.rule_version,
                a.rule_name,
                a.rule_type,
                a.severity,
                trig_scen,
                patn_id,
                req.visit["psn_no"],
                a.mdtrt_id,
                a.evidence,
                a.amount,
                now,
                [x.rule_id for x in grp[1:]] or None,
            )
        )
    writer = getattr(checker, "writer", None)
    if writer is not None:
        writer.add(res_rows, item_rows)
    else:
        _write(checker.con, res_rows, item_rows)
    return out


def _write(con, res_rows: list[tuple], item_rows: list[tuple]) -> None:
    """Insert result and item rows now, in one transaction (the service without a writer)."""
    write_rows(con, {"prealert_results": res_rows, "prealert_result_items": item_rows})


def _results(con, inst: str, where: str, args: list, limit: int = 1) -> list[dict]:
    cur = con.cursor()
    rows = cur.execute(
        f"""SELECT r.jr_id, r.rule_id, r.rule_name, r.severity, r.trig_scen, r.patn_id, r.mdtrt_id, r.vola_cont,
                   r.vola_amt, r.created_at, r.other_rules,
                   (SELECT list({{'rx_id': i.rx_id, 'hilist_code': i.hilist_code, 'vola_item_type': i.vola_item_type,
                                  'vola_amt': i.vola_amt}} ORDER BY i.jrd_id) FROM prealert_result_items i WHERE i.jr_id = r.jr_id),
                   (SELECT list({{'dspo_way': f.dspo_way, 'dspo_way_rea': f.dspo_way_rea, 'received_at': f.received_at}}
                                ORDER BY f.received_at) FROM prealert_feedback f WHERE f.jr_id = r.jr_id)
            FROM prealert_results r WHERE r.fixmedins_code = ? AND {where}
            ORDER BY r.created_at DESC, r.jr_id LIMIT {int(limit)}""",
        [inst, *args],
    ).fetchall()
    out = []
    for r in rows:
        out.append(
            {
                "jr_id": r[0],
                "rule_id": r[1],
                "rule_name": r[2],
                "sev_deg": SEV_DEG.get(r[3], "2"),
                "trig_scen": r[4],
                "patn_id": r[5],
                "mdtrt_id": r[6],
                "vola_cont": r[7],
                "vola_amt": float(r[8]),
                "created_at": r[9].isoformat(),
                "rule_ids": [r[1], *(r[10] or [])],
                "judge_result_detail_dtos": [{**d, "vola_amt": float(d["vola_amt"])} for d in (r[11] or [])],
                "feedback": [{**f, "received_at": f["received_at"].isoformat()} for f in (r[12] or [])],
            }
        )
    return out

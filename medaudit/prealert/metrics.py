"""What the pre-alert service says about itself under load: ``/metrics`` and overload answers.

**Metrics** (:class:`Metrics`, served at ``GET /metrics`` in the Prometheus text format 0.0.4,
no API key: scrape it from the hospital's monitoring host, the service binds 127.0.0.1 by default):

- ``medaudit_prealert_requests_total{route, institution, code}``: answered requests;
- ``medaudit_prealert_errors_total{route, institution}``: those answered 5xx (503 overload included);
- ``medaudit_prealert_overload_total{route, reason}``: refused with 503 (``inflight``: the in-flight
  limit and its wait bound; ``lag``: the event loop behind by more than the wait bound;
  ``database``: 3101 checks needing the database past ``max_db_checks``);
- ``medaudit_prealert_request_seconds`` (histogram, by ``route``): time from the request reaching
  the application to the last byte of the answer;
- gauges: ``..._inflight``, ``..._writer_queue_rows`` (and ``_max_rows``), ``..._writer_journal_segments``,
  ``..._writer_full``, ``..._context_cache_visits``, ``process_resident_memory_bytes``,
  ``medaudit_duckdb_memory_bytes``, ``medaudit_duckdb_memory_limit_bytes``.

Labels carry only the route template (``/prealert/results/{jr_id}``, never the path with an id
in it) and the institution code the API key gave (an organisation, not a person; ``none`` for a
call without a valid key). No patient, visit, order or result id ever becomes a label.

**Admission** (:class:`Admission`): a check runs only when fewer than ``limit`` requests are in
progress; a request waits at most ``max_wait`` seconds for a place, else it is answered at once
with 503 and ``Retry-After`` (the HIS then lets the order through, as the national interface
allows). A request is refused the same way while the event loop runs more than ``max_wait``
behind (:meth:`Admission.watch` measures it), which is where requests queue when every check
runs on the loop itself. So past capacity no one waits for seconds: the service answers what it
can within the bound and refuses the rest.
"""

from __future__ import annotations

import asyncio
import math
import ctypes
import os
import threading
import time

import orjson

#: latency buckets (seconds): a doctor's wait, from a fast check to a slow SQL path
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PREFIX = "medaudit_prealert"


def rss_bytes() -> int | None:
    """This process's resident memory (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _glibc(name: str, restype, argtypes=()):
    """glibc's function ``name`` (None: not glibc, or one too old to have it)."""
    try:
        f = getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    f.restype, f.argtypes = restype, list(argtypes)
    return f


_MALLINFO2 = _glibc("mallinfo2", _MallInfo2)  # glibc 2.33 or later
_MALLOC_TRIM = _glibc("malloc_trim", ctypes.c_int, [ctypes.c_size_t])


def trim_heap() -> bool:
    """Give the C allocator's free memory back to the system (glibc's ``malloc_trim(0)``: every
    arena's free pages); after a large free, such as closing a database. False without glibc."""
    return bool(_MALLOC_TRIM is not None and _MALLOC_TRIM(0) >= 0)


def malloc_bytes() -> dict[str, int] | None:
    """What the C allocator (glibc's malloc, which DuckDB, durable-rules and every C extension use;
    Python's own small objects come from its arenas inside it) holds: ``in_use`` by the program,
    ``free_held`` freed but kept by malloc (fragmentation), ``mapped`` its large blocks. A native
    leak grows ``in_use``; memory lost to fragmentation grows ``free_held``. None without glibc."""
    if _MALLINFO2 is None:
        return None
    m = _MALLINFO2()
    return {"in_use": m.uordblks + m.hblkhd, "free_held": m.fordblks, "mapped": m.hblkhd}


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple) -> str:
    return "{" + ",".join(f'{n}="{_esc(v)}"' for n, v in zip(names, values)) + "}" if names else ""


def _num(x: float) -> str:
    if isinstance(x, int):
        return str(x)
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x))


class Metrics:
    """Counters and a latency histogram, kept in plain dicts (one lock; a few hundred series at most:
    routes x institutions x status codes)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple, int] = {}  # (route, institution, code)
        self.errors: dict[tuple, int] = {}  # (route, institution)
        self.overload: dict[tuple, int] = {}  # (route, reason)
        self.hist: dict[str, list] = {}  # route -> [bucket counts..., +Inf count, sum]

    def observe(self, route: str, institution: str, code: int, seconds: float) -> None:
        with self._lock:
            k = (route, institution, str(code))
            self.requests[k] = self.requests.get(k, 0) + 1
            if code >= 500:
                e = (route, institution)
                self.errors[e] = self.errors.get(e, 0) + 1
            h = self.hist.get(route)
            if h is None:
                h = self.hist[route] = [0] * (len(BUCKETS) + 1) + [0.0]
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[len(BUCKETS)] += 1
            h[-1] += seconds

    def state(self) -> dict:
        """The counters and histogram as JSON values (a worker reports them to the writer)."""
        with self._lock:
            return {
                "requests": [[*k, n] for k, n in self.requests.items()],
                "errors": [[*k, n] for k, n in self.errors.items()],
                "overload": [[*k, n] for k, n in self.overload.items()],
                "hist": {r: list(h) for r, h in self.hist.items()},
            }

    def absorb(self, state: dict) -> None:
        """Add another process's :meth:`state` to these counters (``/metrics`` of several workers)."""
        with self._lock:
            for name in ("requests", "errors", "overload"):
                mine = getattr(self, name)
                for *k, n in state.get(name, ()):
                    mine[tuple(k)] = mine.get(tuple(k), 0) + n
            for r, h in state.get("hist", {}).items():
                if len(h) != len(BUCKETS) + 2:
                    continue
                mine = self.hist.setdefault(r, [0] * (len(BUCKETS) + 1) + [0.0])
                for i, v in enumerate(h):
                    mine[i] += v

    def refused(self, route: str, reason: str) -> None:
        with self._lock:
            self.overload[(route, reason)] = self.overload.get((route, reason), 0) + 1

    def render(self, gauges: list[tuple[str, str, float | None]]) -> str:
        """The text format: every counter and the histogram, then ``gauges`` (name, help, value);
        a value may be a list of ((label names, label values), value), one series each."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        with self._lock:
            family(f"{PREFIX}_requests_total", "counter", "Requests answered, by route, institution and HTTP status.")
            for (r, i, c), n in sorted(self.requests.items()):
                out.append(f"{PREFIX}_requests_total{_labels(('route', 'institution', 'code'), (r, i, c))} {n}")
            family(f"{PREFIX}_errors_total", "counter", "Requests answered with a 5xx status (503 overload included).")
            for (r, i), n in sorted(self.errors.items()):
                out.append(f"{PREFIX}_errors_total{_labels(('route', 'institution'), (r, i))} {n}")
            family(f"{PREFIX}_overload_total", "counter", "Requests refused at once with 503 and Retry-After.")
            for (r, why), n in sorted(self.overload.items()):
                out.append(f"{PREFIX}_overload_total{_labels(('route', 'reason'), (r, why))} {n}")
            family(f"{PREFIX}_request_seconds", "histogram", "Time from a request reaching the service to its answer.")
            for r, h in sorted(self.hist.items()):
                for b, n in zip(BUCKETS, h):
                    out.append(f"{PREFIX}_request_seconds_bucket{_labels(('route', 'le'), (r, _num(b)))} {n}")
                out.append(f"{PREFIX}_request_seconds_bucket{_labels(('route', 'le'), (r, '+Inf'))} {h[len(BUCKETS)]}")
                out.append(f"{PREFIX}_request_seconds_sum{_labels(('route',), (r,))} {_num(h[-1])}")
                out.append(f"{PREFIX}_request_seconds_count{_labels(('route',), (r,))} {h[len(BUCKETS)]}")
        for name, help_, value in gauges:
            if value is None or value == []:
                continue
            family(name, "gauge", help_)
            if isinstance(value, list):
                for (names, values), v in value:
                    out.append(f"{name}{_labels(names, values)} {_num(v)}")
            else:
                out.append(f"{name} {_num(value)}")
        return "\n".join(out) + "\n"


class Overloaded(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Admission:
    """At most ``limit`` requests in progress; a request waits at most ``max_wait`` seconds for a
    place, and none is admitted while the event loop lags more than ``max_wait`` (see the module doc)."""

    def __init__(self, limit: int = 64, max_wait: float = 0.1, retry_after: int = 1, watch_lag: bool = True):
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive whole number, got {limit!r}")
        if not max_wait >= 0:
            raise ValueError(f"max_wait must be 0 or more seconds, got {max_wait!r}")
        self.limit, self.max_wait, self.retry_after, self.watch_lag = limit, float(max_wait), retry_after, watch_lag
        self.inflight = 0
        self.lag = 0.0  # how far behind the event loop ran, last measured (seconds)
        #: the last few measurements: only a loop behind in each of them (busy, not one slow
        #: request or the process descheduled for a moment) refuses requests
        self._lags = [0.0] * 3
        self._waiters: asyncio.Queue | None = None
        self._cond: asyncio.Condition | None = None

    async def enter(self) -> None:
        if self.watch_lag and self.max_wait and min(self._lags) > self.max_wait:
            raise Overloaded("lag")
        if self.inflight < self.limit:
            self.inflight += 1
            return
        if not self.max_wait:
            raise Overloaded("inflight")
        if self._cond is None:
            self._cond = asyncio.Condition()
        deadline = time.monotonic() + self.max_wait
        async with self._cond:
            while self.inflight >= self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Overloaded("inflight")
                try:
                    await asyncio.wait_for(self._cond.wait(), left)
                except (asyncio.TimeoutError, TimeoutError):
                    raise Overloaded("inflight") from None
            self.inflight += 1

    async def leave(self) -> None:
        self.inflight -= 1
        if self._cond is not None:
            async with self._cond:
                self._cond.notify(1)

    async def watch(self, every: float = 0.01) -> None:
        """Measure the event loop's lag for ever (run as a task): how much later than asked a
        short sleep wakes up; a loop that runs behind at every one of the last few wake-ups is
        busy with queued requests, and new ones are refused until it catches up."""
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(every)
            self.lag = max(0.0, loop.time() - t - every)
            self._lags = [*self._lags[1:], self.lag]


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Instrument:
    """ASGI middleware: admission for the ``guarded`` path prefixes, metrics for every request."""

    def __init__(self, app, metrics: Metrics, admission: Admission, guarded: tuple[str, ...] = ("/prealert/",)):
        self.app, self.metrics, self.admission, self.guarded = app, metrics, admission, guarded

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        guarded = scope.get("path", "").startswith(self.guarded)
        if guarded:
            try:
                await self.admission.enter()
            except Overloaded as e:
                route = _route_of(scope)
                self.metrics.refused(route, e.reason)
                await _send_json(
                    send,
                    503,
                    {
                        "infcode": -1,
                        "err_msg": (
                            "the pre-alert service is at capacity; retry later (the order may go ahead unchecked)"
                        ),
                    },
                    [(b"retry-after", str(self.admission.retry_after).encode())],
                )
                self.metrics.observe(route, "none", 503, time.perf_counter() - t0)
                return
        try:
            await self.app(scope, receive, sending)
        finally:
            if guarded:
                await self.admission.leave()
            inst = (scope.get("state") or {}).get("medaudit_institution") or "none"
            self.metrics.observe(_route_of(scope), inst, status["code"], time.perf_counter() - t0)


#: the service's route templates, for a refused request (not routed yet)
_KNOWN = ("/prealert/3101", "/prealert/3103", "/prealert/results", "/health", "/metrics")


def _route_of(scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    p = scope.get("path", "")
    if p in _KNOWN:
        return p
    if p.startswith("/prealert/results/"):
        return "/prealert/results/{jr_id}"
    return "other"

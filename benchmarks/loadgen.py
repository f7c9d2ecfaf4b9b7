"""A small HTTP/1.1 load generator for the pre-alert benchmark: asyncio over keep-alive sockets.

A load generator written with a full HTTP client and threads spends more CPU per request than
the service it measures, on the same two cores, and its threads wait for the GIL: the
latency it reports is partly its own. This one sends pre-encoded requests over ``connections``
raw sockets and reads each response by its ``Content-Length`` (the service always sends one),
tens of microseconds per request.

Two ways to drive the service:

- **open loop** (``rate`` > 0): request *i* is due at ``start + i / rate``, whatever the
  service is doing. Its latency is counted from when it was due, not from when a connection
  was free to send it, so a stall shows in every request that queued behind it (no
  "coordinated omission"). This answers "at 500 requests per second, what is the p99?".
- **closed loop** (``rate`` = 0): every connection sends its next request as soon as the
  previous answer is in. This answers "how many requests per second at most?"; the latency
  is then mostly time spent queueing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)
    due_s: list[float] = field(default_factory=list)  # when each of latencies_ms was due (sent), from the start
    statuses: dict[int, int] = field(default_factory=dict)
    headers: dict[str, int] = field(default_factory=dict)  # value of the watched header -> count
    with_results: int = 0  # 200 answers whose output.result is not empty
    errors: list[str] = field(default_factory=list)  # the first few non-200 answers
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process (the client) during the run


def encode(path: str, body: bytes, headers: dict[str, str], host: str = "127.0.0.1") -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


#: how the service writes an answer with nothing to say (orjson: no spaces)
EMPTY = b'"result":[]'


async def _drive(
    port: int, requests: list[bytes], rate: float, connections: int, seconds: float, watch: str, drain_s: float
) -> Run:
    run = Run()
    jobs: asyncio.Queue = asyncio.Queue()
    watch_b = watch.lower().encode() + b":"

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                job = await jobs.get()
                if job is None:
                    return
                i, due = job
                sent = time.perf_counter()
                writer.write(requests[i % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                status, length, value = int(head[9:12]), 0, None
                for line in head.split(b"\r\n")[1:]:
                    low = line.lower()
                    if low.startswith(b"content-length:"):
                        length = int(line[15:])
                    elif low.startswith(watch_b):
                        value = line[len(watch_b) :].strip().decode()
                body = await reader.readexactly(length)
                done = time.perf_counter()
                run.latencies_ms.append((done - (due if rate else sent)) * 1000)
                run.due_s.append((due if rate else sent) - t0)
                run.statuses[status] = run.statuses.get(status, 0) + 1
                run.headers[value or "?"] = run.headers.get(value or "?", 0) + 1
                if status != 200:
                    if len(run.errors) < 5:
                        run.errors.append(f"{status} {body[:200]!r}")
                elif EMPTY not in body:
                    run.with_results += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(connection()) for _ in range(connections)]
    await asyncio.sleep(0.1)  # connections open
    cpu0, t0 = time.process_time(), time.perf_counter()
    end = t0 + seconds
    i = 0
    if rate:
        while True:
            due = t0 + i / rate
            if due > end:
                break
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            jobs.put_nowait((i, due))
            i += 1
    else:
        # closed loop: keep one job waiting per connection until the time is up
        while time.perf_counter() < end:
            while jobs.qsize() < connections:
                jobs.put_nowait((i, 0.0))
                i += 1
            await asyncio.sleep(0.001)
    for _ in tasks:
        jobs.put_nowait(None)
    try:  # a server that stops answering fails the run instead of hanging it
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=max(0.0, end - time.perf_counter()) + drain_s)
    except TimeoutError:
        raise RuntimeError(
            f"the service left requests unanswered {drain_s:g} s after the run's end "
            f"({sum(run.statuses.values())} answered of {i} sent)"
        ) from None
    run.seconds = time.perf_counter() - t0
    run.cpu_seconds = time.process_time() - cpu0
    return run


def drive(
    port: int,
    requests: list[bytes],
    *,
    rate: float,
    connections: int,
    seconds: float,
    watch: str = "X-Medaudit-Engine",
    drain_s: float = 60.0,
) -> Run:
    """Send ``requests`` (cycled) to 127.0.0.1:``port`` for ``seconds``: at ``rate`` per second
    (open loop) or, with ``rate`` 0, as fast as ``connections`` keep-alive connections go. Raises
    RuntimeError if answers are still missing ``drain_s`` seconds after the run's end."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        runner = asyncio.run
    return runner(_drive(port, requests, rate, connections, seconds, watch, drain_s))


def percentile(sorted_ms: list[float], q: float) -> float:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 2)

"""A bounded HTTP load generator: a few processes, each with threads on keep-alive
connections, POSTing one body for a fixed time (and at most a fixed count)."""

from __future__ import annotations

import base64
import http.client
import json
import multiprocessing as mp
import statistics
import threading
import time
from dataclasses import dataclass, field

# The Segment call every intake figure posts: alone, and as a 100-event batch.
TRACK = {
    "anonymousId": "anon-bench",
    "event": "Product Viewed",
    "properties": {"sku": "SKU-1", "price": 19.99, "category": "books"},
    "context": {"page": {"path": "/p/1", "referrer": "https://www.google.com/"}},
}
SINGLE_BODY = json.dumps(TRACK).encode()
BATCH_BODY = json.dumps({"batch": [{"type": "track", **TRACK}] * 100}).encode()


def json_headers(write_key: str) -> dict[str, str]:
    """A JSON POST with ``write_key`` as Segment sends it (HTTP Basic user name)."""
    auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    return {"Content-Type": "application/json", "Authorization": auth}


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: tuple[float, ...] = field(default=(), repr=False)  # each 2xx, seconds

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def latency_ms(self, percent: int) -> float:
        """The ``percent``-th percentile of the 2xx answers' latency, in milliseconds."""
        if len(self.latencies) < 2:
            return 1000 * (self.latencies[0] if self.latencies else 0.0)
        return 1000 * statistics.quantiles(self.latencies, n=100)[percent - 1]


def _worker(
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    seconds: float,
    max_requests: int,
    threads: int,
    out: mp.Queue,
) -> None:
    counts = [0] * threads
    errors = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    started = time.monotonic()
    deadline = started + seconds

    def run(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < deadline and counts[i] < max_requests:
            try:
                sent = time.perf_counter()
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if 200 <= response.status < 300:
                    counts[i] += 1
                    latencies[i].append(time.perf_counter() - sent)
                else:
                    errors[i] += 1
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(
        (sum(counts), sum(errors), time.monotonic() - started, [x for t in latencies for x in t])
    )


def post_load(
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    seconds: float = 4.0,
    max_requests: int = 200_000,
    processes: int = 2,
    threads: int = 2,
) -> LoadResult:
    """POST ``body`` for ``seconds`` from ``processes`` x ``threads`` connections."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    per = max(1, max_requests // (processes * threads))
    procs = [
        ctx.Process(target=_worker, args=(port, path, body, headers, seconds, per, threads, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    # Each worker timed its own window (process start-up excluded); they overlap.
    elapsed = max(r[2] for r in results)
    return LoadResult(
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        elapsed,
        tuple(x for r in results for x in r[3]),
    )

"""Serving benchmark: this scoring service vs. the baseline of Feast's + MLflow's own servers.

Everything on 127.0.0.1, on this machine:

* setup: a sandbox Feast repo from ``feature_repo/fraud/`` (simulator world, daily snapshots online) with a
  SQLite online store and a copy on a Redis server started here (own port), a small XGBoost model logged
  with ``mlflow.xgboost`` and aliased ``champion`` in a temporary MLflow registry (``tests.support.sandbox``);
  the service serves ``fraud_v3``: the snapshots, and the last-hour features and the customer windows
  ending at the transaction (snapshot + the day so far), derived per request from the customer's
  recent activity, which every scored transaction is pushed into;
* (a) this service (``serving.app`` under uvicorn with uvloop + httptools and no access log, tuned as
  ``python -m serving.app`` runs it; prediction log and stream push on, as in production), for each
  online store (SQLite, Redis) with **1 worker pinned to CPU 0** (the load generator pinned to the last
  CPU) and with **one worker per CPU** (server and generator then unpinned: they share the cores);
* (b) the baseline a user would assemble: ``feast serve`` (1 worker, no worker recycling) for the
  features of ``fraud_v1`` + ``mlflow models serve --env-manager local`` (1 worker) for the same model;
  the client calls Feast, computes the request-time features (weekend, night), then calls MLflow;
* every configuration runs ``--runs`` times (default 3): each run a fixed-rate step per ``--rates``
  (default 300 req/s) then a max-throughput step; the summary gives the median and the range of the
  runs, the targets are judged on the medians, and the load average is printed before and after;
* where the time goes: the service's own per-stage histograms (``serving_stage_seconds``, read from
  ``/metrics`` after the runs) and a **py-spy** sampling profile of the 1-worker server during an extra
  max-throughput step (not in the table), summarised by stage and hottest frames;
* the load generator runs in its own process (one per step), on raw asyncio streams (uvloop): HTTP/1.1
  keep-alive over a fixed pool of connections, request bytes serialised before the clock starts.
  Fixed-rate steps are open loop: request i is due at ``start + i / rate`` whatever happened before and
  its latency is measured from that *scheduled* time (no coordinated omission: queueing for a
  connection or behind a slow server counts); bounded (rate x seconds requests, a connection pool, a
  drain deadline after which late requests are cancelled and counted as errors) and self-stopping.
  The max-throughput step keeps ``--concurrency`` connections busy back to back.

Run: ``python -m benchmarks.serving [--seconds 10] [--runs 3] [--workers 1,2] [--stores sqlite,redis]``
(``make bench``). Targets (issue 20): 1 worker, SQLite and Redis: p50 <= 1.5 ms and p99 <= 5 ms at 300
req/s, max throughput >= 3,000 req/s; every configuration >= 15x the baseline's max throughput; 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 180.0, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = ""
            with contextlib.suppress(Exception):
                tail = Path(proc.stdout_log).read_text()[-3000:]
            raise RuntimeError(
                f"{proc.args[:3]} exited with {proc.returncode} before answering {url}:\n{tail}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        args, env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    proc.stdout_log = str(log)
    return proc


# --- load generation (runs in its own process: ``--loadgen SPEC``) ---------------------------------
class HttpConnection:
    """One HTTP/1.1 keep-alive connection on raw asyncio streams: write pre-serialised request bytes,
    read the status line, headers and a Content-Length (or chunked) body. Nothing else."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length) if length else b""
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await self.reader.readexactly(size + 2)
            if size == 0:
                return status, b"".join(parts)
            parts.append(chunk[:-2])

    def close(self) -> None:
        self.writer.close()


def http_post(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Pool:
    """A fixed number of keep-alive connections to one port; a request waits for a free one. Last in,
    first out, so a low rate keeps reusing the same few connections instead of letting them idle into
    the server's keep-alive timeout. Like any HTTP client, a connection the server closed while idle
    is replaced, and a request that got no byte of answer on such a connection is sent once more on a
    new one (both are read-only scoring calls); the time spent doing so counts in its latency."""

    def __init__(self, port: int, size: int) -> None:
        self.port, self.size = port, size
        self.idle: asyncio.LifoQueue[HttpConnection | None] = asyncio.LifoQueue()

    async def open(self) -> None:
        for conn in await asyncio.gather(*(HttpConnection.open(self.port) for _ in range(self.size))):
            self.idle.put_nowait(conn)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        conn = await self.idle.get()
        try:
            if conn is None or conn.reader.at_eof():  # broken earlier / closed by the server while idle
                if conn is not None:
                    conn.close()
                conn = await HttpConnection.open(self.port)
            try:
                result = await conn.request(raw)
            except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise  # an answer was cut off: that is an error, not a stale connection
                conn.close()
                conn = await HttpConnection.open(self.port)
                result = await conn.request(raw)
        except BaseException:
            if conn is not None:
                conn.close()
            self.idle.put_nowait(None)  # reopened by the next request that takes it
            raise
        self.idle.put_nowait(conn)
        return result

    def close(self) -> None:
        while not self.idle.empty():
            conn = self.idle.get_nowait()
            if conn is not None:
                conn.close()


class OursClient:
    """This service: one pre-serialised ``POST /v1/score`` per transaction."""

    def __init__(self, spec: dict) -> None:
        port = spec["port"]
        self.pool = Pool(port, spec["connections"])
        self.raw = [http_post(port, "/v1/score", json.dumps(b).encode()) for b in spec["bodies"]]
        self.pools = [self.pool]

    async def call(self, i: int) -> None:
        status, payload = await self.pool.request(self.raw[i % len(self.raw)])
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")


class BaselineClient:
    """What a user assembles from the two servers: Feast ``/get-online-features`` for the feature
    service, the request-time features (weekend, night) computed by the client, then MLflow
    ``/invocations`` with the model's columns."""

    def __init__(self, spec: dict) -> None:
        self.feast = Pool(spec["port"], spec["connections"])
        self.mlflow = Pool(spec["mlflow_port"], spec["connections"])
        self.pools = [self.feast, self.mlflow]
        self.columns = spec["columns"]
        self.bodies = spec["bodies"]
        self.raw = [
            http_post(
                spec["port"],
                "/get-online-features",
                json.dumps(
                    {
                        "feature_service": "fraud_v1",
                        "entities": {"customer_id": [b["customer_id"]], "terminal_id": [b["terminal_id"]]},
                    }
                ).encode(),
            )
            for b in self.bodies
        ]
        self.mlflow_port = spec["mlflow_port"]

    async def call(self, i: int) -> None:
        body = self.bodies[i % len(self.bodies)]
        status, payload = await self.feast.request(self.raw[i % len(self.raw)])
        if status != 200:
            raise RuntimeError(f"feast HTTP {status}: {payload[:200]!r}")
        answer = json.loads(payload)
        names = answer["metadata"]["feature_names"]
        values = {n: res["values"][0] for n, res in zip(names, answer["results"], strict=True)}
        ts = dt.datetime.fromisoformat(body["tx_datetime"])
        values["tx_amount"] = body["tx_amount"]
        values["tx_during_weekend"] = int(ts.weekday() >= 5)
        values["tx_during_night"] = int(ts.hour < 6)
        row = [0.0 if values.get(c) is None else float(values[c]) for c in self.columns]
        invocation = json.dumps({"dataframe_split": {"columns": self.columns, "data": [row]}}).encode()
        status, payload = await self.mlflow.request(http_post(self.mlflow_port, "/invocations", invocation))
        if status != 200:
            raise RuntimeError(f"mlflow HTTP {status}: {payload[:200]!r}")


async def run_load(spec: dict) -> dict:
    """One load step against one system; returns the summary (see :func:`summarize`)."""
    client = (OursClient if spec["system"] == "ours" else BaselineClient)(spec)
    for pool in client.pools:
        await pool.open()
    try:
        for i in range(spec.get("warmup", 20)):  # connections, caches, first model calls
            await client.call(i)
        if spec["mode"] == "open":
            return await open_loop(client, spec["rate"], spec["seconds"], spec["drain_seconds"])
        return await closed_loop(client, spec["connections"], spec["seconds"])
    finally:
        for pool in client.pools:
            pool.close()


async def open_loop(client, rate: float, seconds: float, drain_seconds: float) -> dict:
    """Open loop at a fixed rate: request i is due at ``start + i / rate`` whatever happened before;
    its latency is measured from that scheduled time (no coordinated omission: waiting for a free
    connection or behind a slow server counts). Requests still unanswered ``drain_seconds`` after the
    last one was due are cancelled and counted as errors."""
    n = int(rate * seconds)
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter() + 0.05

    async def one(i: int, scheduled: float) -> None:
        try:
            await client.call(i)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        else:
            latencies.append(time.perf_counter() - scheduled)

    tasks = []
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, scheduled)))
    done, pending = await asyncio.wait(tasks, timeout=drain_seconds)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        errors.extend(["timeout: no answer within the drain time"] * len(pending))
    return summarize(latencies, errors, time.perf_counter() - start, f"{rate:.0f}/s")


async def closed_loop(client, concurrency: int, seconds: float) -> dict:
    """``concurrency`` clients back to back for ``seconds``: the maximum throughput."""
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    stop_at = start + seconds

    async def worker(k: int) -> None:
        i = k
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                await client.call(i)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            else:
                latencies.append(time.perf_counter() - t)
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return summarize(latencies, errors, time.perf_counter() - start, f"max (c={concurrency})")


def summarize(latencies: list[float], errors: list[str], elapsed: float, label: str) -> dict:
    arr = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "load": label,
        "ok": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "throughput": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "max_ms": float(np.max(arr)),
    }


def loadgen_main(spec_path: str) -> int:
    """Entry of the generator process: pin to the given CPUs, run one step, print the JSON summary."""
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("cpus"):
        os.sched_setaffinity(0, set(spec["cpus"]))
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(run_load(spec))
    print(json.dumps(result))
    return 0


def generate(spec: dict, work: Path) -> dict:
    """Run one load step in a separate generator process (own interpreter, own CPU when pinned)."""
    path = work / f"loadgen-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    budget = spec["seconds"] + spec.get("drain_seconds", 0) + 120
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", "--loadgen", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=budget,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt(r: dict) -> str:
    line = (
        f"  {r['system']:<34} {r['load']:>12} {r['ok']:>7} {r['errors']:>6} "
        f"{r['throughput']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.1f}"
    )
    if r.get("first_error"):
        line += f"\n      first error: {r['first_error'][:200]}"
    return line


HEADER = (
    f"  {'system':<34} {'load':>12} {'ok':>7} {'errors':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    f" {'max ms':>8}"
)


# --- our server process ------------------------------------------------------------------------------
def sandbox_app():
    """The scoring app on the sandbox's Feast repo (``BENCH_FEAST_REPO``, any online store), tuned as
    ``python -m serving.app`` tunes it: what each server process (each uvicorn worker) runs."""
    from feast import FeatureStore

    from jobs.fraud.online import FraudFeatureClient
    from jobs.platform.config import get_settings
    from serving.app import create_app, tune_process
    from tests.support.sandbox import served_columns

    client = FraudFeatureClient(
        store=FeatureStore(repo_path=os.environ["BENCH_FEAST_REPO"]),
        feature_service="fraud_v3",  # snapshots + the last hour and the day, from the pushed recent activity
        feature_columns=served_columns(),
    )
    tune_process()
    return create_app(get_settings(), feature_client=client)


def serve_ours(repo: str, port: int, cpus: list[int], workers: int) -> None:
    """Child process: the sandbox app via uvicorn, ``workers`` processes sharing the port."""
    if cpus:
        os.sched_setaffinity(0, set(cpus))  # before any thread starts: they all inherit it
    import uvicorn

    from serving.app import uvicorn_options

    os.environ["BENCH_FEAST_REPO"] = repo
    if workers > 1:
        uvicorn.run(
            "benchmarks.serving:sandbox_app",
            factory=True,
            host="127.0.0.1",
            port=port,
            workers=workers,
            **uvicorn_options(),
        )
    else:
        uvicorn.run(sandbox_app(), host="127.0.0.1", port=port, **uvicorn_options())


def cpu_plan(pin: bool) -> tuple[list[int], list[int], str]:
    """(server CPUs, generator CPUs, description) of the 1-worker configurations: on >= 2 CPUs the
    service gets CPU 0 and the load generator the last CPU, so the generator never steals the
    server's core."""
    available = sorted(os.sched_getaffinity(0))
    if not pin or len(available) < 2:
        return [], [], f"not pinned ({len(available)} CPUs available)"
    server, gen = available[:1], available[-1:]
    return (
        server,
        gen,
        f"1 worker: pinned to CPU {server[0]}, load generator (own process) to CPU {gen[0]}; "
        f"{len(available)} workers: unpinned, load generator unpinned too (it shares their cores); "
        "feast serve / mlflow serve unpinned",
    )


# --- where a request's time goes ----------------------------------------------------------------------
def stage_means(port: int) -> dict[str, tuple[float, float]]:
    """``serving_stage_seconds`` of the service's ``/metrics``: stage -> (mean microseconds, count)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    rows: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("serving_stage_seconds_sum{"):
            sums[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("serving_stage_seconds_count{"):
            counts[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("serving_batch_rows_sum "):
            rows["sum"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("serving_batch_rows_count "):
            rows["count"] = float(line.rsplit(" ", 1)[1])
    out = {k: (sums[k] / counts[k] * 1e6, counts[k]) for k in sums if counts.get(k)}
    if rows.get("count"):
        out["rows per micro-batch"] = (rows["sum"] / rows["count"], rows["count"])
    return out


PROFILE_CATEGORIES = (  # (what the sample was doing, a marker of its stack), most specific first
    ("stream push (background thread)", "serving/streaming.py"),
    ("prediction log (background thread)", "serving/prediction_log.py"),
    ("model poller (background thread)", "_run (serving/models.py"),
    ("model: inplace_predict", "predict (serving/models.py"),
    ("request features", "_add_request_features (serving/features.py"),
    ("online read (store call + decode)", "(serving/features.py"),
    ("assemble results + log records", "score (serving/app.py"),
    ("micro-batch hand-off", "(serving/batching.py"),
    ("request body: JSON parse + validation (pydantic)", "pydantic"),
    ("middleware (Starlette's error layers, size limit, metrics, fast path), FastAPI routes", "starlette/"),
    ("middleware (Starlette's error layers, size limit, metrics, fast path), FastAPI routes", "fastapi/"),
    ("uvicorn + event loop: sockets, HTTP parsing, task switches", ""),
)


def profile_breakdown(raw: Path, top: int = 12) -> list[str]:
    """Share of py-spy samples per category and the hottest leaf frames, from ``--format raw``."""
    from collections import Counter

    categories: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaves[frames[-1]] += n
        for name, marker in PROFILE_CATEGORIES:
            if marker in stack:  # "" matches every stack: the last category takes the rest
                categories[name] += n
                break
    if not total:
        return ["  (no samples)"]
    lines = [f"  {share / total:6.1%}  {name}" for name, share in categories.most_common()]
    lines.append(f"  hottest frames (self time, of {total} samples):")
    lines += [f"  {n / total:6.1%}  {frame[:110]}" for frame, n in leaves.most_common(top)]
    return lines


def record_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    """py-spy sampling the server process (and its children) while a load step runs: the thread that
    holds the GIL (``--gil``: waits on sockets and locks are not counted), non-blocking (the process
    is never paused to be read)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "250",
            "--nonblocking",
            "--gil",  # the thread holding the GIL: where the one core's Python time goes
            "--subprocesses",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- results -------------------------------------------------------------------------------------------
def median_spread(values: list[float]) -> str:
    arr = np.array(values, dtype=float)
    return f"{np.median(arr):8.2f} [{arr.min():.2f}-{arr.max():.2f}]"


def summary_table(rows: list[dict]) -> list[str]:
    """One line per (system, load): median [min-max] over the runs of p50, p99, throughput."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["system"], r["load"]), []).append(r)
    out = [
        f"  {'system':<36} {'load':>12} {'runs':>4} {'errors':>6} {'req/s median [range]':>26} "
        f"{'p50 ms median [range]':>24} {'p99 ms median [range]':>24}"
    ]
    for (system, load), rs in groups.items():
        out.append(
            f"  {system:<36} {load:>12} {len(rs):>4} {sum(r['errors'] for r in rs):>6} "
            f"{median_spread([r['throughput'] for r in rs]):>26} {median_spread([r['p50_ms'] for r in rs]):>24} "
            f"{median_spread([r['p99_ms'] for r in rs]):>24}"
        )
    return out


def median_of(rows: list[dict], system: str, load_prefix: str, key: str) -> float:
    values = [r[key] for r in rows if r["system"] == system and r["load"].startswith(load_prefix)]
    return float(np.median(values)) if values else float("nan")


def verdicts(rows: list[dict], baseline: str) -> list[str]:
    """The issue's targets, judged on the medians of the runs."""
    out = []
    base = median_of(rows, baseline, "max", "throughput")
    for system in dict.fromkeys(r["system"] for r in rows):
        if not system.startswith("(a)"):
            continue
        errors = sum(r["errors"] for r in rows if r["system"] == system)
        if "1 worker" in system:
            p50 = median_of(rows, system, "300/s", "p50_ms")
            p99 = median_of(rows, system, "300/s", "p99_ms")
            ok = p50 <= 1.5 and p99 <= 5 and errors == 0
            out.append(
                f"  {system}: p50 {p50:.2f} ms, p99 {p99:.2f} ms at 300 req/s (medians), {errors} errors"
                f" -> {'MET' if ok else 'NOT MET'} (p50 <= 1.5 ms, p99 <= 5 ms, no errors)"
            )
        thr = median_of(rows, system, "max", "throughput")
        ratio = thr / base if base == base and base else float("nan")
        floor = 3000 if "1 worker" in system else 0
        ok = thr >= floor and ratio >= 15
        target = f">= {floor} req/s and >= 15x baseline" if floor else ">= 15x baseline"
        out.append(
            f"  {system}: max {thr:.0f} req/s (median) = {ratio:.1f}x baseline ({base:.0f} req/s)"
            f" -> {'MET' if ok else 'NOT MET'} ({target})"
        )
    return out


def load_line(label: str) -> str:
    one, five, _ = os.getloadavg()
    return f"  load average {label}: {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


# --- main ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load step")
    parser.add_argument("--runs", type=int, default=3, help="runs of every step (medians judge the targets)")
    parser.add_argument("--rates", default="300", help="fixed request rates for this service")
    parser.add_argument("--baseline-rates", default="30", help="fixed request rates for the baseline")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in the max-throughput step")
    parser.add_argument("--connections", type=int, default=64, help="connection pool of the fixed-rate steps")
    parser.add_argument(
        "--drain-seconds", type=float, default=15.0, help="wait for late answers, then cancel"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and generator to CPUs")
    parser.add_argument("--only", choices=["ours", "baseline"], help="run one side only")
    parser.add_argument("--workers", default="1,2", help="worker counts of this service to measure")
    parser.add_argument("--stores", default="sqlite,redis", help="online stores of this service to measure")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile under load")
    parser.add_argument(
        "--serve-ours", nargs=4, metavar=("REPO", "PORT", "CPUS", "WORKERS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--loadgen", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen:
        return loadgen_main(args.loadgen)
    if args.serve_ours:
        repo, port, cpus, workers = args.serve_ours
        serve_ours(repo, int(port), [int(c) for c in cpus.split(",") if c], int(workers))
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    os.environ["MLP_HOME"] = str(work / "home")  # before the settings are first read
    os.environ["FRAUD_MODEL_NAME"] = "fraud-detector-bench"
    from jobs.platform.config import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    env = {**os.environ, **settings.service_env(), "FRAUD_MODEL_NAME": settings.case.model_name}
    env["PYTHONPATH"] = str(REPO)
    # mlflow models serve execs `uvicorn` from PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    server_cpus, gen_cpus, pinning = cpu_plan(not args.no_pin)
    procs: list[subprocess.Popen] = []
    notes: list[str] = [load_line("before")]
    print(notes[0], flush=True)
    try:
        print("setup: simulator world, Feast repos (SQLite, Redis), model in MLflow ...", flush=True)
        from tests.support.sandbox import (
            build_feature_store,
            clone_sandbox,
            served_columns,
            train_and_register,
        )

        redis_port = free_port()
        redis_bin = shutil.which("redis-server")
        if redis_bin is None:
            print("redis-server not found: start/install Redis (see README)")
            return 2
        procs.append(
            spawn(
                [
                    redis_bin,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                env,
                work / "redis.log",
            )
        )
        sqlite_box = build_feature_store(work / "feast-sqlite", n_customers=500, n_terminals=800, days=8)
        redis_box = clone_sandbox(sqlite_box, work / "feast-redis", "redis", f"127.0.0.1:{redis_port}")
        boxes = {"sqlite": sqlite_box, "redis": redis_box}
        version = train_and_register(settings, sqlite_box.training, served_columns())
        print(
            f"  model {settings.case.model_name} v{version}, {len(sqlite_box.transactions)} transactions to replay"
        )
        print(f"  CPUs: {pinning}", flush=True)
        txs = sqlite_box.transactions
        bodies = [
            {
                "transaction_id": int(r.transaction_id),
                "customer_id": int(r.customer_id),
                "terminal_id": int(r.terminal_id),
                "tx_amount": float(r.tx_amount),
                "tx_datetime": r.tx_datetime.isoformat(),
            }
            for r in txs.itertuples()
        ]
        model_columns = served_columns()  # the model signature (stream and at-transaction features: 0 here)
        rates = [float(x) for x in args.rates.split(",") if x]
        base_rates = [float(x) for x in args.baseline_rates.split(",") if x]
        common = {
            "bodies": bodies,
            "connections": args.connections,
            "drain_seconds": args.drain_seconds,
        }

        def steps(name: str, spec: dict, step_rates: list[float]) -> list[dict]:
            """``--runs`` rounds of every fixed rate then the max-throughput step, in turn."""
            out = []
            for run in range(args.runs):
                for rate in step_rates:
                    step = {**spec, "mode": "open", "rate": rate, "seconds": args.seconds}
                    out.append({"system": name, "run": run + 1, **generate(step, work)})
                    print(fmt(out[-1]), flush=True)
                step = {**spec, "mode": "closed", "connections": args.concurrency, "seconds": args.seconds}
                out.append({"system": name, "run": run + 1, **generate(step, work)})
                print(fmt(out[-1]), flush=True)
            return out

        rows: list[dict] = []
        breakdowns: list[str] = []
        print(HEADER, flush=True)
        configs = [
            (int(w), store) for w in args.workers.split(",") if w for store in args.stores.split(",") if store
        ]
        n_cpus = len(os.sched_getaffinity(0))
        for workers, store in [] if args.only == "baseline" else configs:
            box = boxes[store]
            pinned = workers == 1
            label = f"(a) this service, {workers} worker{'s' if workers > 1 else ''}, {box.online}"
            if workers > 1 and workers > n_cpus:
                print(f"  {label}: skipped ({n_cpus} CPUs)")
                continue
            port = free_port()
            cpus = ",".join(map(str, server_cpus)) if pinned else ""
            proc = spawn(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.serving",
                    "--serve-ours",
                    str(box.root),
                    str(port),
                    cpus,
                    str(workers),
                ],
                env,
                work / f"ours-{box.online}-{workers}.log",
            )
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
            if workers > 1:  # /readyz answered by one worker: give the others the time to load theirs
                time.sleep(3)
                for _ in range(workers * 10):
                    wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
            spec = {**common, "system": "ours", "port": port, "cpus": gen_cpus if pinned else []}
            rows.extend(steps(label, spec, rates))
            if workers == 1:
                means = stage_means(port)
                breakdowns.append(f"  {label}: mean per stage over every request of its runs (µs)")
                breakdowns += [
                    f"    {stage:<22} {mean:9.1f}   ({count:.0f} observations)"
                    for stage, (mean, count) in means.items()
                ]
                if not args.no_profile:
                    raw = work / f"profile-{box.online}.txt"
                    spy = record_profile(proc.pid, args.seconds, raw)
                    time.sleep(0.5)
                    step = {
                        **spec,
                        "mode": "closed",
                        "connections": args.concurrency,
                        "seconds": args.seconds,
                    }
                    profiled = generate(step, work)
                    _, err = spy.communicate(timeout=args.seconds + 60)
                    breakdowns.append(
                        f"  {label}: py-spy profile at max throughput ({profiled['throughput']:.0f} req/s "
                        f"while sampled; not in the table), share of samples:"
                    )
                    if raw.exists():
                        breakdowns += ["  " + line for line in profile_breakdown(raw)]
                    else:
                        breakdowns.append(f"    py-spy failed: {err.strip()[-300:]}")
            stop(proc)

        baseline = "(b) feast serve + mlflow serve, SQLite"
        if args.only != "ours":
            feast_port, mlflow_port = free_port(), free_port()
            feast = spawn(
                [
                    str(Path(sys.executable).parent / "feast"),
                    "-c",
                    str(sqlite_box.root),
                    "serve",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(feast_port),
                    "--no-access-log",
                    # no worker recycling during the run (default: a restart every ~1000 requests,
                    # a ~1.5 s stall): the baseline at its best
                    "--max-requests",
                    "1000000000",
                ],
                env,
                work / "feast-serve.log",
            )
            mlflow_proc = spawn(
                [
                    str(Path(sys.executable).parent / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{settings.case.model_name}@champion",
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(mlflow_port),
                    "-w",
                    "1",
                ],
                env,
                work / "mlflow-serve.log",
            )
            procs.extend([feast, mlflow_proc])
            wait_http(f"http://127.0.0.1:{feast_port}/health", proc=feast)
            wait_http(f"http://127.0.0.1:{mlflow_port}/health", proc=mlflow_proc)
            base_spec = {
                **common,
                "system": "baseline",
                "port": feast_port,
                "mlflow_port": mlflow_port,
                "columns": model_columns,
                "cpus": gen_cpus,
            }
            rows.extend(steps(baseline, base_spec, base_rates))

        notes.append(load_line("after"))
        print("\nsummary (median [min-max] over the runs)")
        print("\n".join(summary_table(rows)))
        if breakdowns:
            print("\nwhere a request's time goes")
            print("\n".join(breakdowns))
        print("\ntargets (judged on the medians)")
        print("\n".join(verdicts(rows, baseline)))
        print(f"\n  CPUs: {pinning}")
        print("\n".join(notes))
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

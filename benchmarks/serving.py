"""Serving benchmark: this scoring service vs. the baseline of Feast's + MLflow's own servers.

One run on this machine, everything on 127.0.0.1:

* setup: a sandbox Feast repo from ``feature_repo/fraud/`` (simulator world, daily snapshots online) with a
  SQLite online store and a copy on a Redis server started here (own port), a small XGBoost model logged
  with ``mlflow.xgboost`` and aliased ``champion`` in a temporary MLflow registry (``tests.support.sandbox``);
* (a) this service: ``uvicorn`` (1 worker, uvloop + httptools, no access log, as ``python -m
  serving.app`` runs it) serving ``serving.app`` on the SQLite store, then on Redis — prediction log
  and stream push on, as in production;
* (b) the baseline a user would assemble: ``feast serve`` (1 worker) for the features of ``fraud_v1`` +
  ``mlflow models serve --env-manager local`` (1 worker) for the same model; the client calls Feast,
  computes the request-time features (weekend, night), then calls MLflow;
* the load generator runs in its own process (one per step), on raw asyncio streams (uvloop): HTTP/1.1
  keep-alive over a fixed pool of connections, request bytes serialised before the clock starts.
  Fixed-rate steps are open loop: request i is due at ``start + i / rate`` whatever happened before and
  its latency is measured from that *scheduled* time (no coordinated omission: queueing for a
  connection or behind a slow server counts); bounded (rate x seconds requests, a connection pool, a
  drain deadline after which late requests are cancelled and counted as errors) and self-stopping.
  Then a closed-loop step (``--concurrency`` connections back to back) measures the maximum throughput.
* CPUs: on a machine with >= 2 CPUs the service is pinned to CPU 0 and the generator to the last CPU
  (``os.sched_setaffinity``; ``--no-pin`` to turn off); the baseline's two servers are left unpinned
  and ``feast serve`` runs without its default worker recycling (``--max-requests``): the baseline
  gets at least as much CPU as this service and no self-inflicted stalls.

Run: ``python -m benchmarks.serving [--seconds 10] [--rates 100,300]`` (``make bench``).
Targets: p99 < 10 ms at 300 req/s for (a) with SQLite and with Redis; (a) max throughput >= 5x (b).
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


def measure(name: str, base_spec: dict, rates: list[float], args, work: Path) -> list[dict]:
    rows = []
    for rate in rates:
        spec = {**base_spec, "mode": "open", "rate": rate, "seconds": args.seconds}
        rows.append({"system": name, **generate(spec, work)})
        print(fmt(rows[-1]), flush=True)
    spec = {**base_spec, "mode": "closed", "connections": args.concurrency, "seconds": args.seconds}
    rows.append({"system": name, **generate(spec, work)})
    print(fmt(rows[-1]), flush=True)
    return rows


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
def serve_ours(repo: str, port: int, cpus: list[int]) -> None:
    """Child process: the scoring app on the sandbox's Feast repo (any online store) via uvicorn."""
    if cpus:
        os.sched_setaffinity(0, set(cpus))  # before any thread starts: they all inherit it
    import uvicorn
    from feast import FeatureStore

    from jobs.fraud.online import STREAM_FEATURES, FraudFeatureClient
    from jobs.platform.config import get_settings
    from serving.app import create_app, tune_process, uvicorn_options
    from tests.support.sandbox import (
        CUSTOMER_FEATURES,
        REQUEST_FEATURES,
        TERMINAL_FEATURES,
    )

    settings = get_settings()
    client = FraudFeatureClient(
        store=FeatureStore(repo_path=repo),
        feature_service="fraud_v1",
        feature_columns=CUSTOMER_FEATURES + TERMINAL_FEATURES + REQUEST_FEATURES + list(STREAM_FEATURES),
    )
    app = create_app(settings, feature_client=client)
    tune_process()  # as ``python -m serving.app`` does
    uvicorn.run(app, host="127.0.0.1", port=port, **uvicorn_options())


def cpu_plan(pin: bool) -> tuple[list[int], list[int], str]:
    """(server CPUs, generator CPUs, description): on >= 2 CPUs the service gets CPU 0 and the load
    generator the last CPU, so the generator never steals the server's core."""
    available = sorted(os.sched_getaffinity(0))
    if not pin or len(available) < 2:
        return [], [], f"not pinned ({len(available)} CPUs available)"
    server, gen = available[:1], available[-1:]
    return (
        server,
        gen,
        f"this service pinned to CPU {server[0]}, load generator (own process) to CPU {gen[0]}; "
        "feast serve / mlflow serve unpinned (may use every CPU)",
    )


# --- main ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load step")
    parser.add_argument("--rates", default="100,300", help="fixed request rates for this service")
    parser.add_argument("--baseline-rates", default="10,30", help="fixed request rates for the baseline")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in the max-throughput step")
    parser.add_argument("--connections", type=int, default=64, help="connection pool of the fixed-rate steps")
    parser.add_argument(
        "--drain-seconds", type=float, default=15.0, help="wait for late answers, then cancel"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and generator to CPUs")
    parser.add_argument("--only", choices=["ours", "baseline"], help="run one side only")
    parser.add_argument("--serve-ours", nargs=3, metavar=("REPO", "PORT", "CPUS"), help=argparse.SUPPRESS)
    parser.add_argument("--loadgen", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen:
        return loadgen_main(args.loadgen)
    if args.serve_ours:
        cpus = [int(c) for c in args.serve_ours[2].split(",") if c]
        serve_ours(args.serve_ours[0], int(args.serve_ours[1]), cpus)
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
    try:
        print("setup: simulator world, Feast repos (SQLite, Redis), model in MLflow ...", flush=True)
        from tests.support.sandbox import (
            build_feature_store,
            clone_sandbox,
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
        version = train_and_register(settings, sqlite_box.training, sqlite_box.feature_columns)
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
        model_columns = list(sqlite_box.feature_columns)  # the model signature (stream features: 0 here)
        rates = [float(x) for x in args.rates.split(",") if x]
        base_rates = [float(x) for x in args.baseline_rates.split(",") if x]
        common = {
            "bodies": bodies,
            "connections": args.connections,
            "drain_seconds": args.drain_seconds,
            "cpus": gen_cpus,
        }
        rows: list[dict] = []
        print(HEADER, flush=True)
        systems = [("(a) this service, SQLite", sqlite_box), ("(a) this service, Redis", redis_box)]
        for label, box in [] if args.only == "baseline" else systems:
            port = free_port()
            cpus = ",".join(map(str, server_cpus))
            proc = spawn(
                [sys.executable, "-m", "benchmarks.serving", "--serve-ours", str(box.root), str(port), cpus],
                env,
                work / f"ours-{box.online}.log",
            )
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
            rows.extend(measure(label, {**common, "system": "ours", "port": port}, rates, args, work))
            stop(proc)

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
            }
            rows.extend(measure("(b) feast serve + mlflow serve, SQLite", base_spec, base_rates, args, work))

        print("\nsummary")
        print(HEADER)
        for r in rows:
            print(fmt(r))
        best = {r["system"]: r["throughput"] for r in rows if r["load"].startswith("max")}
        base = best.get("(b) feast serve + mlflow serve, SQLite", float("nan"))
        verdicts = []
        for r in rows:
            if r["system"].startswith("(a)") and r["load"] == "300/s":
                ok = r["p99_ms"] < 10 and r["errors"] == 0
                verdicts.append(
                    f"  p99 at 300 req/s, {r['system']}: {r['p99_ms']:.2f} ms, {r['errors']} errors"
                    f" -> {'MET' if ok else 'NOT MET'} (< 10 ms, no errors)"
                )
        for system, thr in best.items():
            if system.startswith("(a)"):
                ratio = thr / base if base else float("nan")
                verdicts.append(
                    f"  max throughput {system}: {thr:.0f} req/s = {ratio:.1f}x baseline ({base:.0f} req/s)"
                    f" -> {'MET' if ratio >= 5 else 'NOT MET'} (>= 5x)"
                )
        print("\ntargets")
        print("\n".join(verdicts))
        print(f"\n  CPUs: {pinning}")
        print(
            f"  load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (machine shared: figures vary)"
        )
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Serving benchmark: this scoring service vs. the baseline of Feast's + MLflow's own servers.

One run on this machine, everything on 127.0.0.1:

* setup: a sandbox Feast repo from ``feature_repo/`` (simulator world, daily snapshots online) with a
  SQLite online store and a copy on a Redis server started here (own port), a small XGBoost model logged
  with ``mlflow.xgboost`` and aliased ``champion`` in a temporary MLflow registry (``serving.sandbox``);
* (a) this service: ``uvicorn`` (1 worker) serving ``serving.app`` on the SQLite store, then on Redis —
  prediction log and stream push on, as in production;
* (b) the baseline a user would assemble: ``feast serve`` (1 worker) for the features of ``fraud_v1`` +
  ``mlflow models serve --env-manager local`` (1 worker) for the same model; the client calls Feast,
  computes the request-time features (weekend, night), then calls MLflow;
* an open-loop async load generator sends requests at fixed rates for a fixed time (bounded in-flight,
  self-stopping; latency measured from each request's *scheduled* send time, so queueing counts), then
  a closed-loop phase measures the maximum throughput of each.

Run: ``python -m benchmarks.serving [--seconds 10] [--rates 100,300]`` (``make bench``).
Targets: p99 < 10 ms at 300 req/s for (a) with SQLite and with Redis; (a) max throughput >= 5x (b).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
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


# --- load generation ------------------------------------------------------------------------------
async def open_loop(call, bodies: list[dict], rate: float, seconds: float, max_in_flight: int = 256) -> dict:
    """Send at ``rate`` req/s for ``seconds``; latency from the scheduled send time; bounded in-flight."""
    n = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(max_in_flight)
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        nonlocal errors
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        async with sem:
            try:
                ok = await call(bodies[i % len(bodies)])
            except Exception:
                ok = False
        if ok:
            latencies.append(time.perf_counter() - scheduled)
        else:
            errors += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    return summarize(latencies, errors, elapsed, f"{rate:.0f}/s")


async def closed_loop(call, bodies: list[dict], concurrency: int, seconds: float) -> dict:
    """``concurrency`` workers back to back for ``seconds``: the maximum throughput."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                ok = await call(bodies[i % len(bodies)])
            except Exception:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t)
            else:
                errors += 1
            i += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return summarize(latencies, errors, time.perf_counter() - start, f"max (c={concurrency})")


def summarize(latencies: list[float], errors: int, elapsed: float, label: str) -> dict:
    arr = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "load": label,
        "ok": len(latencies),
        "errors": errors,
        "throughput": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
    }


# --- the two systems ---------------------------------------------------------------------------------
def ours_call(client, url: str):
    async def call(body: dict) -> bool:
        r = await client.post(url + "/v1/score", json=body)
        return r.status_code == 200

    return call


def baseline_call(client, feast_url: str, mlflow_url: str, columns: list[str]):
    async def call(body: dict) -> bool:
        r = await client.post(
            feast_url + "/get-online-features",
            json={
                "feature_service": "fraud_v1",
                "entities": {"customer_id": [body["customer_id"]], "terminal_id": [body["terminal_id"]]},
            },
        )
        if r.status_code != 200:
            raise RuntimeError(f"feast {r.status_code}: {r.text[:300]}")
        payload = r.json()
        names = payload["metadata"]["feature_names"]
        values = {n: res["values"][0] for n, res in zip(names, payload["results"], strict=True)}
        ts = dt.datetime.fromisoformat(body["tx_datetime"])
        values["tx_amount"] = body["tx_amount"]
        values["tx_during_weekend"] = int(ts.weekday() >= 5)
        values["tx_during_night"] = int(ts.hour < 6)
        row = [0.0 if values.get(c) is None else float(values[c]) for c in columns]
        r = await client.post(
            mlflow_url + "/invocations", json={"dataframe_split": {"columns": columns, "data": [row]}}
        )
        if r.status_code != 200:
            raise RuntimeError(f"mlflow {r.status_code}: {r.text[:300]}")
        return True

    return call


async def measure(name: str, call, bodies, rates, seconds, concurrency) -> list[dict]:
    # warm-up (connection pools, registry caches, first model calls); a failing system fails loudly here
    for body in bodies[:20]:
        await call(body)
    rows = []
    for rate in rates:
        rows.append({"system": name, **await open_loop(call, bodies, rate, seconds)})
        print(fmt(rows[-1]), flush=True)
    rows.append({"system": name, **await closed_loop(call, bodies, concurrency, seconds)})
    print(fmt(rows[-1]), flush=True)
    return rows


def fmt(r: dict) -> str:
    return (
        f"  {r['system']:<34} {r['load']:>12} {r['ok']:>7} {r['errors']:>6} "
        f"{r['throughput']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
    )


HEADER = f"  {'system':<34} {'load':>12} {'ok':>7} {'errors':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"


# --- our server process ------------------------------------------------------------------------------
def serve_ours(repo: str, port: int) -> None:
    """Child process: the scoring app on the sandbox's Feast repo (any online store) via uvicorn."""
    import uvicorn
    from feast import FeatureStore

    from jobs.config import get_settings
    from serving.app import create_app
    from serving.features import FeastFeatureClient
    from serving.sandbox import (
        CUSTOMER_FEATURES,
        REQUEST_FEATURES,
        TERMINAL_FEATURES,
        sandbox_request_features,
    )
    from serving.streaming import STREAM_FEATURES

    settings = get_settings()
    client = FeastFeatureClient(
        store=FeatureStore(repo_path=repo),
        feature_service="fraud_v1",
        feature_columns=CUSTOMER_FEATURES + TERMINAL_FEATURES + REQUEST_FEATURES + list(STREAM_FEATURES),
        request_fn=sandbox_request_features,
    )
    app = create_app(settings, feature_client=client)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- main ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load step")
    parser.add_argument("--rates", default="100,300", help="fixed request rates for this service")
    parser.add_argument("--baseline-rates", default="10,30", help="fixed request rates for the baseline")
    parser.add_argument("--concurrency", type=int, default=16, help="clients in the max-throughput step")
    parser.add_argument("--only", choices=["ours", "baseline"], help="run one side only")
    parser.add_argument("--serve-ours", nargs=2, metavar=("REPO", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_ours:
        serve_ours(args.serve_ours[0], int(args.serve_ours[1]))
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    os.environ["FRAUD_HOME"] = str(work / "home")  # before the settings are first read
    os.environ["FRAUD_MODEL_NAME"] = "fraud-detector-bench"
    from jobs.config import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    env = {**os.environ, **settings.service_env(), "FRAUD_MODEL_NAME": settings.model_name}
    env["PYTHONPATH"] = str(REPO)
    # mlflow models serve execs `uvicorn` from PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    procs: list[subprocess.Popen] = []
    try:
        print("setup: simulator world, Feast repos (SQLite, Redis), model in MLflow ...", flush=True)
        from serving.sandbox import (
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
            f"  model {settings.model_name} v{version}, {len(sqlite_box.transactions)} transactions to replay"
        )
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

        import httpx

        rates = [float(x) for x in args.rates.split(",") if x]
        base_rates = [float(x) for x in args.baseline_rates.split(",") if x]
        rows: list[dict] = []

        async def run_all() -> None:
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                systems = [("(a) this service, SQLite", sqlite_box), ("(a) this service, Redis", redis_box)]
                for label, box in [] if args.only == "baseline" else systems:
                    port = free_port()
                    proc = spawn(
                        [
                            sys.executable,
                            "-m",
                            "benchmarks.serving",
                            "--serve-ours",
                            str(box.root),
                            str(port),
                        ],
                        env,
                        work / f"ours-{box.online}.log",
                    )
                    procs.append(proc)
                    url = f"http://127.0.0.1:{port}"
                    wait_http(url + "/readyz", proc=proc)
                    rows.extend(
                        await measure(
                            label, ours_call(client, url), bodies, rates, args.seconds, args.concurrency
                        )
                    )
                    stop(proc)

                if args.only == "ours":
                    return
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
                        f"models:/{settings.model_name}@champion",
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
                call = baseline_call(
                    client, f"http://127.0.0.1:{feast_port}", f"http://127.0.0.1:{mlflow_port}", model_columns
                )
                rows.extend(
                    await measure(
                        "(b) feast serve + mlflow serve, SQLite",
                        call,
                        bodies,
                        base_rates,
                        args.seconds,
                        args.concurrency,
                    )
                )

        print(HEADER, flush=True)
        asyncio.run(run_all())

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
                    f"  p99 at 300 req/s, {r['system']}: {r['p99_ms']:.2f} ms -> {'MET' if ok else 'NOT MET'} (< 10 ms)"
                )
        for system, thr in best.items():
            if system.startswith("(a)"):
                ratio = thr / base if base else float("nan")
                verdicts.append(
                    f"  max throughput {system}: {thr:.0f} req/s = {ratio:.1f}x baseline ({base:.0f} req/s) -> {'MET' if ratio >= 5 else 'NOT MET'} (>= 5x)"
                )
        print("\ntargets")
        print("\n".join(verdicts))
        print(
            f"\n  load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (machine shared: figures vary)"
        )
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Drive Airflow the way a user does: its REST API v2 (the API server ``make demo`` leaves running).

A thin typed client for what the demo, the scheduler-path test and the benchmark do: log in, wait for the
DAG processor to have parsed the DAGs, unpause, create a backfill, trigger a run with a conf, and wait for
runs with a progress callback. Nothing here runs a task: the scheduler does.

    python -m jobs.platform.airflow_api runs fraud_ingest               # the runs of a DAG and their states
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from jobs.platform.config import Settings, get_settings


class AirflowApiError(RuntimeError):
    """The API answered with an error: the message has the method, the path, the status and the body."""


@dataclass(frozen=True)
class RunState:
    dag_id: str
    run_id: str
    state: str
    run_type: str
    logical_date: str | None
    start_date: str | None
    end_date: str | None

    @property
    def seconds(self) -> float | None:
        if not (self.start_date and self.end_date):
            return None
        start, end = dt.datetime.fromisoformat(self.start_date), dt.datetime.fromisoformat(self.end_date)
        return (end - start).total_seconds()

    @classmethod
    def of(cls, body: dict[str, Any]) -> RunState:
        return cls(
            dag_id=body["dag_id"],
            run_id=body["dag_run_id"],
            state=str(body.get("state")),
            run_type=str(body.get("run_type")),
            logical_date=body.get("logical_date"),
            start_date=body.get("start_date"),
            end_date=body.get("end_date"),
        )


def admin_password(settings: Settings, user: str = "admin") -> str:
    """The password Airflow's simple auth manager generated for ``user`` on this machine."""
    path = Path(settings.service_env()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    try:
        return json.loads(path.read_text())[user]
    except (FileNotFoundError, KeyError) as exc:
        raise AirflowApiError(
            f"no password for Airflow user {user!r} in {path} (rule: the API server writes it on first start)"
        ) from exc


class AirflowClient:
    """REST API v2 client with a bearer token from the auth manager's ``/auth/token``."""

    def __init__(
        self,
        base_url: str | None = None,
        username: str = "admin",
        password: str | None = None,
        settings: Settings | None = None,
        timeout: float = 30.0,
        attempts: int = 8,
        scheduler_grace: float = 120.0,
    ) -> None:
        self.attempts = attempts
        self.scheduler_grace = scheduler_grace
        self.settings = settings or get_settings()
        self.base_url = (base_url or f"http://127.0.0.1:{self.settings.airflow_port}").rstrip("/")
        self.username = username
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------------
    def login(self) -> None:
        password = self._password or admin_password(self.settings, self.username)
        try:
            resp = self._http.post("/auth/token", json={"username": self.username, "password": password})
        except httpx.HTTPError as exc:
            raise AirflowApiError(
                f"POST /auth/token: no answer from the Airflow API server at {self.base_url} "
                f"({type(exc).__name__}; is it running? port: MLP_AIRFLOW_PORT)"
            ) from exc
        if resp.status_code not in (200, 201):
            raise AirflowApiError(f"POST /auth/token: {resp.status_code} {resp.text[:500]}")
        self._token = resp.json()["access_token"]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._token is None:
            self.login()
        relogged = False
        for attempt in range(1, self.attempts + 1):
            try:
                resp = self._http.request(
                    method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs
                )
            except httpx.HTTPError as exc:
                if attempt < self.attempts:  # a busy API server on 2 cores: try again
                    time.sleep(min(2.0 * attempt, 10.0))
                    continue
                raise AirflowApiError(
                    f"{method} {path}: no answer from the Airflow API server at {self.base_url} "
                    f"({type(exc).__name__}; is it running? port: MLP_AIRFLOW_PORT)"
                ) from exc
            if resp.status_code == 401 and not relogged:  # token expired: log in again once
                self.login()
                relogged = True
                continue
            # 503: the metadata database was busy (SQLite is locked while the scheduler writes); Airflow
            # rolled the request back, so it is safe to send again after a pause
            if resp.status_code == 503 and attempt < self.attempts:
                time.sleep(min(2.0 * attempt, 10.0))
                continue
            break
        if resp.status_code >= 400:
            raise AirflowApiError(f"{method} {path}: {resp.status_code} {resp.text[:1000]}")
        return resp.json() if resp.content else None

    # --- what users do --------------------------------------------------------------------------------
    def scheduler_healthy(self) -> bool:
        try:
            body = self._http.get("/api/v2/monitor/health").json()
        except (httpx.HTTPError, ValueError):
            return False
        return (body.get("scheduler") or {}).get("status") == "healthy"

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 300.0) -> None:
        """Until the DAG processor has parsed every DAG of ``dag_ids`` (a DAG the API does not list yet
        cannot be unpaused or triggered)."""
        deadline = time.monotonic() + timeout
        while True:
            known = {d["dag_id"] for d in self.request("GET", "/api/v2/dags", params={"limit": 1000})["dags"]}
            missing = sorted(set(dag_ids) - known)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AirflowApiError(
                    f"DAGs not parsed after {timeout:.0f}s: {missing} (see the dag-processor log)"
                )
            time.sleep(2)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": paused})

    def create_backfill(
        self,
        dag_id: str,
        from_date: dt.date,
        to_date: dt.date,
        max_active_runs: int = 2,
        reprocess_behavior: str = "none",
    ) -> dict[str, Any]:
        """``POST /api/v2/backfills``: one run per day of ``from_date..to_date`` (logical dates)."""
        body = {
            "dag_id": dag_id,
            "from_date": _midnight(from_date),
            "to_date": _midnight(to_date),
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess_behavior,
        }
        return self.request("POST", "/api/v2/backfills", json=body)

    def trigger(
        self, dag_id: str, logical_date: dt.date | None, conf: dict[str, Any] | None = None
    ) -> RunState:
        body: dict[str, Any] = {"logical_date": _midnight(logical_date) if logical_date else None}
        if conf:
            body["conf"] = conf
        return RunState.of(self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body))

    def runs(self, dag_id: str, run_type: str | None = None) -> list[RunState]:
        params: dict[str, Any] = {"limit": 1000, "order_by": "run_after"}
        if run_type:
            params["run_type"] = [run_type]
        body = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", params=params)
        return [RunState.of(r) for r in body["dag_runs"]]

    def run(self, dag_id: str, run_id: str) -> RunState:
        return RunState.of(self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def wait_for(
        self,
        done: Callable[[], tuple[int, int, list[RunState]]],
        timeout: float,
        progress: Callable[[int, int], None] | None = None,
        poll: float = 2.0,
    ) -> None:
        """Poll ``done() -> (finished, total, failed_runs)`` until finished == total; raise on a failed run,
        on the timeout, or when a scheduler that was heartbeating stops for ``scheduler_grace`` seconds."""
        deadline = time.monotonic() + timeout
        seen_healthy = False
        unhealthy_since: float | None = None
        while True:
            if self.scheduler_healthy():
                seen_healthy, unhealthy_since = True, None
            elif seen_healthy:
                unhealthy_since = unhealthy_since or time.monotonic()
                if time.monotonic() - unhealthy_since > self.scheduler_grace:
                    raise AirflowApiError(
                        f"the scheduler stopped heartbeating {self.scheduler_grace:.0f}s ago "
                        "(see the airflow-scheduler log under <home>/logs)"
                    )
            finished, total, failed = done()
            if progress:
                progress(finished, total)
            if failed:
                names = ", ".join(f"{r.dag_id}/{r.run_id}" for r in failed[:5])
                raise AirflowApiError(f"{len(failed)} run(s) failed: {names} (task logs: Airflow UI)")
            if total and finished >= total:
                return
            if time.monotonic() > deadline:
                raise AirflowApiError(f"{finished} of {total} runs finished after {timeout:.0f}s")
            time.sleep(poll)


def _midnight(day: dt.date) -> str:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).isoformat()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.platform.airflow_api", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=["runs"])
    parser.add_argument("dag_id")
    args = parser.parse_args(argv)
    with AirflowClient() as client:
        for run in client.runs(args.dag_id):
            seconds = f"{run.seconds:.1f}s" if run.seconds is not None else "-"
            print(f"{run.run_id:<60} {run.state:<10} {seconds:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

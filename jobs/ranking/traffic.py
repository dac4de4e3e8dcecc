"""The traffic driver: the simulated users against the **running** recommendation API.

``python -m jobs.ranking.traffic --day D [--requests N] [--seconds T] [--url http://127.0.0.1:8000] [--land]``

For the world's requests of day ``D`` (in time order, at most ``N``, for at most ``T`` seconds) the
driver asks ``POST /v1/recommend`` for each slate (the user, the request's time and device), then the
simulator decides from the slates **as served** what the users examine (the position-based model and
session fatigue), click and buy (:meth:`jobs.ranking.world.World.traffic`). It reports what was
served and what it was worth **in truth**: the expected CTR of the served slates under the world's
click model beside the popularity logging policy's and the oracle's for the same requests, the
logged (simulated) CTR per arm and model version, the degraded share and the latency.

With ``--land`` the day's landing files are written as the simulate CLI writes them (the catalogue's
changes, the served impressions with their ``policy`` = ``arm@version`` or ``fallback:source`` and
propensity 1 — the ranker is deterministic — and the clicks and purchases that arrive that day,
the day before's late ones included), so the next ingestion closes the loop: served slates ->
users' answers -> the lake -> features -> the next ranker.

Loopback only: the driver refuses a URL that is not ``127.0.0.1``, ``localhost`` or ``::1``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger
from jobs.platform.storage import as_date
from jobs.ranking.schema import SLATE_SIZE
from jobs.ranking.world import PopularityPolicy, World

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class TrafficError(RuntimeError):
    """The service answered something the driver cannot play (not a slate)."""


def check_loopback(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise ValueError(
            f"url: host {host!r} is not loopback; rule: the driver only plays 127.0.0.1/localhost/::1"
        )
    return url.rstrip("/")


@dataclass
class Replay:
    """A :class:`jobs.ranking.world.Policy` that serves slates already chosen (by the API)."""

    items: np.ndarray
    name: str = "served"

    def slates(self, world, requests, day, rng) -> tuple[np.ndarray, np.ndarray]:
        if len(requests) != len(self.items):
            raise ValueError(f"requests: {len(requests)} rows for {len(self.items)} served slates")
        return self.items, np.ones(self.items.shape)


@dataclass
class Served:
    """What the API answered for each played request."""

    requests: pd.DataFrame  # the world's request rows that were played
    items: np.ndarray  # (requests x slate size) item ids as served (short slates padded, see ``padded``)
    answers: pd.DataFrame  # per request: arm, model_version, source, degraded, reason, latency_ms, padded
    stopped: str = ""  # why fewer requests were played than asked ("" if all)
    timings: list[dict[str, float]] = field(default_factory=list)


def play(
    url: str,
    requests: pd.DataFrame,
    world: World,
    day: dt.date,
    *,
    seconds: float | None = None,
    api_key: str | None = None,
    timeout: float = 5.0,
) -> Served:
    """Ask the API for the slate of each request (in order) until done or ``seconds`` have passed."""
    import httpx

    url = check_loopback(url)
    headers = {"X-API-Key": api_key} if api_key else {}
    popular = np.argsort(-world.popularity(day), kind="stable")
    catalogue = world.catalogue(day).item_id
    deadline = None if seconds is None else time.monotonic() + seconds
    rows, slates, timings = [], [], []
    stopped = ""
    with httpx.Client(base_url=url, timeout=timeout, headers=headers) as client:
        for r in requests.itertuples(index=False):
            if deadline is not None and time.monotonic() > deadline:
                stopped = f"time budget of {seconds:g} s reached"
                break
            body = {
                "request_id": str(r.request_id),
                "user_id": int(r.user_id),
                "context": {"timestamp": pd.Timestamp(r.shown_at).isoformat() + "Z", "device": str(r.device)},
                "k": SLATE_SIZE,
            }
            t = time.perf_counter()
            resp = client.post("/v1/recommend", json=body)
            latency = (time.perf_counter() - t) * 1000.0
            if resp.status_code != 200:
                raise TrafficError(f"/v1/recommend answered {resp.status_code} for {body}: {resp.text[:300]}")
            got = resp.json()
            ids = [int(i["item_id"]) for i in got["items"]][:SLATE_SIZE]
            bad = [i for i in ids if not 0 <= i < len(catalogue)]
            if bad:
                raise TrafficError(f"/v1/recommend served items {bad} outside the catalogue of {day}")
            padded = SLATE_SIZE - len(ids)
            if padded:  # a short slate: the rest of the page shows the most popular items
                taken = set(ids)
                ids += [int(i) for i in popular if int(i) not in taken][:padded]
            slates.append(ids)
            timings.append(got.get("timings_ms") or {})
            rows.append(
                {
                    "request_id": int(r.request_id),
                    "arm": got["arm"],
                    "model_version": got["model_version"],
                    "source": got["source"],
                    "degraded": bool(got["degraded"]),
                    "reason": got["reason"],
                    "latency_ms": latency,
                    "padded": padded,
                }
            )
    played = requests.head(len(rows)).reset_index(drop=True)
    items = np.asarray(slates, dtype=np.int64).reshape(len(rows), SLATE_SIZE)
    return Served(played, items, pd.DataFrame(rows), stopped, timings)


def policy_labels(answers: pd.DataFrame) -> np.ndarray:
    """The impressions' ``policy``: ``arm@version`` for the live funnel, ``fallback:<source>`` otherwise."""
    live = answers["source"].eq("funnel").to_numpy()
    arm = answers["arm"].fillna("").astype(str) + "@" + answers["model_version"].fillna("").astype(str)
    return np.where(live, arm.to_numpy(), ("fallback:" + answers["source"].astype(str)).to_numpy())


def drive(
    day: str | dt.date,
    url: str,
    settings: Settings | None = None,
    *,
    requests: int | None = 1000,
    seconds: float | None = 120.0,
    land: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Play day ``day``'s first ``requests`` requests against the API; returns the report (and with
    ``land`` writes the day's landing files)."""
    settings = (settings or get_settings()).with_use_case("ranking")
    log = get_logger("ranking_traffic", str(day))
    world = World(settings.case.world_config())
    day = as_date(day)
    wanted = world.requests(day)
    if requests is not None:
        wanted = wanted.head(requests)
    t0 = time.monotonic()
    served = play(url, wanted, world, day, seconds=seconds, api_key=_api_key(settings))
    if served.answers.empty:
        raise TrafficError(f"no request of {day} was played ({served.stopped or 'none asked'})")
    labels = policy_labels(served.answers)
    traffic = world.traffic(day, Replay(served.items), requests=served.requests)
    traffic.impressions["policy"] = np.repeat(labels, SLATE_SIZE)

    req = served.requests
    users, devices = req["user_id"].to_numpy(), req["device"].to_numpy()
    index = req["request_index"].to_numpy()

    def true_ctr(slates: np.ndarray) -> np.ndarray:  # expected clicks per impression, per request
        return world.expected_clicks(users, slates, day, devices, index) / SLATE_SIZE

    served_ctr = true_ctr(served.items)
    popularity_items, _ = PopularityPolicy().slates(world, req, day, np.random.default_rng(0))
    oracle = world.best_slates(users, day, devices)
    clicked = traffic.impressions["impression_id"].isin(traffic.clicks["impression_id"]).to_numpy()
    per_request_clicks = clicked.reshape(-1, SLATE_SIZE).sum(axis=1)
    arms = {}
    for label in sorted(set(labels)):
        mask = labels == label
        arms[label] = {
            "requests": int(mask.sum()),
            "logged_ctr": float(per_request_clicks[mask].sum() / (mask.sum() * SLATE_SIZE)),
            "true_ctr": float(served_ctr[mask].mean()),
        }
    latency = served.answers["latency_ms"]
    report: dict[str, Any] = {
        "day": day.isoformat(),
        "asked": len(wanted),
        "played": len(req),
        "stopped": served.stopped,
        "users": int(req["user_id"].nunique()),
        "degraded_share": float(served.answers["degraded"].mean()),
        "padded_slates": int((served.answers["padded"] > 0).sum()),
        "true_ctr": {
            "served": float(served_ctr.mean()),
            "popularity": float(true_ctr(popularity_items).mean()),
            "oracle": float(true_ctr(oracle).mean()),
        },
        "logged_ctr": float(clicked.mean()),
        "clicks": len(traffic.clicks),
        "purchases": len(traffic.purchases),
        "arms": arms,
        "latency_ms": {"p50": float(latency.median()), "p99": float(latency.quantile(0.99))},
        "stage_ms_p50": pd.DataFrame(served.timings).median().round(3).to_dict() if served.timings else {},
        "seconds": round(time.monotonic() - t0, 2),
    }
    report["true_ctr"]["served_share_of_oracle"] = report["true_ctr"]["served"] / report["true_ctr"]["oracle"]
    if land:
        report["landed"] = _land(world, day, traffic, settings, overwrite)
    log.info("traffic_played", **{k: v for k, v in report.items() if k not in ("arms", "stage_ms_p50")})
    return report


def _api_key(settings: Settings) -> str | None:
    key = settings.serving_api_key
    return key.get_secret_value() if key is not None else None


def _land(world: World, day: dt.date, traffic, settings: Settings, overwrite: bool) -> dict[str, int]:
    """The day's four landing files and done markers, as ``jobs.ranking.simulate`` writes them; the day
    before's late clicks and purchases come from its traffic as it landed (:func:`_landed_traffic`:
    the simulator's, or a played day's slates replayed), so played days can follow each other."""
    from jobs.platform.landing import mark_landed
    from jobs.platform.storage import StorageLayout
    from jobs.ranking.datasets import DATASETS
    from jobs.ranking.simulate import to_csv

    layout = StorageLayout(settings)
    folders = {name: layout.path(spec.landing, day) for name, spec in DATASETS.items()}
    existing = [str(p) for p in folders.values() if (p / "_SUCCESS").exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"landing of {day}: {existing} already landed; rule: pass --overwrite to replace it"
        )
    before = day - dt.timedelta(days=1)
    days = []
    if world.day_index(day) > 0:
        days.append(_landed_traffic(world, before, layout.path(DATASETS["impressions"].landing, before)))
    files = world.landing_of(day, [*days, traffic])
    for name, frame in files.items():
        to_csv(frame[list(DATASETS[name].raw_columns)], folders[name] / f"{name}.csv")
    for name in files:
        mark_landed(folders[name], settings)
    return {name: len(frame) for name, frame in files.items()}


def _landed_traffic(world: World, day: dt.date, folder) -> Any:
    """Day ``day``'s traffic as it landed, for its late clicks and purchases: the popularity policy's
    when the simulator landed it (or nothing landed), else the played slates replayed from its
    impressions file (the world's click draws depend only on the requests and items, so the replay
    gives the same clicks and purchases as the day's play)."""
    landed = folder / "impressions.csv"
    if not landed.exists():
        return world.traffic(day)
    imp = pd.read_csv(landed, usecols=["request_id", "slot", "item_id", "policy"])
    if set(imp["policy"].unique()) <= {"popularity"}:
        return world.traffic(day)
    requests = world.requests(day)
    requests = requests[requests["request_id"].isin(imp["request_id"])].reset_index(drop=True)
    slates = imp.pivot(index="request_id", columns="slot", values="item_id")
    if len(slates) != len(requests) or slates.shape[1] != SLATE_SIZE or slates.isna().any().any():
        raise ValueError(
            f"landing of {day}: {landed} does not hold whole {SLATE_SIZE}-slot slates of the world's requests"
        )
    items = slates.loc[requests["request_id"]].to_numpy(dtype=np.int64)
    return world.traffic(day, Replay(items), requests=requests)


def main(argv: list[str] | None = None) -> int:
    settings = get_settings().with_use_case("ranking")
    parser = argparse.ArgumentParser(
        prog="python -m jobs.ranking.traffic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--day", required=True, help="the world's day to play (YYYY-MM-DD)")
    parser.add_argument("--url", default=f"http://{settings.serving_host}:{settings.serving_port}")
    parser.add_argument(
        "--requests", type=int, default=1000, help="at most this many requests (in time order)"
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="stop asking after this many seconds")
    parser.add_argument("--land", action="store_true", help="write the day's landing files")
    parser.add_argument("--overwrite", action="store_true", help="with --land: replace a landed day")
    args = parser.parse_args(argv)
    try:
        report = drive(
            args.day,
            args.url,
            settings,
            requests=args.requests,
            seconds=args.seconds,
            land=args.land,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError, TrafficError) as exc:
        print(f"python -m jobs.ranking.traffic: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

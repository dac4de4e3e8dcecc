"""The model registry: MLflow registered models, the ``champion``/``challenger`` aliases, and an
append-only audit log of every alias change.

* ``register_challenger`` registers a logged model as a new version and points ``challenger`` at it.
* ``promote`` points ``champion`` at a version (after the gate said yes), ``rollback`` restores the
  previous champion in one step; both are recorded with who, why, when, the run and the metrics.
* ``record_refusal`` records a gate refusal (the champion stays).
* ``load_model(alias)`` is how serving and batch prediction obtain a model: ``models:/<name>@<alias>``
  through ``mlflow.xgboost``, with the version and its decision threshold: the model-version tag the
  use case declares (``UseCase.decision_tag``; fraud: ``decision_threshold``, flag a transaction when
  ``score >= threshold``). A use case without a decision policy gets ``None``.

The audit log is a JSON-lines file ``<reports>/model_registry/<model name>/audit.jsonl``; each line
holds seq, time, actor, action (challenger | promote | refuse | rollback), alias, version,
previous_version, run_id, reason and metrics. Writers hold an exclusive file lock while they read
the current state, move the alias and append, so concurrent promotions are serialised.

CLI::

    python -m jobs.platform.registry show
    python -m jobs.platform.registry history [--json]
    python -m jobs.platform.registry rollback --reason "AP dropped in production" [--actor alice]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import getpass
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger
from jobs.platform.storage import StorageLayout

CHAMPION = "champion"
CHALLENGER = "challenger"


def decision_tag(settings: Settings | None = None) -> str | None:
    """The model-version tag that holds the use case's decision threshold (None: no decision policy)."""
    from jobs.platform.use_case import get_use_case

    return get_use_case(settings or get_settings()).decision_tag


class ModelNotFoundError(LookupError):
    """No model version behind the requested alias/version (serving answers 503)."""


# --- MLflow wiring ---------------------------------------------------------------------------
def configure_mlflow(settings: Settings | None = None, experiment: str | None = None) -> str:
    """Point MLflow at the platform's tracking/registry store and make sure the experiment exists
    with its artifacts under ``settings.mlflow_artifact_root``. Returns the experiment id."""
    import mlflow

    settings = settings or get_settings()
    uri = _set_uris(settings)
    name = experiment or settings.case.model_name
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        location = None
        root = settings.mlflow_artifact_root
        if "://" in root:  # an object store (s3://...): MLflow writes there directly
            location = f"{root.rstrip('/')}/{name}"
        elif not uri.startswith("http"):  # a tracking server chooses its own artifact store
            Path(root).mkdir(parents=True, exist_ok=True)
            location = (Path(root) / name).as_uri()
        try:
            exp_id = mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # another process created it meanwhile
            exp = mlflow.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _set_uris(settings: Settings) -> str:
    import mlflow

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client(settings: Settings | None = None):
    """An ``MlflowClient`` on the platform's tracking/registry store (the active experiment is untouched)."""
    from mlflow import MlflowClient

    settings = settings or get_settings()
    _set_uris(settings)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def _version_by_alias(c, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def alias_version(alias: str, settings: Settings | None = None) -> str | None:
    settings = settings or get_settings()
    mv = _version_by_alias(client(settings), settings.case.model_name, alias)
    return None if mv is None else str(mv.version)


def champion_version(settings: Settings | None = None) -> str | None:
    """The version the ``champion`` alias points at (None before the first promotion)."""
    return alias_version(CHAMPION, settings)


# --- loading and scoring ---------------------------------------------------------------------
def load_model(
    alias: str | None = CHAMPION, settings: Settings | None = None, version: str | None = None
) -> tuple[Any, str, float | None]:
    """(model, version, decision threshold) of ``models:/<name>@<alias>`` (or of an explicit version).

    The model is the ``xgboost.XGBClassifier`` logged by training (native UBJ format); score it with
    :func:`predict_scores`. Raises :class:`ModelNotFoundError` when nothing is behind the alias."""
    import mlflow.xgboost

    settings = settings or get_settings()
    c = client(settings)
    name = settings.case.model_name
    if version is not None:
        mv = c.get_model_version(name, str(version))
        model = mlflow.xgboost.load_model(f"models:/{name}/{mv.version}")
    else:
        alias = alias or CHAMPION
        for _ in range(3):  # the alias may move between resolving and loading: retry until stable
            mv = _version_by_alias(c, name, alias)
            if mv is None:
                raise ModelNotFoundError(f"model {name!r} has no version with alias {alias!r}")
            model = mlflow.xgboost.load_model(f"models:/{name}@{alias}")
            now = _version_by_alias(c, name, alias)
            if now is not None and str(now.version) == str(mv.version):
                break
        else:
            raise ModelNotFoundError(f"alias {alias!r} of {name!r} kept moving while loading")
    tag = decision_tag(settings)
    if tag is None:
        return model, str(mv.version), None
    raw = mv.tags.get(tag)
    if raw is None:
        raise ModelNotFoundError(
            f"model {name!r} version {mv.version}: tag {tag!r} missing; rule: every "
            "registered version carries its decision threshold"
        )
    return model, str(mv.version), float(raw)


def companion_dir(version: str, settings: Settings | None = None) -> Path:
    """The local folder of model version ``version``'s companion artifacts (``UseCase.companion``,
    logged with the version's training run), downloaded once per version into
    ``<home>/cache/companions/<model>/<version>`` (a version's artifacts never change)."""
    import shutil
    import tempfile

    import mlflow.artifacts

    from jobs.platform.use_case import get_use_case

    settings = settings or get_settings()
    companion = get_use_case(settings).companion
    if companion is None:
        raise ValueError(f"use case {settings.use_case!r}: declares no companion artifacts")
    name = settings.case.model_name
    final = settings.home / "cache" / "companions" / name / str(version)
    if final.is_dir():
        return final
    run_id = client(settings).get_model_version(name, str(version)).run_id
    _set_uris(settings)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=final.parent))
    try:
        got = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=companion.artifact_path, dst_path=str(tmp)
            )
        )
        try:
            got.rename(final)  # atomic: a reader sees the whole folder or none
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def model_features(model) -> list[str]:
    """The model's input columns, in training order."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        names = booster.feature_names
    if names is None:
        raise ValueError("model: has no feature names; rule: train on a DataFrame with named columns")
    return [str(n) for n in names]


def predict_scores(model, frame: pd.DataFrame) -> np.ndarray:
    """The model's score of each row, selecting its own feature columns in order: the positive
    class's probability for a classifier (fraud), the ranking score for a ranker (rows of one query
    are ordered by it), the raw prediction of a bare booster."""
    features = model_features(model)
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing feature column(s) {missing}; rule: model expects {features}")
    x = frame[features].astype("float64")
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)[:, 1]
    if hasattr(model, "get_booster"):  # an sklearn ranker or regressor
        return np.asarray(model.predict(x), dtype=float)
    return model.inplace_predict(x)


# --- audit log -------------------------------------------------------------------------------
def audit_path(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return (
        StorageLayout(settings).path("reports", None, "model_registry", settings.case.model_name)
        / "audit.jsonl"
    )


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[Path]:
    path = audit_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _append(path: Path, entries: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    entry = {
        "seq": (entries[-1]["seq"] + 1) if entries else 1,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **fields,
    }
    from jobs.platform.metrics import json_safe  # lazy: sklearn stays off the serving start-up path

    entry = json_safe(entry)
    with open(path, "a") as f:
        f.write(json.dumps(entry, sort_keys=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return entry


def history(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every recorded alias change and gate decision, oldest first."""
    return _read(audit_path(settings or get_settings()))


def _champion_stack(entries: list[dict[str, Any]]) -> list[str]:
    """Replay champion changes: a promotion pushes a version, a rollback pops back to the previous one."""
    stack: list[str] = []
    for e in entries:
        if e.get("alias") != CHAMPION:
            continue
        if e["action"] == "promote":
            stack.append(str(e["version"]))
        elif e["action"] == "rollback" and stack:
            stack.pop()
    return stack


def default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers)
        return "unknown"


# --- alias changes ---------------------------------------------------------------------------
def register_challenger(
    run_id: str,
    model_uri: str,
    *,
    reason: str,
    actor: str | None = None,
    tags: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    settings: Settings | None = None,
) -> str:
    """Register ``model_uri`` as a new version of the use case's model and alias it ``challenger``."""
    from mlflow.exceptions import MlflowException

    settings = settings or get_settings()
    c = client(settings)
    name = settings.case.model_name
    with contextlib.suppress(MlflowException):  # already exists
        c.create_registered_model(name, description=f"{settings.use_case} model; aliases champion/challenger")
    mv = c.create_model_version(
        name, source=model_uri, run_id=run_id, tags={k: str(v) for k, v in (tags or {}).items()}
    )
    for _ in range(60):
        if mv.status == "READY":
            break
        time.sleep(1)
        mv = c.get_model_version(name, mv.version)
    version = str(mv.version)
    with _locked(settings) as path:
        previous = _version_by_alias(c, name, CHALLENGER)
        c.set_registered_model_alias(name, CHALLENGER, version)
        entry = _append(
            path,
            _read(path),
            actor=actor or default_actor(),
            action="challenger",
            alias=CHALLENGER,
            model=name,
            version=version,
            previous_version=None if previous is None else str(previous.version),
            run_id=run_id,
            reason=reason,
            metrics=metrics or {},
        )
    get_logger("registry").info("challenger registered", version=version, run_id=run_id, seq=entry["seq"])
    return version


def set_version_tags(version: str, tags: dict[str, Any], settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    c = client(settings)
    for key, value in tags.items():
        c.set_model_version_tag(settings.case.model_name, str(version), key, str(value))


def record_refusal(
    version: str,
    *,
    reason: str,
    run_id: str | None = None,
    actor: str | None = None,
    metrics: dict[str, Any] | None = None,
    champion_metrics: dict[str, Any] | None = None,
    checks: list[dict[str, Any]] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Record that the gate refused ``version``; the champion alias does not move."""
    settings = settings or get_settings()
    c = client(settings)
    with _locked(settings) as path:
        current = _version_by_alias(c, settings.case.model_name, CHAMPION)
        entry = _append(
            path,
            _read(path),
            actor=actor or default_actor(),
            action="refuse",
            alias=None,
            model=settings.case.model_name,
            version=str(version),
            previous_version=None if current is None else str(current.version),
            run_id=run_id,
            reason=reason,
            metrics=metrics or {},
            champion_metrics=champion_metrics or {},
            failed_checks=[x for x in (checks or []) if not x.get("passed", True)],
        )
    set_version_tags(version, {"gate": "refused", "gate_reason": reason[:4000]}, settings)
    get_logger("registry").info("challenger refused", version=str(version), reason=reason)
    return entry


def promote(
    version: str,
    *,
    reason: str,
    run_id: str | None = None,
    actor: str | None = None,
    metrics: dict[str, Any] | None = None,
    champion_metrics: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Point ``champion`` at ``version`` (clearing ``challenger`` if it pointed there) and record it."""
    settings = settings or get_settings()
    c = client(settings)
    name = settings.case.model_name
    version = str(version)
    mv = c.get_model_version(name, version)
    tag = decision_tag(settings)
    if tag is not None and tag not in mv.tags:
        raise ValueError(
            f"version: {version} has no {tag!r} tag; rule: evaluate a version before promoting it"
        )
    with _locked(settings) as path:
        previous = _version_by_alias(c, name, CHAMPION)
        prev = None if previous is None else str(previous.version)
        if prev == version:
            raise ValueError(f"version: {version} is already the champion; rule: promote a different version")
        c.set_registered_model_alias(name, CHAMPION, version)
        challenger = _version_by_alias(c, name, CHALLENGER)
        cleared = challenger is not None and str(challenger.version) == version
        if cleared:
            c.delete_registered_model_alias(name, CHALLENGER)
        entry = _append(
            path,
            _read(path),
            actor=actor or default_actor(),
            action="promote",
            alias=CHAMPION,
            model=name,
            version=version,
            previous_version=prev,
            run_id=run_id or mv.run_id,
            reason=reason,
            metrics=metrics or {},
            champion_metrics=champion_metrics or {},
            cleared_aliases=[CHALLENGER] if cleared else [],
        )
    set_version_tags(
        version,
        {"gate": "promoted", "champion_since": entry["time"], "promotion_reason": reason[:4000]},
        settings,
    )
    get_logger("registry").info("champion promoted", version=version, previous=prev, reason=reason)
    return entry


def rollback(*, reason: str, actor: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Restore the champion that preceded the current one (one step; itself recorded)."""
    settings = settings or get_settings()
    c = client(settings)
    name = settings.case.model_name
    with _locked(settings) as path:
        entries = _read(path)
        stack = _champion_stack(entries)
        current = _version_by_alias(c, name, CHAMPION)
        cur = None if current is None else str(current.version)
        if len(stack) < 2:
            raise ValueError(
                f"rollback: champion history {stack or '[]'} has no previous champion; "
                "rule: rollback needs at least two recorded promotions"
            )
        if cur != stack[-1]:
            get_logger("registry").warning(
                "champion alias was moved outside the registry job", alias_version=cur, recorded=stack[-1]
            )
        target = stack[-2]
        c.set_registered_model_alias(name, CHAMPION, target)
        mv = c.get_model_version(name, target)
        entry = _append(
            path,
            entries,
            actor=actor or default_actor(),
            action="rollback",
            alias=CHAMPION,
            model=name,
            version=target,
            previous_version=cur,
            run_id=mv.run_id,
            reason=reason,
            metrics={},
        )
    set_version_tags(target, {"champion_since": entry["time"]}, settings)
    if cur is not None:
        set_version_tags(cur, {"gate": "rolled_back", "rolled_back_at": entry["time"]}, settings)
    get_logger("registry").info("champion rolled back", version=target, previous=cur, reason=reason)
    return entry


# --- CLI -------------------------------------------------------------------------------------
def describe(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    c = client(settings)
    out: dict[str, Any] = {"model": settings.case.model_name, "tracking_uri": settings.mlflow_tracking_uri}
    tag = decision_tag(settings)
    for alias in (CHAMPION, CHALLENGER):
        mv = _version_by_alias(c, settings.case.model_name, alias)
        if mv is None:
            out[alias] = None
            continue
        run = c.get_run(mv.run_id) if mv.run_id else None
        m = run.data.metrics if run else {}
        out[alias] = {
            "version": str(mv.version),
            "run_id": mv.run_id,
            "created": dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).isoformat(
                timespec="seconds"
            ),
            "decision_threshold": mv.tags.get(tag) if tag else None,
            "train_window": mv.tags.get("train_window"),
            "holdout": {
                k.removeprefix("holdout_"): round(v, 4)
                for k, v in m.items()
                if k.startswith("holdout_") and "slice." not in k
            },
        }
    return out


def _fmt_metric(entry: dict[str, Any], key: str) -> str:
    v = (entry.get("metrics") or {}).get(key)
    return "" if v is None else f"{v:.4f}"


def gated_metrics(settings: Settings | None = None) -> tuple[str, ...]:
    """The metrics the history shows: the use case's gate primary and its first guardrail."""
    from jobs.platform.use_case import get_use_case

    settings = settings or get_settings()
    spec = get_use_case(settings).gate(settings)
    return (spec.primary.name, *(g.metric.name for g in spec.guardrails[:1]))


def print_history(entries: list[dict[str, Any]], out=None, metrics: tuple[str, ...] | None = None) -> None:
    out = out or sys.stdout
    metrics = metrics or gated_metrics()
    header = f"{'seq':>4}  {'time (UTC)':<25} {'action':<10} {'alias':<10} {'version':>7} {'prev':>5}  "
    header += "".join(f"{m[:10]:>11}" for m in metrics) + f"  {'actor':<16} reason"
    print(header, file=out)
    for e in entries:
        print(
            f"{e['seq']:>4}  {e['time']:<25} {e['action']:<10} {e.get('alias') or '-':<10} "
            f"{e.get('version') or '-':>7} {e.get('previous_version') or '-':>5}  "
            + "".join(f"{_fmt_metric(e, m):>11}" for m in metrics)
            + f"  {str(e.get('actor'))[:16]:<16} {e.get('reason', '')}",
            file=out,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.platform.registry", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="current champion and challenger")
    h = sub.add_parser("history", help="every alias change and gate decision (audit log)")
    h.add_argument("--json", action="store_true")
    r = sub.add_parser("rollback", help="restore the previous champion")
    r.add_argument("--reason", required=True)
    r.add_argument("--actor", default=None)
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "show":
        json.dump(describe(settings), sys.stdout, indent=2)
        print()
    elif args.command == "history":
        entries = history(settings)
        if args.json:
            json.dump(entries, sys.stdout, indent=2)
            print()
        elif not entries:
            print(f"no alias changes recorded yet ({audit_path(settings)})")
        else:
            print_history(entries, metrics=gated_metrics(settings))
    else:
        try:
            entry = rollback(reason=args.reason, actor=args.actor, settings=settings)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"champion: v{entry['previous_version']} -> v{entry['version']} (seq {entry['seq']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

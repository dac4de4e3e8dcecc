"""Model lifecycle for the scoring service: registry aliases -> an immutable, atomically swapped bundle.

* :class:`ModelSource` is what the service needs from a model registry: the version an alias points at
  (cheap, polled) and the model behind it. :class:`RegistryModelSource` is the MLflow implementation:
  it chooses models only via the aliases ``champion`` / ``challenger`` of ``Settings.model_name`` and
  reads the decision threshold from the model-version tag the use case declares (fraud: ``decision_threshold``).
* :class:`ModelManager` holds the current :class:`ModelBundle` (champion, optional challenger, rollout
  mode). A background poller checks the aliases every ``serving_reload_seconds``; when one moved it
  loads the new model *next to* the serving one and then replaces the bundle reference in one
  assignment. A request reads the reference once, so it is scored entirely by the old or the new
  bundle, never a mix, and no request waits for or fails because of a reload.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from jobs.platform.assignment import canary_bucket
from jobs.platform.assignment import experiment_salt as _experiment_salt
from jobs.platform.logs import get_logger

log = get_logger("serving.models")

Mode = Literal["off", "shadow", "canary"]


class ModelUnavailable(RuntimeError):
    """No usable model behind an alias (alias unset, registry unreachable, artifact unreadable)."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    alias: str
    threshold: float | None  # the decision threshold of the version's tag (None: no decision policy)
    booster: Any  # xgboost.Booster
    feature_names: tuple[str, ...]
    companion: Any = None  # the use case's per-version artifacts (ServingHandler.companion), or None

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Model scores (e.g. fraud probabilities) for rows of ``matrix`` (columns in ``feature_names`` order)."""
        return np.asarray(self.booster.inplace_predict(matrix), dtype="float64").reshape(-1)


def as_loaded_model(
    model: Any,
    name: str,
    version: str | int,
    alias: str,
    threshold: float | None,
    fallback_features: list[str],
    companion: Any = None,
) -> LoadedModel:
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    booster.set_param({"nthread": 1})  # one request = a few rows: threads only add overhead
    names = tuple(booster.feature_names or fallback_features)
    if not names:
        raise ModelUnavailable(f"model {name} v{version} declares no feature names and none were given")
    return LoadedModel(
        name, str(version), alias, None if threshold is None else float(threshold), booster, names, companion
    )


class ModelSource(Protocol):
    def version(self, alias: str) -> str | None:
        """Version the alias points at, None if the alias is not set; raises ModelUnavailable."""
        ...

    def load(self, alias: str) -> LoadedModel:
        """Load the model behind the alias; raises ModelUnavailable."""
        ...


class RegistryModelSource:
    """The MLflow model registry (``models:/<name>@<alias>``), through ``jobs.platform.registry``."""

    def __init__(
        self,
        settings: Any,
        feature_columns: list[str] | None = None,
        companion: Callable[[str, Any], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.companion = companion
        self.name = settings.case.model_name
        self.feature_columns = list(feature_columns or [])
        self._client = None

    def _mlflow(self):
        if self._client is None:
            from mlflow import MlflowClient

            uri = self.settings.mlflow_tracking_uri
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    def version(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self._mlflow().get_model_version_by_alias(self.name, alias).version)
        except MlflowException as exc:
            code = getattr(exc, "error_code", "")
            if (
                code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
                or "not found" in str(exc).lower()
            ):
                return None
            raise ModelUnavailable(f"model registry unreachable: {exc}") from exc
        except Exception as exc:
            raise ModelUnavailable(f"model registry unreachable: {type(exc).__name__}: {exc}") from exc

    def load(self, alias: str) -> LoadedModel:
        from jobs.platform.registry import load_model

        try:
            model, version, threshold = load_model(alias, settings=self.settings)
            extra = None if self.companion is None else self.companion(str(version), self.settings)
        except ModelUnavailable:
            raise
        except Exception as exc:
            raise ModelUnavailable(f"cannot load {self.name}@{alias}: {type(exc).__name__}: {exc}") from exc
        return as_loaded_model(model, self.name, version, alias, threshold, self.feature_columns, extra)


def experiment_salt(challenger: LoadedModel) -> str:
    """The salt of a canary experiment (:func:`jobs.platform.assignment.experiment_salt`): the
    challenger's model name and version, as the A/B plan records it."""
    return _experiment_salt(challenger.name, challenger.version)


@dataclass(frozen=True)
class ModelBundle:
    """What one request is scored with. Immutable: a reload builds a new bundle."""

    champion: LoadedModel | None
    challenger: LoadedModel | None = None
    mode: Mode = "off"
    canary_share: float = 0.0

    def routes_to_challenger(self, key: Any) -> bool:
        return (
            self.mode == "canary"
            and self.challenger is not None
            and canary_bucket(key, experiment_salt(self.challenger)) < self.canary_share
        )


class ModelManager:
    """Keeps the current bundle fresh from a ModelSource; thread-safe, swap by reference assignment."""

    def __init__(
        self,
        source: ModelSource,
        mode: Mode = "off",
        canary_share: float = 0.0,
        reload_seconds: float = 10.0,
        on_swap: Callable[[ModelBundle], None] | None = None,
        validate: Callable[[LoadedModel], None] | None = None,
    ) -> None:
        self.validate = validate
        self.source = source
        self.mode: Mode = mode
        self.canary_share = canary_share
        self.reload_seconds = reload_seconds
        self.on_swap = on_swap
        self.bundle = ModelBundle(champion=None, mode=mode, canary_share=canary_share)
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one refresh at a time; requests never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Reload whatever alias moved; returns True when the bundle was swapped."""
        with self._lock:
            current = self.bundle
            errors = []
            try:
                champion = self._maybe_load("champion", current.champion)
            except ModelUnavailable as exc:
                champion = current.champion  # keep serving the last good one
                errors.append(str(exc))
            challenger = None
            if self.mode != "off":
                try:
                    challenger = self._maybe_load("challenger", current.challenger)
                except ModelUnavailable as exc:
                    challenger = current.challenger
                    errors.append(str(exc))
            if errors:
                log.warning("model_refresh_failed", errors=errors)
            elif champion is None:
                errors.append(f"alias {self.source_name}@champion is not set")
            self.last_error = "; ".join(errors) or None
            if champion is current.champion and challenger is current.challenger:
                return False
            new = ModelBundle(champion, challenger, self.mode, self.canary_share)
            self.bundle = new  # the atomic swap
            log.info(
                "model_bundle_swapped",
                champion=champion.version if champion else None,
                challenger=challenger.version if challenger else None,
                mode=self.mode,
            )
            if self.on_swap is not None:
                self.on_swap(new)
            return True

    @property
    def source_name(self) -> str:
        return getattr(self.source, "name", "model")

    def _maybe_load(self, alias: str, loaded: LoadedModel | None) -> LoadedModel | None:
        version = self.source.version(alias)
        if version is None:
            if alias == "champion" and loaded is not None:
                # alias removed: keep serving the last good champion rather than failing every request
                log.warning("champion_alias_missing_keeping_loaded", version=loaded.version)
                return loaded
            return None
        if loaded is not None and loaded.version == version:
            return loaded
        model = self.source.load(alias)
        if self.validate is not None:
            self.validate(model)  # raises ModelUnavailable: the serving bundle stays in place
        return model

    # --- background poller ------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.reload_seconds):
            try:
                self.refresh()
            except Exception as exc:  # the poller must survive anything
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("model_poller_error")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

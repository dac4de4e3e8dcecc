"""The pre-registered plan of an online A/B experiment, and the record of its looks.

Before the first look, the plan fixes what the experiment tests and for how long: the primary
metric, the smallest difference worth acting on (``mde``), the one-sided false-promotion rate
``alpha``, the ``power`` wanted at the mde, the alpha-spending function of the sequential looks,
and the sample size a power calculation gives, with the maximum duration. It is recorded as an
MLflow run (experiment ``<model name>-ab``, run ``ab-<challenger version>``: the plan as params and
``plan.json``, tag ``ab.status`` running | concluded); every analysis of the experiment is a *look*,
appended to the run (``looks.json`` and the metrics ``look.*`` by step), because each look's
boundary depends on the looks before it (:mod:`jobs.platform.sequential`).

**The power calculation.** The primary metric of a use case may have no closed-form variance
(average precision does not), so it is measured: the champion's labelled traffic of the
``pilot_days`` before the start is bootstrapped by the randomisation unit, giving the variance of
the metric at the pilot's number of positives ``P``. Such metrics' variance falls as ``1/positives``,
so ``w = var * P`` is the variance per positive, and an arm holding a share ``q`` of ``N`` positives
has variance ``w / (q N)``. A canary's difference then has variance ``w (1/q + 1/(1-q)) / N``, and
the positives needed are::

    N = IF * (z_{1-alpha} + z_{power})^2 * w * (1/q + 1/(1-q)) / mde^2

with ``IF`` the inflation factor of the group-sequential design (one look every ``look_every_days``).
The duration is ``N`` over the pilot's positives per day. When it exceeds ``max_days`` the plan
keeps ``max_days``, records the power it has there (``power_at_max_days``) and says the mde is not
reachable with this traffic. A shadow test pairs the arms on the same rows; the pairing's gain is
unknown before the challenger has scored anything, so it is planned as two independent full-traffic
arms (conservative: it reaches the information earlier than planned and looks at ``t >= 1`` spend
the rest of alpha).

The information fraction of a look is the positives observed in both arms over the planned ``N``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy.stats import norm

from jobs.platform import sequential
from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger
from jobs.platform.metrics import json_safe
from jobs.platform.params import ABConfig

RUNNING, CONCLUDED = "running", "concluded"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class ABPlan:
    """What an experiment tests and for how long, fixed before its first look."""

    challenger_version: str
    champion_version: str | None
    design: str  # canary | shadow
    start: str  # the first day of the experiment
    metric: str
    higher_is_better: bool
    mde: float
    alpha: float  # one-sided, the whole experiment's
    power: float
    spending: str
    look_every_days: int
    planned_looks: int
    share: float  # the challenger's share of the units (1.0 for a shadow test)
    pilot: dict[str, Any]  # window, positives, rows, units, the primary's value and bootstrap variance
    variance_per_positive: float  # w: the primary's variance at one positive
    inflation_factor: float
    planned_positives: float  # N: both arms' matured positives at information fraction 1
    planned_days: int  # the days the traffic needs to reach N
    max_days: int  # the experiment's last day is start + max_days - 1
    power_at_max_days: float
    feasible: bool  # the mde is reachable within max_days at the planned power
    created_at: str = ""
    created_by: str = ""
    salt: str = ""

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ABPlan:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def last_day(self) -> dt.date:
        return dt.date.fromisoformat(self.start) + dt.timedelta(days=self.max_days - 1)

    def information(self, positives: float) -> float:
        """The information fraction of a look that has seen ``positives`` (both arms)."""
        return float(positives) / self.planned_positives


@dataclass
class Look:
    """One analysis of the experiment."""

    look: int  # 1, 2, ...
    end: str  # the last day analysed
    as_of: str
    positives: int
    information: float  # fraction of the planned information (may exceed 1)
    z: float
    boundary: float
    alpha_spent: float  # cumulative, after this look
    final: bool
    recommendation: str
    recorded_at: str = field(default_factory=now_iso)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @property
    def concludes(self) -> bool:
        """The experiment ends at this look: a verdict, or its final look."""
        return self.final or self.recommendation in ("promote", "keep")


# --- the power calculation (pure) ----------------------------------------------------------------
def difference_variance_factor(design: str, share: float) -> float:
    """``Var(difference) * N / w`` of a design: ``1/q + 1/(1-q)`` for a canary with challenger share
    ``q``; 2 for a shadow test planned as two independent full-traffic arms."""
    if design == "shadow":
        return 2.0
    if not 0 < share < 1:
        raise ValueError(f"share: value {share} is invalid; rule: a canary routes 0 < share < 1 of the units")
    return 1.0 / share + 1.0 / (1.0 - share)


def design_plan(
    pilot_variance: float,
    pilot_positives: int,
    positives_per_day: float,
    cfg: ABConfig,
    *,
    design: str,
    share: float,
    start: dt.date,
    metric: str,
    higher_is_better: bool,
    challenger_version: str,
    champion_version: str | None,
    pilot: dict[str, Any] | None = None,
) -> ABPlan:
    """The plan from the pilot's variance of the primary metric at its ``pilot_positives`` and the
    traffic's matured positives per day (see the module docstring)."""
    if pilot_positives < 1 or not math.isfinite(pilot_variance) or pilot_variance <= 0:
        raise ValueError(
            f"pilot: {pilot_positives} positives and a primary-metric variance of {pilot_variance}; rule: "
            "the champion's traffic before the start needs matured positives to size the experiment"
        )
    if cfg.mde <= 0:
        raise ValueError(f"mde: value {cfg.mde} is invalid; rule: a plan is sized for a positive mde")
    w = pilot_variance * pilot_positives
    per_day = float(positives_per_day)
    if per_day <= 0:
        raise ValueError(f"pilot: {per_day} positives per day; rule: the traffic needs positives to plan")
    factor = difference_variance_factor(design, share)
    z = norm.ppf(1 - cfg.alpha) + norm.ppf(cfg.power)
    looks, days, inflation, needed = 1, 1, 1.0, 0.0
    for _ in range(10):  # the looks depend on the duration and the duration on the looks' inflation
        inflation = sequential.inflation_factor(looks, cfg.alpha, cfg.power, cfg.spending)
        needed = inflation * z**2 * w * factor / cfg.mde**2
        days = max(1, math.ceil(needed / per_day))
        new_looks = max(1, math.ceil(min(days, cfg.max_days) / cfg.look_every_days))
        if new_looks == looks:
            break
        looks = new_looks
    feasible = days <= cfg.max_days
    max_days = min(days, cfg.max_days)
    planned = needed if feasible else per_day * max_days
    information = cfg.mde**2 * planned / (w * factor)  # effect^2 / variance of the final estimate
    return ABPlan(
        challenger_version=str(challenger_version),
        champion_version=None if champion_version is None else str(champion_version),
        design=design,
        start=start.isoformat(),
        metric=metric,
        higher_is_better=higher_is_better,
        mde=cfg.mde,
        alpha=cfg.alpha,
        power=cfg.power,
        spending=cfg.spending,
        look_every_days=cfg.look_every_days,
        planned_looks=looks,
        share=1.0 if design == "shadow" else share,
        pilot=dict(pilot or {})
        | {"positives": int(pilot_positives), "positives_per_day": per_day, "variance": pilot_variance},
        variance_per_positive=w,
        inflation_factor=inflation,
        planned_positives=float(planned),
        planned_days=int(days),
        max_days=int(max_days),
        power_at_max_days=sequential.power_at(information, looks, cfg.alpha, cfg.spending),
        feasible=feasible,
    )


def sequential_look(
    plan: ABPlan, previous: list[Look], positives: int, end: dt.date, z: float
) -> tuple[float, float, float, bool]:
    """(information fraction, boundary, alpha spent after it, final) of a new look ending on ``end``
    after the ``previous`` ones (their boundaries stay as they were applied)."""
    last = previous[-1].information if previous else 0.0
    t = max(plan.information(positives), last + 1e-6)  # the information only grows
    final = t >= 1.0 or end >= plan.last_day
    fractions = [p.information for p in previous] + [t]
    bounds = sequential.efficacy_bounds(fractions, plan.alpha, plan.spending, final=final)  # type: ignore[arg-type]
    spent = plan.alpha if final else sequential.spent(t, plan.alpha, plan.spending)  # type: ignore[arg-type]
    return t, float(bounds[-1]), float(spent), final


# --- the MLflow record ---------------------------------------------------------------------------
def experiment_name(settings: Settings) -> str:
    return f"{settings.case.model_name}-ab"


def _run_name(version: str) -> str:
    return f"ab-{version}"


def find_plan(
    challenger_version: str, settings: Settings | None = None
) -> tuple[ABPlan, str, list[Look]] | None:
    """The recorded plan of a challenger version: (plan, MLflow run id, its looks so far); None
    when none was registered."""
    from jobs.platform.registry import client

    settings = settings or get_settings()
    c = client(settings)
    run_id = _plan_run_id(c, challenger_version, settings)
    if run_id is None:
        return None
    plan = ABPlan.from_dict(_load_json(c, run_id, "plan.json"))
    looks = [Look(**x) for x in _load_json(c, run_id, "looks.json", default=[])]
    return plan, run_id, looks


def _plan_run_id(c, challenger_version: str, settings: Settings) -> str | None:
    """The MLflow run of a challenger version's plan (the newest), None when it has none."""
    exp = c.get_experiment_by_name(experiment_name(settings))
    if exp is None:
        return None
    runs = c.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`ab.challenger_version` = '{challenger_version}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _load_json(c, run_id: str, name: str, default: Any = None) -> Any:
    import tempfile

    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = c.download_artifacts(run_id, name, tmp)
        except (MlflowException, OSError):
            if default is not None:
                return default
            raise
        with open(path) as f:
            return json.load(f)


def record_plan(plan: ABPlan, settings: Settings | None = None) -> str:
    """Record the plan as a new MLflow run (refused when the version already has one: a plan is
    registered once, before its first look). Returns the run id."""
    from jobs.platform.registry import client, configure_mlflow

    settings = settings or get_settings()
    if _plan_run_id(client(settings), plan.challenger_version, settings) is not None:
        raise ValueError(
            f"challenger_version: {plan.challenger_version} already has a registered A/B plan (MLflow "
            f"experiment {experiment_name(settings)!r}); rule: an experiment is planned once, before its first look"
        )
    exp_id = configure_mlflow(settings, experiment_name(settings))
    c = client(settings)
    run = c.create_run(
        exp_id,
        run_name=_run_name(plan.challenger_version),
        tags={
            "ab.challenger_version": plan.challenger_version,
            "ab.champion_version": str(plan.champion_version),
            "ab.status": RUNNING,
            "ab.design": plan.design,
            "mlflow.user": plan.created_by or "ab_plan",
        },
    )
    run_id = run.info.run_id
    flat = {k: v for k, v in plan.to_dict().items() if not isinstance(v, dict)}
    for k, v in flat.items():
        c.log_param(run_id, k, str(v)[:500])
    c.log_dict(run_id, plan.to_dict(), "plan.json")
    c.log_dict(run_id, [], "looks.json")
    get_logger("ab_plan").info(
        "A/B plan registered",
        challenger=plan.challenger_version,
        planned_positives=round(plan.planned_positives),
        planned_days=plan.planned_days,
        max_days=plan.max_days,
        power_at_max_days=round(plan.power_at_max_days, 3),
        run_id=run_id,
    )
    return run_id


def record_look(run_id: str, looks: list[Look], settings: Settings | None = None) -> None:
    """Write the experiment's looks (the last one new or replacing a re-run of the same end day)."""
    from jobs.platform.registry import client

    c = client(settings or get_settings())
    c.log_dict(run_id, [x.to_dict() for x in looks], "looks.json")
    last = looks[-1]
    for key in ("information", "z", "boundary", "alpha_spent"):
        value = getattr(last, key)
        if math.isfinite(value):
            c.log_metric(run_id, f"look.{key}", value, step=last.look)
    if last.concludes:
        c.set_tag(run_id, "ab.status", CONCLUDED)
        c.set_tag(run_id, "ab.result", last.recommendation)

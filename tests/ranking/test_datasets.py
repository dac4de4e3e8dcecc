"""The ranking datasets' GX suites, run by the core's validation on the simulated world's files: a
simulated day passes every suite, and broken rows are named with the field and the rule."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from jobs.platform.ingest import ROW_ID, suite_path, validate
from jobs.ranking.datasets import DATASETS
from jobs.ranking.schema import SLATE_SIZE
from jobs.ranking.world import World, WorldConfig

SMALL = WorldConfig(
    seed=5, n_users=1_500, n_items=2_000, n_brands=40, new_items_per_day=30, requests_per_day=800
)
DAY = SMALL.start_date + dt.timedelta(days=1)


@pytest.fixture(scope="module")
def files() -> dict[str, pd.DataFrame]:
    return World(SMALL).landing(DAY)


def parameters() -> dict[str, object]:
    start = dt.datetime.combine(DAY, dt.time())
    return {
        "day_start": start.isoformat(sep=" "),
        "day_end": (start + dt.timedelta(days=1)).isoformat(sep=" "),
        "max_user_id": SMALL.n_users,
        "max_category": SMALL.categories,
        "max_slot": SLATE_SIZE,
    }


def as_lake(spark, name: str, frame: pd.DataFrame):
    spec = DATASETS[name]
    ddl = ", ".join([f"{ROW_ID} bigint", *(f"{c} {t}" for c, t in spec.schema.items())])
    return spark.createDataFrame(
        frame.assign(**{ROW_ID: range(len(frame))})[[ROW_ID, *spec.schema]], schema=ddl
    )


def validated(spark, tmp_path, name: str, frame: pd.DataFrame) -> dict:
    """The core's GX validation (pandas engine) of ``frame`` as the lake rows of dataset ``name``."""
    return validate(
        as_lake(spark, name, frame),
        DATASETS[name],
        parameters(),
        tmp_path / name,
        "pandas",
        use_case="ranking",
    )


def test_every_dataset_has_its_suite():
    for spec in DATASETS.values():
        assert suite_path(spec, "ranking").exists(), spec.name
        assert spec.key in spec.schema and set(spec.sort_by) <= set(spec.schema)


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_a_simulated_day_passes_every_suite(spark, tmp_path, files, engine):
    for name, spec in DATASETS.items():
        out = validate(
            as_lake(spark, name, files[name]), spec, parameters(), tmp_path / name, engine, use_case="ranking"
        )
        assert out["success"] and not out["bad"], (name, out["bad"])
        assert out["statistics"]["evaluated_expectations"] > len(spec.schema)


def test_broken_rows_are_named_with_field_and_rule(spark, tmp_path, files):
    imp = files["impressions"].head(20).copy()
    imp.loc[0, "slot"] = 12
    imp.loc[1, "propensity"] = 0.0
    imp.loc[2, "device"] = "fridge"
    imp.loc[3, "user_id"] = SMALL.n_users + 5
    imp.loc[4, "shown_at"] = pd.Timestamp(DAY) - pd.Timedelta(seconds=1)
    out = validated(spark, tmp_path, "impressions", imp)
    bad = {row: " | ".join(reasons) for row, (reasons, _) in out["bad"].items()}
    assert sorted(bad) == [0, 1, 2, 3, 4]
    assert "slot: 12" in bad[0] and "slot must be in [0, 10)" in bad[0]
    assert "propensity" in bad[1] and "(0, 1]" in bad[1]
    assert "device: 'fridge'" in bad[2] or "device: fridge" in bad[2]
    assert "user_id" in bad[3] and "shown_at" in bad[4]

    clicks = files["clicks"].head(5).copy()
    clicks.loc[0, "clicked_at"] = clicks.loc[0, "shown_at"] - pd.Timedelta(seconds=5)
    out = validated(spark, tmp_path, "clicks", clicks)
    ((reasons, _),) = out["bad"].values()
    assert any("a click comes after its impression" in r for r in reasons), reasons

    items = files["items"].head(5).copy()
    items.loc[0, "price"] = -1.0
    items.loc[1, "category"] = SMALL.categories
    items.loc[2, "updated_at"] = items.loc[2, "launched_at"] - pd.Timedelta(days=1)
    out = validated(spark, tmp_path, "items", items)
    assert sorted(out["bad"]) == [0, 1, 2]

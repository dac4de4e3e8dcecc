"""The Spark service contract and the daily DAGs' data wait, without a scheduler."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from jobs.platform.config import Settings
from jobs.platform.ingest import missing_landing
from jobs.platform.landing import mark_landed
from jobs.platform.spark import default_parallelism, ensure_connect_server, is_connect
from jobs.platform.storage import StorageLayout


def test_a_connect_url_that_does_not_answer_is_a_clear_error(tmp_path):
    remote = Settings(home=tmp_path, spark_connect_url="sc://127.0.0.1:1", spark_connect_autostart=False)
    with pytest.raises(
        RuntimeError, match=r"spark_connect_url: no Spark Connect server answers at sc://127\.0\.0\.1:1"
    ):
        ensure_connect_server(remote)
    for bad in ("http://x:1", "sc://h:abc", "sc://"):  # refused with the settings, naming the field
        with pytest.raises(ValidationError, match=r"spark_connect_url\n.*is not a Spark Connect URL \(rule"):
            Settings(home=tmp_path, spark_connect_url=bad)
    assert Settings(home=tmp_path, spark_connect_url="").spark_connect_url is None  # empty: in-process


def test_jobs_get_a_connect_session_from_the_service(spark, settings):
    assert is_connect(spark), "the default profile's jobs talk to the Spark Connect server"
    assert spark.range(5).count() == 5
    assert spark.conf.get("spark.master") == settings.spark_master == "local[2]"  # the server's master
    assert default_parallelism(spark, settings) == 2


def test_missing_landing_names_the_folders_a_day_waits_for(tmp_path):
    settings = Settings(home=tmp_path)
    layout = StorageLayout(settings)
    day = dt.date(2018, 4, 2)
    assert missing_landing(day, settings) == [
        "fraud/landing/transactions/date=2018-04-02",
        "fraud/landing/labels/date=2018-04-02",
    ]
    tx = layout.path("landing_transactions", day)
    tx.mkdir(parents=True)
    (tx / "notes.txt").write_text("not a landing file")
    assert missing_landing(day, settings) == [
        "fraud/landing/transactions/date=2018-04-02",
        "fraud/landing/labels/date=2018-04-02",
    ]
    (tx / "transactions.csv").write_text("header\n")
    labels = layout.path("landing_labels", day)
    labels.mkdir(parents=True)
    (labels / "labels.csv").write_text("header\n")
    # files still being copied: the day is complete once the producer wrote its done marker
    assert missing_landing(day, settings) == [
        "fraud/landing/transactions/date=2018-04-02",
        "fraud/landing/labels/date=2018-04-02",
    ]
    mark_landed(tx, settings)
    assert missing_landing(day, settings) == ["fraud/landing/labels/date=2018-04-02"]
    mark_landed(labels, settings)
    assert missing_landing(day, settings) == []
    # without a marker (MLP_LANDING_DONE_MARKER=) the first *.csv is enough
    (tx / "_SUCCESS").unlink()
    assert missing_landing(day, settings.model_copy(update={"landing_done_marker": ""})) == []

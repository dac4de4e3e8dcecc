"""The bad-input corpus (tests/platform/bad_inputs/): every broken row is quarantined with the reason(s) it failed, every
broken file fails with a clear IngestError naming file, column and rule, and no row is ever silently dropped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs.platform.config import Settings
from jobs.platform.ingest import IngestError, ingest_labels, ingest_transactions, main
from jobs.platform.storage import StorageLayout
from tests.support.ingest import ingest_folder

CORPUS = Path(__file__).parent / "bad_inputs"
DAY = "2018-04-01"
REPORT_DAY = "2018-04-10"
SRC = f"fraud/landing/transactions/date={DAY}"

# file -> {line: exact reasons}; every other data line of the file must be published
EXPECTED_QUARANTINE: dict[str, dict[int, list[str]]] = {
    "good.csv": {},
    "header_only.csv": {},
    "wrong_type.csv": {
        2: ["tx_amount: 'abc' is not a number"],
        3: ["customer_id: '1.5' is not an integer"],
        4: ["tx_datetime: 'yesterday' is not a timestamp"],
        5: ["terminal_id: 'x7' is not an integer", "tx_amount: 'NaN' is not a number"],
    },
    "null_keys.csv": {
        2: ["transaction_id: null violates 'required (not null)' (expect_column_values_to_not_be_null)"],
        3: ["customer_id: null violates 'required (not null)' (expect_column_values_to_not_be_null)"],
        4: ["tx_datetime: null violates 'required (not null)' (expect_column_values_to_not_be_null)"],
    },
    "negative_amount.csv": {
        2: ["tx_amount: -5.0 violates 'amount must be >= 0' (expect_column_values_to_be_between)"],
        3: [  # a row carries every rule it breaks (sorted)
            "customer_id: -1 violates 'id must be in [0, 10000000)' (expect_column_values_to_be_between)",
            "tx_amount: -0.01 violates 'amount must be >= 0' (expect_column_values_to_be_between)",
        ],
    },
    "duplicate_ids.csv": {
        4: [f"duplicate transaction_id (first copy at {SRC}/duplicate_ids.csv:2)"],
        5: [f"duplicate transaction_id (first copy at {SRC}/duplicate_ids.csv:2)"],
    },
    "outside_day.csv": {
        2: [
            "tx_datetime: 2018-04-02 00:00:00 violates 'must fall within the logical day "
            "[2018-04-01 00:00:00, 2018-04-02 00:00:00)' (expect_column_values_to_be_between)"
        ],
        3: [
            "tx_datetime: 2018-03-31 23:59:59 violates 'must fall within the logical day "
            "[2018-04-01 00:00:00, 2018-04-02 00:00:00)' (expect_column_values_to_be_between)"
        ],
    },
    "ids_out_of_range.csv": {
        2: [
            "customer_id: 10000000 violates 'id must be in [0, 10000000)' (expect_column_values_to_be_between)"
        ],
        3: ["terminal_id: -3 violates 'id must be in [0, 10000000)' (expect_column_values_to_be_between)"],
    },
    "truncated.csv": {4: ["malformed line: 2 fields, expected 5"]},
    # numbers are ASCII decimals (sign, point, exponent); -0 is stored as 0; Java's "1d"/"0x1p3", a tab
    # and anything that overflows are not numbers (the first three were published before issue 18)
    "numeric_edges.csv": {
        4: ["tx_amount: '1e309' is not a number"],
        5: ["tx_amount: 'Infinity' is not a number"],
        6: ["tx_amount: '1d' is not a number"],
        7: ["tx_amount: '0x1p3' is not a number"],
        8: ["tx_amount: '\u0661\u0662' is not a number"],
        9: ["customer_id: '9223372036854775808' is not an integer"],
        11: ["tx_amount: '\t7' is not a number"],
    },
    # UTC wall-clock times: no offset or zone suffix, no impossible dates, no leap seconds, two-digit fields,
    # years 0001-9999
    "timestamp_edges.csv": {
        4: ["tx_datetime: '2018-04-01 10:00:00+02:00' is not a timestamp"],
        5: ["tx_datetime: '2018-04-01 10:00:00Z' is not a timestamp"],
        6: ["tx_datetime: '2018-02-30 10:00:00' is not a timestamp"],
        7: ["tx_datetime: '2018-04-01 24:00:00' is not a timestamp"],
        8: ["tx_datetime: '2018-04-01 23:59:60' is not a timestamp"],
        9: ["tx_datetime: '2018-4-1 1:0:0' is not a timestamp"],
        # found by make fuzz: Spark parses years 0000 and +10000, GX cannot collect them, and the whole day failed
        10: ["tx_datetime: '0000-01-01 00:00:00' is not a timestamp"],
        11: ["tx_datetime: '+10000-01-01 00:00:00' is not a timestamp"],
    },
    "malformed_lines.csv": {
        2: ["malformed line: 6 fields, expected 5"],
        3: ["malformed line: blank line"],
    },
}


def data_lines(path: Path) -> int:
    """Lines after the header, counted independently of Spark (a last line without newline counts)."""
    text = path.read_text()
    return max(len(text.splitlines()) - 1, 0)


def _settings(home: Path, **kw) -> Settings:
    return Settings(home=home, **kw)


@pytest.fixture(scope="module", params=["pandas", "spark"])
def corpus_run(request, tmp_path_factory, spark):
    # both GX engines (driver-side pandas for small batches, Spark for large ones) must agree to the letter
    home = tmp_path_factory.mktemp(f"bad-inputs-{request.param}")
    settings = _settings(home, max_bad_fraction=1.0, gx_engine=request.param)  # rows, not the gate
    return (*ingest_folder(CORPUS / "transactions", settings, spark, DAY), StorageLayout(settings))


def test_corpus_files_are_all_covered():
    assert {p.name for p in (CORPUS / "transactions").glob("*.csv")} == set(EXPECTED_QUARANTINE)


def test_nothing_lost_across_the_corpus(corpus_run):
    result, lake, quarantine, _ = corpus_run
    total = sum(data_lines(p) for p in (CORPUS / "transactions").glob("*.csv"))
    assert result.rows_in == total
    assert result.published + result.quarantined == result.rows_in
    assert len(lake) == result.published and len(quarantine) == result.quarantined
    assert result.quarantined == sum(len(v) for v in EXPECTED_QUARANTINE.values())
    assert not quarantine.duplicated(["source_file", "source_line"]).any()
    assert lake["transaction_id"].is_unique
    assert result.status == "published" and result.gx_success is False


@pytest.mark.parametrize("name", sorted(EXPECTED_QUARANTINE))
def test_each_bad_row_is_quarantined_with_its_reasons(corpus_run, name):
    _, lake, quarantine, layout = corpus_run
    mine = quarantine[quarantine["source_file"] == f"{SRC}/{name}"]
    got = {int(r.source_line): list(r.reasons) for r in mine.itertuples()}
    assert got == EXPECTED_QUARANTINE[name]
    # raw values are kept as they arrived
    path = CORPUS / "transactions" / name
    lines = path.read_text().splitlines()
    for r in mine.itertuples():
        assert r.raw_record == lines[int(r.source_line) - 1]
    # every other line of the file was published
    expected_published = data_lines(path) - len(EXPECTED_QUARANTINE[name])
    clean_ids = set()
    for number, line in enumerate(lines[1:], start=2):
        if number not in EXPECTED_QUARANTINE[name]:
            clean_ids.add(int(line.split(",")[0]))
    assert len(clean_ids) == expected_published
    assert clean_ids <= set(lake["transaction_id"])


def test_published_rows_follow_the_lake_contract(corpus_run):
    _, lake, _, layout = corpus_run
    files = sorted(layout.path("transactions", DAY).iterdir())
    assert [f.name for f in files] == ["part-00000.snappy.parquet"]
    schema = pq.read_schema(files[0])
    assert {f.name: str(f.type) for f in schema} == {
        "transaction_id": "int64",
        "tx_datetime": "timestamp[us]",
        "customer_id": "int64",
        "terminal_id": "int64",
        "tx_amount": "double",
    }
    assert (lake["tx_amount"] >= 0).all()
    assert (lake["tx_datetime"].dt.strftime("%Y-%m-%d") == DAY).all()
    assert lake.sort_values(["tx_datetime", "transaction_id"]).index.equals(lake.index)
    # a kept duplicate is the FIRST copy (amount 1.00, not the later 7.00)
    assert lake.loc[lake.transaction_id == 401, "tx_amount"].tolist() == [1.0]


def test_driver_and_spark_writers_publish_the_same_tables(tmp_path, spark):
    """A small batch is written on the driver (pyarrow), a large one by Spark: the same columns, types,
    values and row order in the lake and in the quarantine, from the same corpus."""
    import pyarrow as pa

    def normalized(table: pa.Table) -> tuple:
        types = [pa.string() if t == pa.large_string() else t for t in table.schema.types]
        types = [pa.list_(pa.string()) if t == pa.list_(pa.large_string()) else t for t in types]
        types = [pa.list_(pa.string()) if pa.types.is_large_list(t) else t for t in types]
        return table.column_names, [str(t) for t in types], table.to_pylist()

    written = {}
    for engine in ("pandas", "spark"):
        settings = _settings(tmp_path / engine, max_bad_fraction=1.0, gx_engine=engine)
        ingest_folder(CORPUS / "transactions", settings, spark, DAY)
        layout = StorageLayout(settings)
        written[engine] = [
            normalized(pq.read_table(layout.path(dataset, DAY) / "part-00000.snappy.parquet"))
            for dataset in ("transactions", "quarantine_transactions")
        ]
    assert written["pandas"][0][2] and written["pandas"][1][2]  # rows published and quarantined
    assert written["pandas"] == written["spark"]


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        (
            "empty.csv",
            r"empty\.csv: empty file, no header line \(rule: a landing file starts with the header",
        ),
        (
            "missing_column.csv",
            r"missing_column\.csv: required column 'tx_amount' is missing from the header .*\(rule: required columns",
        ),
        (
            "unknown_column.csv",
            r"unknown_column\.csv: unknown column 'merchant' in the header .*\(rule: no unknown columns",
        ),
    ],
)
def test_broken_files_fail_with_a_named_error(tmp_path, spark, name, pattern):
    settings = _settings(tmp_path)
    layout = StorageLayout(settings)
    landing = layout.path("landing_transactions", DAY)
    landing.mkdir(parents=True)
    shutil.copy(CORPUS / "header" / name, landing / name)
    with pytest.raises(IngestError, match=pattern):
        ingest_transactions(DAY, settings, spark)
    assert not layout.path("transactions", DAY).exists()
    report = json.loads((layout.path("reports", DAY, "ingest", "transactions") / "summary.json").read_text())
    assert report["status"] == "failed" and name in report["error"]


def test_missing_landing_day_is_a_named_error(tmp_path, spark):
    with pytest.raises(IngestError, match=r"no landing folder .*date=2018-04-01"):
        ingest_transactions(DAY, _settings(tmp_path), spark)


def test_cli_reports_a_broken_file_without_a_traceback(layout, capsys):
    day = "2019-01-01"  # a day no other test uses in the session home
    landing = layout.path("landing_transactions", day)
    landing.mkdir(parents=True, exist_ok=True)
    shutil.copy(CORPUS / "header" / "missing_column.csv", landing / "transactions.csv")
    assert main(["--date", day, "--what", "transactions"]) == 1
    err = capsys.readouterr().err
    assert "ingest failed: transactions.csv: required column 'tx_amount' is missing" in err
    assert "Traceback" not in err


def test_labels_corpus(tmp_path, spark):
    settings = _settings(tmp_path, max_bad_fraction=1.0)
    layout = StorageLayout(settings)
    landing = layout.path("landing_labels", REPORT_DAY)
    landing.mkdir(parents=True)
    shutil.copy(CORPUS / "labels" / "labels.csv", landing / "labels.csv")
    result = ingest_labels(REPORT_DAY, settings, spark)
    quarantine = pd.read_parquet(layout.path("quarantine_labels", REPORT_DAY))
    lake = pd.read_parquet(layout.path("labels", REPORT_DAY))
    got = {int(r.source_line): list(r.reasons) for r in quarantine.itertuples()}
    src = f"fraud/landing/labels/date={REPORT_DAY}/labels.csv"
    assert got == {
        3: ["tx_fraud: 2 violates 'must be in [0, 1]' (expect_column_values_to_be_in_set)"],
        4: [
            "reported_at=2018-04-10 09:00:00, tx_datetime=2018-04-10 12:00:00 violates 'a fraud is reported at "
            "or after its transaction (reported_at >= tx_datetime)' (expect_column_pair_values_a_to_be_greater_than_b)"
        ],
        5: [
            "reported_at: 2018-04-11 09:00:00 violates 'must fall within the report day "
            "[2018-04-10 00:00:00, 2018-04-11 00:00:00)' (expect_column_values_to_be_between)"
        ],
        6: [f"duplicate transaction_id (first copy at {src}:2)"],
        7: ["transaction_id: null violates 'required (not null)' (expect_column_values_to_not_be_null)"],
        8: ["tx_fraud: 'yes' is not an integer"],
    }
    assert sorted(lake["transaction_id"]) == [900000001, 900000006]
    assert (
        result.rows_in
        == data_lines(CORPUS / "labels" / "labels.csv")
        == result.published + result.quarantined
    )
    schema = {
        f.name: str(f.type)
        for f in pq.read_schema(layout.path("labels", REPORT_DAY) / "part-00000.snappy.parquet")
    }
    assert schema == {
        "transaction_id": "int64",
        "tx_datetime": "timestamp[us]",
        "reported_at": "timestamp[us]",
        "tx_fraud": "int32",
    }

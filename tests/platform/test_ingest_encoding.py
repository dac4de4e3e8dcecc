"""The encoding contract of landing files (tests/platform/bad_inputs/encoding/,
tests/platform/bad_inputs/header/utf16.csv).

Landing files are UTF-8 (a leading BOM tolerated); a data line that does not decode is quarantined with
``encoding: invalid UTF-8 at byte N`` and its bytes kept, escaped, in ``raw_record``; the rest of the file
is published. Lines end at LF, CRLF or a lone CR.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jobs.platform.config import Settings
from jobs.platform.ingest import IngestError, ingest_transactions
from jobs.platform.storage import StorageLayout
from tests.support.ingest import ingest_folder

CORPUS = Path(__file__).parent / "bad_inputs"
DAY = "2018-04-01"
SRC = f"fraud/landing/transactions/date={DAY}"


@pytest.fixture(scope="module")
def encoding_run(tmp_path_factory, spark):
    settings = Settings(home=tmp_path_factory.mktemp("encoding"), max_bad_fraction=1.0)
    return ingest_folder(CORPUS / "encoding", settings, spark, DAY)


def test_a_row_that_is_not_utf8_is_quarantined_and_the_rest_published(encoding_run):
    """Regression (issue 18): one bad byte in a data row used to fail the run with a bare UnicodeDecodeError."""
    result, lake, quarantine = encoding_run
    got = {
        (r.source_file.rsplit("/", 1)[-1], int(r.source_line)): (list(r.reasons), r.raw_record)
        for r in quarantine.itertuples()
    }
    assert got == {
        ("invalid_utf8.csv", 3): (
            ["encoding: invalid UTF-8 at byte 32"],
            "1002,2018-04-01 10:00:01,10,20,6\\xff.00",
        ),
        ("invalid_utf8.csv", 5): (
            ["encoding: invalid UTF-8 at byte 39"],
            "1004,2018-04-01 10:00:03,11,21,8.00 caf\\xe9",
        ),
        ("truncated_utf8.csv", 3): (
            ["encoding: invalid UTF-8 at byte 36"],
            "1302,2018-04-01 13:00:01,10,20,2.00 \\xe2\\x82",
        ),
    }
    assert set(quarantine["rules"].map(tuple)) == {("encoding: invalid UTF-8",)}
    assert sorted(lake["transaction_id"]) == [1001, 1003, 1005, 1101, 1102, 1201, 1202, 1301]
    assert result.status == "published"
    assert result.rows_in == 5 + 2 + 2 + 2 == result.published + result.quarantined
    assert result.rules == {"encoding: invalid UTF-8": 3}


def test_bom_crlf_and_lone_cr_line_ends_are_read_as_lines(encoding_run):
    _, lake, quarantine = encoding_run
    assert not quarantine["source_file"].str.endswith(("bom_crlf.csv", "cr_only.csv")).any()
    rows = lake.set_index("transaction_id").loc[[1101, 1102, 1201, 1202]]
    assert rows["tx_amount"].tolist() == [1.0, 2.0, 1.0, 2.0]


def test_a_header_that_is_not_utf8_fails_the_run_naming_file_line_and_rule(tmp_path, spark):
    settings = Settings(home=tmp_path)
    layout = StorageLayout(settings)
    landing = layout.path("landing_transactions", DAY)
    landing.mkdir(parents=True)
    shutil.copy(CORPUS / "header" / "utf16.csv", landing / "utf16.csv")
    with pytest.raises(
        IngestError, match=r"utf16\.csv:1: invalid UTF-8 at byte 0 .*\(rule: landing files are UTF-8"
    ):
        ingest_transactions(DAY, settings, spark)
    assert not layout.path("transactions", DAY).exists()

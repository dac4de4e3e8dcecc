"""The bad-input corpus of the ranking datasets (tests/platform/bad_inputs/ranking/<dataset>/): every
broken row is quarantined with the reason(s) it failed, the rest published, no row lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.platform.config import Settings
from tests.support.ingest import ingest_folder

CORPUS = Path(__file__).parents[1] / "platform" / "bad_inputs" / "ranking"
DAY = "2024-01-02"
DAY_RULE = "[2024-01-02 00:00:00, 2024-01-03 00:00:00)"

# dataset -> {line: exact reasons} of its bad_values.csv; every other data line must be published
SRC = f"ranking/landing/impressions/date={DAY}/bad_values.csv"
BETWEEN = "(expect_column_values_to_be_between)"
PAIR = "(expect_column_pair_values_a_to_be_greater_than_b)"
EXPECTED: dict[str, dict[int, list[str]]] = {
    "impressions": {
        3: [f"slot: 10 violates 'slot must be in [0, 10)' {BETWEEN}"],
        4: [f"propensity: 0.0 violates 'a logging propensity is in (0, 1]' {BETWEEN}"],
        5: [
            "device: 'watch' violates 'must be in ['mobile', 'desktop', 'tablet']' "
            "(expect_column_values_to_be_in_set)"
        ],
        6: [f"user_id: 20000 violates 'id must be in [0, 20000)' {BETWEEN}"],
        7: ["item_id: null violates 'required (not null)' (expect_column_values_to_not_be_null)"],
        8: [
            f"shown_at: 2024-01-03 00:00:00 violates 'must fall within the logical day {DAY_RULE}' {BETWEEN}"
        ],
        9: [f"duplicate impression_id (first copy at {SRC}:2)"],
        10: ["slot: 'x' is not an integer"],
    },
    "clicks": {
        3: [
            "clicked_at=2024-01-02 07:59:00, shown_at=2024-01-02 08:00:00 violates "
            f"'a click comes after its impression' {PAIR}"
        ],
        4: [
            "clicked_at: 2024-01-01 23:59:00 violates 'must fall within the day the click arrived "
            f"{DAY_RULE}' {BETWEEN}"
        ],
        5: [f"user_id: -1 violates 'id must be in [0, 20000)' {BETWEEN}"],
        6: ["impression_id: null violates 'required (not null)' (expect_column_values_to_not_be_null)"],
    },
    "items": {
        3: [f"price: 0.0 violates 'price must be > 0' {BETWEEN}"],
        4: [f"category: 99 violates 'id must be in [0, 20)' {BETWEEN}"],
        5: ["sponsored: 2 violates 'must be in [0, 1]' (expect_column_values_to_be_in_set)"],
        6: [
            "updated_at=2024-01-02 06:00:00, launched_at=2024-01-02 12:00:00 violates "
            f"'a change cannot come before the item's launch' {PAIR}"
        ],
        7: [f"brand: -2 violates 'must be >= 0' {BETWEEN}"],
    },
}


@pytest.mark.parametrize("dataset", ["impressions", "clicks", "items"])
def test_each_bad_row_is_quarantined_with_its_reasons(dataset, tmp_path, spark):
    settings = Settings(home=tmp_path, max_bad_fraction=1.0, gx_engine="pandas").with_use_case("ranking")
    result, lake, quarantine = ingest_folder(CORPUS / dataset, settings, spark, DAY, dataset)
    lines = (CORPUS / dataset / "bad_values.csv").read_text().splitlines()
    assert result.rows_in == len(lines) - 1
    assert result.published + result.quarantined == result.rows_in == len(lake) + len(quarantine)
    got = {int(r.source_line): list(r.reasons) for r in quarantine.itertuples()}
    assert got == EXPECTED[dataset]
    assert len(lake) == len(lines) - 1 - len(EXPECTED[dataset])  # the good rows are published

"""The simulated world of the ranking use case: deterministic per day, position-biased clicks, the
logged propensities, late events, the drift knob and an oracle that is really the best."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.ranking.schema import EXAMINATION, RAW_COLUMNS
from jobs.ranking.world import PopularityPolicy, World, WorldConfig

SMALL = WorldConfig(
    seed=3, n_users=2_000, n_items=3_000, n_brands=60, new_items_per_day=40, requests_per_day=2_000
)
D0 = SMALL.start_date


def day(i: int) -> dt.date:
    return D0 + dt.timedelta(days=i)


@pytest.fixture(scope="module")
def world() -> World:
    return World(SMALL)


def test_a_day_is_the_same_alone_or_after_others(world):
    later = world.landing(day(3))
    alone = World(SMALL).landing(day(3))
    for name in RAW_COLUMNS:
        pd.testing.assert_frame_equal(later[name], alone[name])
    other_seed = World(WorldConfig(**{**SMALL.__dict__, "seed": 4})).landing(day(3))
    assert not later["impressions"]["item_id"].equals(other_seed["impressions"]["item_id"])


def test_landing_frames_follow_the_raw_contract(world):
    files = world.landing(day(1))
    for name, columns in RAW_COLUMNS.items():
        assert tuple(files[name].columns) == columns, name
    imp = files["impressions"]
    assert imp["impression_id"].is_unique and imp["slot"].between(0, 9).all()
    assert (imp.groupby("request_id")["slot"].nunique() == 10).all()
    assert ((imp["propensity"] > 0) & (imp["propensity"] <= 1)).all()
    start = pd.Timestamp(day(1))
    assert imp["shown_at"].between(start, start + pd.Timedelta(days=1), inclusive="left").all()
    # every item served exists in the catalogue of the day (launched the day before at the latest)
    launched = world.catalogue(day(1)).item_id
    assert imp["item_id"].isin(launched).all()


def test_the_start_date_lands_the_whole_catalogue_then_only_changes(world):
    first, second = world.items_file(day(0)), world.items_file(day(1))
    assert len(first) == SMALL.n_items + SMALL.new_items_per_day and first["item_id"].is_unique
    launches = second[second["launched_at"] >= pd.Timestamp(day(1))]
    changes = second[second["launched_at"] < pd.Timestamp(day(1))]
    assert len(launches) == SMALL.new_items_per_day
    assert len(changes) > 0 and changes["item_id"].isin(first["item_id"]).all()
    assert (changes["updated_at"] >= pd.Timestamp(day(1))).all() and second["change_id"].is_unique
    # a changed price is the price the next day's catalogue serves
    cat = world.catalogue(day(2))
    row = changes.iloc[0]
    assert cat.price[int(row["item_id"])] == pytest.approx(row["price"])


def test_clicks_follow_the_position_bias_and_arrive_after_their_impression(world):
    traffic = world.traffic(day(2))
    imp = traffic.impressions
    clicked = imp["impression_id"].isin(traffic.clicks["impression_id"])
    ctr = clicked.groupby(imp["slot"]).mean().to_numpy()
    assert ctr[0] > ctr[3] > ctr[9] and 0.02 < clicked.mean() < 0.2
    joined = traffic.clicks.merge(
        imp[["impression_id", "shown_at", "user_id", "item_id"]], on="impression_id"
    )
    assert (joined["shown_at_x"] == joined["shown_at_y"]).all()  # the click echoes its impression's time
    assert (joined["clicked_at"] > joined["shown_at_y"]).all()
    assert (joined["user_id_x"] == joined["user_id_y"]).all() and (
        joined["item_id_x"] == joined["item_id_y"]
    ).all()
    bought = traffic.purchases.merge(traffic.clicks[["click_id", "clicked_at"]], on="click_id")
    assert len(bought) == len(traffic.purchases) and (bought["purchased_at"] >= bought["clicked_at"]).all()


def test_late_events_land_in_the_next_days_file(world):
    traffic = world.traffic(day(2))
    next_day = pd.Timestamp(day(3))
    late_clicks = traffic.clicks[traffic.clicks["clicked_at"] >= next_day]
    late_buys = traffic.purchases[traffic.purchases["purchased_at"] >= next_day]
    assert len(late_buys) > 0  # purchases come hours after the click
    files2, files3 = world.landing(day(2)), world.landing(day(3))
    assert not files2["purchases"]["purchase_id"].isin(late_buys["purchase_id"]).any()
    assert late_buys["purchase_id"].isin(files3["purchases"]["purchase_id"]).all()
    assert late_clicks["click_id"].isin(files3["clicks"]["click_id"]).all()
    # nothing is lost or doubled across days
    arrived = pd.concat([world.landing(day(i))["clicks"] for i in range(0, 4)])
    made = pd.concat([world.traffic(day(i)).clicks for i in range(0, 4)])
    made = made[made["clicked_at"] < next_day + pd.Timedelta(days=1)]
    assert arrived["click_id"].is_unique and set(arrived["click_id"]) == set(made["click_id"])


def test_logged_propensities_are_the_plackett_luce_probabilities(world):
    """Slot 0's logged propensity estimates how often the policy puts that item first: re-serve the
    same requests many times and count."""
    req = world.requests(day(1)).head(1)
    req = pd.concat([req] * 4000, ignore_index=True)
    policy = PopularityPolicy()
    items, prop = policy.slates(world, req, day(1), np.random.default_rng(0))
    first, logged = pd.Series(items[:, 0]), pd.Series(prop[:, 0], index=items[:, 0])
    freq = first.value_counts(normalize=True)
    top = freq.index[:3]
    expected = logged.groupby(level=0).first()[top]  # no exploration item can be first often
    np.testing.assert_allclose(freq[top].to_numpy(), expected.to_numpy(), atol=0.02)


def test_the_oracle_is_the_best_slate(world):
    users = np.arange(50)
    best = world.best_slates(users, day(4), "mobile")
    cat = world.catalogue(day(4))
    brute = np.stack(
        [
            cat.item_id[
                np.argsort(-world.click_probability(np.full(len(cat), u), cat.item_id, day(4), "mobile"))[:10]
            ]
            for u in users
        ]
    )
    np.testing.assert_array_equal(np.sort(best, axis=1), np.sort(brute, axis=1))
    logged = world.traffic(day(4)).impressions
    first = logged.groupby("request_id").head(10).sort_values(["request_id", "slot"])
    slates = first["item_id"].to_numpy().reshape(-1, 10)[:200]
    u = first["user_id"].to_numpy().reshape(-1, 10)[:200, 0]
    dev = first["device"].to_numpy().reshape(-1, 10)[:200, 0]
    assert (
        world.expected_clicks(u, world.best_slates(u, day(4), dev), day(4), dev)
        >= world.expected_clicks(u, slates, day(4), dev) - 1e-12
    ).all()
    # expected clicks use the examination curve
    one = world.expected_clicks([0], best[:1], day(4), "mobile")[0]
    p = world.click_probability(np.zeros(10, int), best[0], day(4), "mobile")
    assert one == pytest.approx(float((p * np.asarray(EXAMINATION)).sum()))


def test_the_informed_reference_learns_from_the_logs_and_stays_below_the_oracle(world):
    """The Bayes reference: with no logs it ranks every user alike (the prior), with logs it follows
    each user's clicks and lands between that and the oracle, and its posterior is a proper one."""
    users = np.arange(300)
    prior_only = world.informed_slates(users, day(0), "desktop")
    assert (prior_only == prior_only[0]).all()  # nothing logged yet: one slate for all
    informed = world.informed_slates(users, day(6), "desktop")
    assert not (informed == informed[0]).all()
    got = world.expected_clicks(users, informed, day(6)).sum()
    best = world.expected_clicks(users, world.best_slates(users, day(6)), day(6)).sum()
    blind = world.expected_clicks(users, np.broadcast_to(prior_only[0], informed.shape), day(6)).sum()
    assert blind < got < best
    grid = np.linspace(-1, 1, 41)
    prior = world.interest_prior(grid)
    assert (
        prior.shape == (SMALL.categories, 41)
        and (prior[:, grid >= 0.3] > 0).all()
        and (prior[:, (grid > 0.2) & (grid < 0.3)] == 0).all()
    )
    with pytest.raises(ValueError, match="users"):
        world.informed_slates([1, 1], day(6))


def test_the_drift_knob_shifts_interests_and_opens_a_category():
    cfg = WorldConfig(
        **{**SMALL.__dict__, "drift_date": day(5), "drift_category": 2, "new_category_date": day(5)}
    )
    w = World(cfg)
    before, after = w.interests(day(4)), w.interests(day(5))
    assert (after[:, 2] - before[:, 2]).mean() > 0.4
    assert abs((after[:, 3] - before[:, 3]).mean()) < 0.05  # the walk alone is slow
    launched_before = w.items_file(day(4))
    launched_after = w.items_file(day(5))
    new_cat = SMALL.n_categories
    assert not (launched_before["category"] == new_cat).any()
    assert (launched_after["category"] == new_cat).mean() > 0.1


def test_new_users_join_over_time(world):
    joined = [
        world.requests(day(i))["user_id"].isin(np.flatnonzero(world.users.join_day > 0)).any()
        for i in (0, 30)
    ]
    assert joined == [False, True]


def test_scale_multiplies_the_catalogue():
    big = SMALL.scaled(10)
    assert big.n_items == 30_000 and big.new_items_per_day == 400
    with pytest.raises(ValueError, match="scale"):
        SMALL.scaled(0)
    with pytest.raises(ValueError, match="drift_category"):
        WorldConfig(drift_category=99)

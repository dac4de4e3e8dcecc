"""Re-ranking: the business rules applied to one request's scored candidates after the ranker, each a
small pure function of a frame (one row per candidate) so that it can be tested alone, and composed
by :func:`rerank` into the final slate.

Rules, in the order :func:`rerank` applies them:

1. :func:`drop_consumed` - remove items the user already bought, or was shown ``max_seen`` times
   without clicking (she has seen them enough);
2. :func:`boost_fresh` - add ``boost`` to the score of items launched in the last ``fresh_days``
   days (new items have no history, so the ranker under-rates them);
3. :func:`diversify` - at most ``max_per_window`` items of one category in any ``window``
   consecutive slots (greedy by score; when no remaining item fits, the best one is taken and the
   slate says so);
4. :func:`place_sponsored` - the best sponsored candidates at fixed slots (0-based), the organic
   order shifting down around them (sponsored slots are outside the diversity rule: they are sold).

The candidate frame has at least ``item_id`` and ``score``; the rules also read ``category``,
``launched_at`` and ``sponsored``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Rules:
    max_seen: int = 3
    fresh_days: int = 7
    fresh_boost: float = 0.1
    max_per_window: int = 2
    window: int = 5
    sponsored_slots: tuple[int, ...] = (2, 7)

    def __post_init__(self) -> None:
        if self.max_per_window < 1 or self.window < 1:
            raise ValueError(
                f"rules: max_per_window {self.max_per_window} / window {self.window}; rule: both >= 1"
            )
        if any(s < 0 for s in self.sponsored_slots):
            raise ValueError(f"sponsored_slots: {self.sponsored_slots}; rule: 0-based slots >= 0")


def _require(frame: pd.DataFrame, columns: Sequence[str], rule: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"candidates: missing column(s) {missing}; rule: {rule} needs {list(columns)}")


def drop_consumed(
    candidates: pd.DataFrame, bought: Collection[int], seen: Mapping[int, int], max_seen: int
) -> pd.DataFrame:
    """Without the items in ``bought`` and those ``seen`` (item -> unclicked impressions) at least
    ``max_seen`` times."""
    _require(candidates, ["item_id"], "drop_consumed")
    items = candidates["item_id"].to_numpy()
    tired = [i for i, n in seen.items() if n >= max_seen]
    keep = ~np.isin(items, list(bought)) & ~np.isin(items, tired)
    return candidates[keep]


def boost_fresh(candidates: pd.DataFrame, now: pd.Timestamp, fresh_days: int, boost: float) -> pd.DataFrame:
    """``score + boost`` for items launched within ``fresh_days`` days before ``now``."""
    _require(candidates, ["score", "launched_at"], "boost_fresh")
    fresh = pd.to_datetime(candidates["launched_at"]) >= pd.Timestamp(now) - pd.Timedelta(days=fresh_days)
    return candidates.assign(score=candidates["score"] + boost * fresh.to_numpy())


def diversify(candidates: pd.DataFrame, k: int, max_per_window: int, window: int) -> tuple[pd.DataFrame, int]:
    """The top ``k`` by score such that no category has more than ``max_per_window`` items in any
    ``window`` consecutive slots, chosen greedily (each slot takes the best item that keeps the rule).
    Returns (slate, violations): a violation is a slot where no remaining item kept the rule and the
    best one was taken anyway (0 whenever the candidates allow the rule)."""
    _require(candidates, ["score", "category"], "diversify")
    ordered = candidates.sort_values("score", ascending=False, kind="stable")
    cats = ordered["category"].to_numpy()
    taken: list[int] = []
    used = np.zeros(len(ordered), dtype=bool)
    violations = 0
    for _ in range(min(k, len(ordered))):
        recent = [cats[i] for i in taken[-(window - 1) :]] if window > 1 else []
        pick = None
        for j in np.flatnonzero(~used):
            if recent.count(cats[j]) < max_per_window:
                pick = j
                break
        if pick is None:
            pick = int(np.flatnonzero(~used)[0])
            violations += 1
        used[pick] = True
        taken.append(int(pick))
    return ordered.iloc[taken], violations


def place_sponsored(
    slate: pd.DataFrame, sponsored: pd.DataFrame, slots: Sequence[int], k: int
) -> pd.DataFrame:
    """``slate`` (organic, in order) with the best ``sponsored`` candidates (by score) put at ``slots``;
    an item is never shown twice; slots beyond the slate's length are left out."""
    _require(slate, ["item_id"], "place_sponsored")
    ads = sponsored.sort_values("score", ascending=False, kind="stable")
    ads = ads[~ads["item_id"].isin(slate["item_id"].head(k))] if len(ads) else ads
    organic = slate[~slate["item_id"].isin(ads["item_id"])]
    out: list[pd.Series] = []
    ad_rows = iter(ads.itertuples(index=False))
    org_rows = iter(organic.itertuples(index=False))
    wanted = set(slots)
    for slot in range(k):
        row = next(ad_rows, None) if slot in wanted else None
        if row is None:
            row = next(org_rows, None)
        if row is None:
            break
        out.append(row)
    return pd.DataFrame(out, columns=slate.columns) if out else slate.head(0)


def rerank(
    candidates: pd.DataFrame,
    *,
    now: pd.Timestamp,
    k: int = 10,
    rules: Rules | None = None,
    bought: Collection[int] = (),
    seen: Mapping[int, int] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The final slate of one request: the rules in order, then ``slot`` 0..k-1. Returns
    (slate, counts of what the rules did)."""
    rules = rules or Rules()
    n0 = len(candidates)
    kept = drop_consumed(candidates, bought, seen or {}, rules.max_seen)
    boosted = boost_fresh(kept, now, rules.fresh_days, rules.fresh_boost)
    is_ad = (
        boosted["sponsored"].to_numpy(dtype=bool) if "sponsored" in boosted else np.zeros(len(boosted), bool)
    )
    slots = tuple(s for s in rules.sponsored_slots if s < k)
    organic, violations = diversify(boosted[~is_ad], k, rules.max_per_window, rules.window)
    slate = place_sponsored(organic, boosted[is_ad], slots, k) if slots else organic.head(k)
    slate = slate.head(k).reset_index(drop=True).assign(slot=lambda f: np.arange(len(f)))
    return slate, {
        "dropped_consumed": n0 - len(kept),
        "diversity_violations": violations,
        "sponsored_placed": int(slate["item_id"].isin(boosted.loc[is_ad, "item_id"]).sum()),
    }

"""Re-ranking: the business rules applied to one request's scored candidates after the ranker, each a
small pure function of a frame (one row per candidate) so that it can be tested alone, and composed
by :func:`rerank` into the final slate.

Rules, in the order :func:`rerank` applies them:

1. :func:`drop_consumed` - remove items the user already bought, or was shown ``max_seen`` times
   without clicking (she has seen them enough);
2. :func:`boost_fresh` - add ``boost`` to the score of items launched in the last ``fresh_days``
   days (new items have no history, so the ranker under-rates them);
3. :func:`compose` - the slate slot by slot: the best sponsored candidates at fixed slots (0-based),
   organic ones elsewhere, and at most ``max_per_window`` items of one category in any ``window``
   consecutive slots, sponsored ones included (greedy by score; when no remaining item fits, the best
   one is taken and the slate says so). :func:`diversify` is the same rule without sponsored slots.

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


def compose(
    candidates: pd.DataFrame,
    k: int,
    max_per_window: int,
    window: int,
    sponsored_slots: Sequence[int] = (),
) -> tuple[pd.DataFrame, int]:
    """The slate slot by slot, greedily: a slot of ``sponsored_slots`` takes the best sponsored
    candidate (``sponsored`` = 1), any other slot the best organic one, each time the best that keeps
    no category above ``max_per_window`` items in any ``window`` consecutive slots of the slate so far
    (sponsored slots included). A sponsored slot where no sponsored candidate keeps the rule (or none
    is left) takes the best organic one that does; when nothing keeps the rule the slot takes the best
    of its kind anyway and counts a violation. Returns (slate, violations); an item is never shown twice."""
    _require(candidates, ["score", "category"], "diversity")
    ordered = candidates.sort_values("score", ascending=False, kind="stable")
    cats = ordered["category"].to_numpy()
    is_ad = (
        ordered["sponsored"].to_numpy(dtype=bool) if "sponsored" in ordered else np.zeros(len(ordered), bool)
    )
    wanted = set(sponsored_slots)
    used = np.zeros(len(ordered), dtype=bool)
    taken: list[int] = []
    violations = 0
    for slot in range(min(k, len(ordered))):
        kinds = [True, False] if slot in wanted else [False]
        recent = [cats[i] for i in taken[-(window - 1) :]] if window > 1 else []
        pick = fallback = None
        for kind in kinds:
            pool = np.flatnonzero(~used & (is_ad == kind))
            fits = [j for j in pool if recent.count(cats[j]) < max_per_window]
            if fits:
                pick = int(fits[0])
                break
            if fallback is None and len(pool):
                fallback = int(pool[0])
        if pick is None and fallback is not None:
            pick = fallback
            violations += 1
        if pick is None:  # an organic slot and only sponsored candidates left: the slate ends
            break
        used[pick] = True
        taken.append(pick)
    return ordered.iloc[taken], violations


def diversify(candidates: pd.DataFrame, k: int, max_per_window: int, window: int) -> tuple[pd.DataFrame, int]:
    """The top ``k`` by score such that no category has more than ``max_per_window`` items in any
    ``window`` consecutive slots (:func:`compose` without sponsored slots, all candidates organic)."""
    organic = candidates.drop(columns="sponsored", errors="ignore")
    slate, violations = compose(organic, k, max_per_window, window)
    return candidates.loc[slate.index], violations


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
    slots = tuple(x for x in rules.sponsored_slots if x < k)
    slate, violations = compose(boosted, k, rules.max_per_window, rules.window, slots)
    is_ad = slate["sponsored"].to_numpy(dtype=bool) if "sponsored" in slate else np.zeros(len(slate), bool)
    slate = slate.head(k).reset_index(drop=True).assign(slot=lambda f: np.arange(len(f)))
    return slate, {
        "dropped_consumed": n0 - len(kept),
        "diversity_violations": violations,
        "sponsored_placed": int(is_ad.sum()),
    }

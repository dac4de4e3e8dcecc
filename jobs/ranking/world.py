"""The simulated world of the ranking use case: users, a changing catalogue, a logging policy and a
position-biased click model, with the ground truth exposed (the oracle).

No public interaction log can be downloaded here, so the world is simulated, after published
simulators:

* **users** (RecSim's interest-evolution environment): an interest vector in [-1, 1]^C over the item
  categories (a few liked categories, the rest mostly disliked), an activity rate, a price
  sensitivity and a device mix; 10 % of users join during the first 60 days (new users). Interests
  drift slowly (a daily random walk, ``interest_walk``), and a **drift knob** shifts every user's
  interest in one category from ``drift_date`` and/or opens a new category from
  ``new_category_date`` (users have a latent interest in it from the start);
* **items**: category (Zipf-like popularity), brand (a brand sells in one category and adds to
  quality), price (log-normal per category), a quality and a launch date; ``new_items_per_day``
  items launch every day and are servable from the next day; a small share of prices change every
  day; freshness decays with age (``exp(-age / freshness_days)``);
* **relevance**: the probability that a user clicks an item *once she has examined it*,
  ``sigmoid(a * interest[category] + b * quality + c * freshness + bias + mobile price term)``;
* **position-based click model**: slot k is examined with probability ``EXAMINATION[k]`` (0.68,
  0.61, 0.48, ... 0.06) times a session fatigue ``fatigue ** (request index in the session)``; a
  session makes ``1 + Poisson(1)`` requests;
* **purchases** follow a click with ``sigmoid(p0 + p1 * interest - price_sensitivity * log(price /
  30))``, up to 20 hours later (so some land in the next day's file); clicks arrive within 10 minutes;
* **logging policy**: the slates are served by a policy; the default is popularity + noise
  (Plackett-Luce sampling over the day's most popular items plus random exploration items), and the
  **propensity** of each item at its slot (its Plackett-Luce probability given the slots above) is
  logged. Any object with the :class:`Policy` interface can serve instead (later: the ranker).

The **oracle**: :meth:`World.click_probability` is each user's true relevance of any item,
:meth:`World.expected_clicks` the exact expected clicks of any slate, and :meth:`World.best_slates`
the slate that maximises them, so a ranking's true CTR can be compared with the best possible.

Everything is deterministic: each day draws from its own seeded streams
(``SeedSequence([seed, stream, day])``), so a day is reproducible alone; state that evolves (prices,
interests) is replayed from the start date.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Protocol

import numpy as np
import pandas as pd

from jobs.ranking.schema import DEVICES, EXAMINATION, SLATE_SIZE

SECONDS_PER_DAY = 86_400
HORIZON_DAYS = 400  # days from the start date the catalogue is drawn for
ID_STRIDE = 10**9  # request ids are day index * ID_STRIDE + sequence within the day
CLICK_DELAY_CAP_S = 600.0
PURCHASE_DELAY_CAP_S = 20 * 3600.0

# streams of the seeded generators
_USERS, _CATALOGUE, _NEW_ITEMS, _PRICES, _WALK, _TRAFFIC, _POLICY, _CLICKS, _PURCHASES = range(9)

# requests by hour of day (UTC): quiet nights, an evening peak
_HOURLY = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3, 3, 3, 3.5, 3, 3, 3, 3.5, 4, 5, 6, 6.5, 5.5, 4, 2])
_HOURLY = _HOURLY / _HOURLY.sum()


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 7
    start_date: dt.date = dt.date(2024, 1, 1)
    n_users: int = 20_000
    n_items: int = 50_000  # the catalogue on the start date
    n_categories: int = 20
    n_brands: int = 400
    new_items_per_day: int = 250
    requests_per_day: int = 10_000  # x 10 slots = ~100 k impressions a day
    new_user_share: float = 0.10
    new_user_days: int = 60
    interest_walk: float = 0.02  # daily std of each interest's random walk
    drift_date: dt.date | None = None  # from this day every user's interest in drift_category shifts
    drift_category: int = 0
    drift_shift: float = 0.8
    new_category_date: dt.date | None = None  # from this day a new category's items launch
    new_category_share: float = 0.3  # of the items launched from then on
    price_change_share: float = 0.002
    sponsored_share: float = 0.01
    freshness_days: float = 10.0
    # relevance: sigmoid(a * interest + b * quality + c * freshness + bias) (+ mobile price term)
    a_interest: float = 3.0
    b_quality: float = 0.7
    c_freshness: float = 1.0
    bias: float = -3.0
    mobile_price: float = 0.3
    fatigue: float = 0.85
    # purchases after a click
    p0_purchase: float = -2.0
    p1_purchase: float = 1.2

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_categories", "n_brands", "requests_per_day"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: value {getattr(self, name)} is invalid; rule: must be >= 1")
        if self.n_brands < self.n_categories:
            raise ValueError(
                f"n_brands: value {self.n_brands} < n_categories {self.n_categories}; rule: a brand per category at least"
            )
        if not 0 <= self.drift_category < self.n_categories:
            raise ValueError(
                f"drift_category: value {self.drift_category} is invalid; rule: 0 <= drift_category < {self.n_categories}"
            )

    def scaled(self, scale: float) -> WorldConfig:
        """The catalogue (start size and daily launches) multiplied by ``scale`` (e.g. 20 for 1 M items)."""
        if scale <= 0:
            raise ValueError(f"scale: value {scale} is invalid; rule: must be > 0")
        return replace(
            self,
            n_items=max(1, round(self.n_items * scale)),
            new_items_per_day=max(0, round(self.new_items_per_day * scale)),
            n_brands=max(self.n_categories, round(self.n_brands * math.sqrt(scale))),
        )

    @property
    def categories(self) -> int:
        """Categories including the one the drift knob opens (its items launch only from its date)."""
        return self.n_categories + (1 if self.new_category_date else 0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Users:
    interests: np.ndarray  # (n_users, categories) in [-1, 1] on the start date
    activity: np.ndarray  # relative session rate
    price_sensitivity: np.ndarray
    mobile_share: np.ndarray
    join_day: np.ndarray  # day index from which the user is active (<= 0: before the start)


@dataclass(frozen=True)
class Catalogue:
    """The items servable on a day (launched before it), as arrays aligned by position."""

    item_id: np.ndarray
    category: np.ndarray
    brand: np.ndarray
    price: np.ndarray
    quality: np.ndarray
    launch_day: np.ndarray  # day index of the launch (negative: before the start)
    sponsored: np.ndarray

    def __len__(self) -> int:
        return len(self.item_id)


@dataclass
class DayTraffic:
    """One day of served slates and what the users did, with event times (not yet split by arrival)."""

    impressions: pd.DataFrame
    clicks: pd.DataFrame
    purchases: pd.DataFrame


class Policy(Protocol):
    """Serves the slates of a day's requests: ``(items, propensities)``, each (requests x slate size),
    items as ids of the day's catalogue, the propensity of each item at its slot given the slots above."""

    name: str

    def slates(
        self, world: World, requests: pd.DataFrame, day: dt.date, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class PopularityPolicy:
    """Popularity + noise: each request's slate is a Plackett-Luce sample (Gumbel top-k, temperature
    ``temperature``) over the day's ``pool`` most popular items plus ``explore`` random other items.
    Popularity is what a shop would measure: quality, freshness and the category's mean interest."""

    name: str = "popularity"
    pool: int = 400
    explore: int = 100
    temperature: float = 1.0

    def slates(
        self, world: World, requests: pd.DataFrame, day: dt.date, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        cat = world.catalogue(day)
        k = SLATE_SIZE
        popularity = world.popularity(day)
        pool = min(self.pool, len(cat))
        top = np.argpartition(-popularity, pool - 1)[:pool] if pool < len(cat) else np.arange(len(cat))
        rest = np.setdiff1d(np.arange(len(cat)), top, assume_unique=True)
        n = len(requests)
        explore = min(self.explore, len(rest))
        cand = np.broadcast_to(top, (n, pool))
        if explore:
            picks = rest[rng.integers(0, len(rest), (n, explore))]
            cand = np.concatenate([cand, picks], axis=1)
        logits = popularity[cand] / self.temperature
        if explore:  # an exploration item drawn twice counts once (picks never repeat the pool)
            order = np.argsort(picks, axis=1, kind="stable")
            ordered = np.take_along_axis(picks, order, axis=1)
            repeat = np.c_[np.zeros((n, 1), bool), ordered[:, 1:] == ordered[:, :-1]]
            dup = np.zeros(picks.shape, dtype=bool)
            np.put_along_axis(dup, order, repeat, axis=1)
            logits[:, pool:] = np.where(dup, -np.inf, logits[:, pool:])
        if cand.shape[1] < k:
            raise ValueError(f"catalogue: {cand.shape[1]} servable items < slate size {k}")
        gumbel = rng.gumbel(size=logits.shape)
        chosen = np.argsort(-(logits + gumbel), axis=1)[:, :k]
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        total = weights.sum(axis=1, keepdims=True)
        w_chosen = np.take_along_axis(weights, chosen, axis=1)
        removed = np.cumsum(np.c_[np.zeros((n, 1)), w_chosen[:, :-1]], axis=1)
        propensity = w_chosen / (total - removed)
        return cat.item_id[np.take_along_axis(cand, chosen, axis=1)], propensity


@dataclass
class World:
    config: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self) -> None:
        self._prices: tuple[int, np.ndarray] | None = None  # (day index, price by item id)
        self._walk: tuple[int, np.ndarray] | None = None  # (day index, cumulative walk)
        self._traffic: dict[tuple[int, str], DayTraffic] = {}
        self._catalogue_cache: tuple[int, Catalogue] | None = None

    # --- randomness and days -------------------------------------------------------------
    def _rng(self, stream: int, day_index: int = 0) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.config.seed, stream, day_index + 1_000]))

    def day_index(self, day: dt.date | str) -> int:
        day = dt.date.fromisoformat(day) if isinstance(day, str) else day
        index = (day - self.config.start_date).days
        if index < 0:
            raise ValueError(f"day: {day} is before the world's start {self.config.start_date}")
        return index

    # --- users -------------------------------------------------------------------------------
    @cached_property
    def users(self) -> Users:
        cfg, rng = self.config, self._rng(_USERS)
        c = cfg.categories
        interests = rng.uniform(-1.0, 0.2, (cfg.n_users, c))
        liked = np.argsort(rng.random((cfg.n_users, cfg.n_categories)), axis=1)[:, :3]
        np.put_along_axis(interests, liked, rng.uniform(0.3, 1.0, liked.shape), axis=1)
        if cfg.new_category_date:  # the latent taste for the category that does not exist yet
            interests[:, -1] = rng.uniform(-1.0, 1.0, cfg.n_users)
        joins_late = rng.random(cfg.n_users) < cfg.new_user_share
        join_day = np.where(joins_late, rng.integers(1, cfg.new_user_days + 1, cfg.n_users), 0)
        return Users(
            interests=interests,
            activity=rng.gamma(2.0, 0.5, cfg.n_users),
            price_sensitivity=rng.uniform(0.3, 1.5, cfg.n_users),
            mobile_share=rng.beta(2.0, 2.0, cfg.n_users),
            join_day=join_day,
        )

    def interests(self, day: dt.date | str) -> np.ndarray:
        """Every user's interests on ``day``: the start's plus the random walk so far, the drift knob's
        shift from its date, clipped to [-1, 1]."""
        d = self.day_index(day)
        cfg = self.config
        if self._walk is None or self._walk[0] > d:
            self._walk = (0, np.zeros_like(self.users.interests))
        at, walk = self._walk
        walk = walk.copy()
        for i in range(at + 1, d + 1):
            walk += self._rng(_WALK, i).normal(0.0, cfg.interest_walk, walk.shape)
        self._walk = (d, walk)
        out = self.users.interests + walk
        if cfg.drift_date and d >= (cfg.drift_date - cfg.start_date).days:
            out[:, cfg.drift_category] += cfg.drift_shift
        return np.clip(out, -1.0, 1.0)

    # --- the catalogue -------------------------------------------------------------------------
    @cached_property
    def _brands(self) -> tuple[np.ndarray, np.ndarray]:
        """(category of each brand, quality bonus of each brand)."""
        cfg, rng = self.config, self._rng(_CATALOGUE, -1)
        category = np.r_[
            np.arange(cfg.n_categories), rng.integers(0, cfg.n_categories, cfg.n_brands - cfg.n_categories)
        ]
        return category, rng.normal(0.0, 0.5, cfg.n_brands)

    @cached_property
    def _category_weights(self) -> np.ndarray:
        ranks = np.arange(1, self.config.n_categories + 1)
        w = 1.0 / ranks**0.7
        return w / w.sum()

    def _draw_items(
        self, rng: np.random.Generator, n: int, launch_day: np.ndarray, day: int
    ) -> dict[str, np.ndarray]:
        cfg = self.config
        category = rng.choice(cfg.n_categories, n, p=self._category_weights)
        if cfg.new_category_date and day >= (cfg.new_category_date - cfg.start_date).days:
            category = np.where(rng.random(n) < cfg.new_category_share, cfg.n_categories, category)
        brand_category, brand_quality = self._brands
        brand = np.empty(n, dtype=np.int64)
        new_cat = category == cfg.n_categories
        brand[new_cat] = cfg.n_brands + rng.integers(0, 10, int(new_cat.sum()))  # the new category's brands
        for c in np.unique(category[~new_cat]):
            members = np.flatnonzero(brand_category == c)
            where = np.flatnonzero(category == c)
            brand[where] = members[rng.integers(0, len(members), len(where))]
        bonus = np.where(brand < cfg.n_brands, brand_quality[np.minimum(brand, cfg.n_brands - 1)], 0.0)
        log_median = 2.5 + 0.08 * (category % 12)  # ~12 .. ~30 by category
        return {
            "category": category.astype(np.int64),
            "brand": brand,
            "price": np.round(np.exp(rng.normal(log_median, 0.6, n)), 2),
            "quality": rng.normal(0.0, 1.0, n) + bonus,
            "launch_day": launch_day.astype(np.int64),
            "sponsored": (rng.random(n) < cfg.sponsored_share).astype(np.int64),
        }

    @cached_property
    def _items(self) -> dict[str, np.ndarray]:
        """Every item ever launched in the first ``horizon`` days, by item id (ids are contiguous:
        the start's catalogue, then each day's launches)."""
        return self._items_through(HORIZON_DAYS)

    def _items_through(self, horizon: int) -> dict[str, np.ndarray]:
        cfg = self.config
        rng = self._rng(_CATALOGUE, -2)
        initial = self._draw_items(rng, cfg.n_items, -rng.integers(1, 366, cfg.n_items), -1)
        parts = [initial]
        for d in range(horizon):
            parts.append(
                self._draw_items(
                    self._rng(_NEW_ITEMS, d), cfg.new_items_per_day, np.full(cfg.new_items_per_day, d), d
                )
            )
        items = {k: np.concatenate([p[k] for p in parts]) for k in initial}
        items["item_id"] = np.arange(len(items["category"]), dtype=np.int64)
        return items

    def items_launched_on(self, d: int) -> np.ndarray:
        """Item ids launched on day index ``d`` (-1: the start's catalogue)."""
        cfg = self.config
        if d < 0:
            return np.arange(cfg.n_items, dtype=np.int64)
        first = cfg.n_items + d * cfg.new_items_per_day
        return np.arange(first, first + cfg.new_items_per_day, dtype=np.int64)

    def _check_horizon(self, d: int) -> None:
        if d >= HORIZON_DAYS:
            raise ValueError(
                f"day index {d}: the world simulates {HORIZON_DAYS} days from its start; rule: day index < {HORIZON_DAYS}"
            )

    def price_changes(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, new prices) of the price changes on day index ``d`` (items launched before it)."""
        if d <= 0:
            return np.array([], dtype=np.int64), np.array([], dtype=float)
        rng = self._rng(_PRICES, d)
        n_live = self.config.n_items + d * self.config.new_items_per_day
        n = rng.binomial(n_live, self.config.price_change_share)
        ids = np.unique(rng.integers(0, n_live, n))
        factors = np.exp(rng.normal(0.0, 0.1, len(ids)))
        return ids, factors

    def prices(self, d: int) -> np.ndarray:
        """Each item's price at the end of day index ``d`` (after the day's changes)."""
        if self._prices is None or self._prices[0] > d:
            self._prices = (0, self._items["price"].copy())
        at, prices = self._prices
        prices = prices.copy()
        for i in range(at + 1, d + 1):
            ids, factors = self.price_changes(i)
            prices[ids] = np.round(prices[ids] * factors, 2)
        self._prices = (d, prices)
        return prices

    def catalogue(self, day: dt.date | str) -> Catalogue:
        """The items servable on ``day``: launched before it, at the prices of the previous day's end."""
        d = self.day_index(day)
        self._check_horizon(d)
        return self._catalogue(d)

    def _catalogue(self, d: int) -> Catalogue:
        if self._catalogue_cache is not None and self._catalogue_cache[0] == d:
            return self._catalogue_cache[1]
        n = self.config.n_items + d * self.config.new_items_per_day
        items = self._items
        cat = Catalogue(
            item_id=items["item_id"][:n],
            category=items["category"][:n],
            brand=items["brand"][:n],
            price=self.prices(max(d - 1, 0))[:n],
            quality=items["quality"][:n],
            launch_day=items["launch_day"][:n],
            sponsored=items["sponsored"][:n],
        )
        self._catalogue_cache = (d, cat)
        return cat

    # --- relevance: the truth -------------------------------------------------------------------
    def _item_logit(self, cat: Catalogue, d: int, idx: np.ndarray, mobile: np.ndarray | bool) -> np.ndarray:
        cfg = self.config
        age = np.maximum(d - cat.launch_day[idx], 0)
        logit = (
            cfg.b_quality * cat.quality[idx] + cfg.c_freshness * np.exp(-age / cfg.freshness_days) + cfg.bias
        )
        return logit - cfg.mobile_price * np.asarray(mobile, dtype=float) * np.log(cat.price[idx] / 30.0)

    def click_probability(
        self,
        users: Sequence[int],
        items: Sequence[int],
        day: dt.date | str,
        devices: Sequence[str] | str = "desktop",
    ) -> np.ndarray:
        """The true probability that each user clicks each item (pairs, broadcast) once examined."""
        d = self.day_index(day)
        cat = self.catalogue(day)
        u = np.asarray(users, dtype=np.int64)
        i = np.asarray(items, dtype=np.int64)
        if i.size and (i.min() < 0 or i.max() >= len(cat)):
            raise ValueError(f"items: ids outside the catalogue of {day} (0..{len(cat) - 1})")
        mobile = np.asarray(devices) == "mobile"
        interest = self.interests(day)[u[..., None] if i.ndim > u.ndim else u, cat.category[i]]
        return _sigmoid(self.config.a_interest * interest + self._item_logit(cat, d, i, mobile))

    def expected_clicks(
        self,
        users: Sequence[int],
        slates: np.ndarray,
        day: dt.date | str,
        devices: Sequence[str] | str = "desktop",
        request_index: Sequence[int] | int = 0,
    ) -> np.ndarray:
        """The exact expected clicks of each slate (rows: requests, columns: slots) under the click model."""
        slates = np.asarray(slates, dtype=np.int64)
        k = slates.shape[1]
        if k > len(EXAMINATION):
            raise ValueError(f"slates: {k} slots > the click model's {len(EXAMINATION)}")
        dev = np.broadcast_to(np.asarray(devices), (len(slates),))[:, None]
        p = self.click_probability(np.asarray(users)[:, None], slates, day, dev)
        fatigue = self.config.fatigue ** np.asarray(request_index, dtype=float)
        return (p * np.asarray(EXAMINATION[:k])).sum(axis=1) * fatigue

    def best_slates(
        self,
        users: Sequence[int],
        day: dt.date | str,
        devices: Sequence[str] | str = "desktop",
        k: int = SLATE_SIZE,
    ) -> np.ndarray:
        """The oracle: each user's ``k`` items of highest true relevance (the slate of maximal expected
        clicks, since examination falls with the slot). Exact: within a category a user's relevance
        follows the item part of the logit, so the best ``k`` of every category are the candidates."""
        u = np.asarray(users, dtype=np.int64)
        interests = self.interests(day)
        cat = self.catalogue(day)
        return self._top_k(
            u,
            day,
            devices,
            k,
            lambda rows, cand, item_logit: (
                self.config.a_interest * interests[u[rows]][:, cat.category[cand]] + item_logit[cand]
            ),
        )

    def _top_k(self, users: np.ndarray, day, devices, k: int, score) -> np.ndarray:
        """Per user the ``k`` catalogue items of highest ``score(rows, cand, item_logit)`` (rows:
        positions in ``users``; cand: catalogue positions; item_logit: the item part of the logit on the
        row's device), per device and in bounded chunks of users. The candidates are the best ``k`` of
        every category by the item part of the logit, which is exact for any score that rises with it
        within a category."""
        d = self.day_index(day)
        cat = self.catalogue(day)
        dev = np.broadcast_to(np.asarray(devices), users.shape)
        out = np.empty((len(users), k), dtype=np.int64)
        for mobile in (False, True):
            rows = np.flatnonzero((dev == "mobile") == mobile)
            if not len(rows):
                continue
            item_logit = self._item_logit(cat, d, np.arange(len(cat)), mobile)
            cand = np.concatenate(
                [
                    members[np.argsort(-item_logit[members], kind="stable")[:k]]
                    for members in (np.flatnonzero(cat.category == c) for c in np.unique(cat.category))
                ]
            )
            for chunk in np.array_split(rows, max(1, len(rows) // 128)):
                best = np.argsort(-score(chunk, cand, item_logit), axis=1, kind="stable")[:, :k]
                out[chunk] = cat.item_id[cand[best]]
        return out

    def interest_prior(self, grid: np.ndarray) -> np.ndarray:
        """The marginal prior density of one user's interest in one category on ``grid`` (rows:
        categories), as :attr:`users` draws them: a liked category (3 of the ``n_categories``) uniform on
        [0.3, 1], any other on [-1, 0.2]; the category the drift knob opens uniform on [-1, 1]."""
        cfg = self.config
        liked = 3 / cfg.n_categories
        density = liked * ((grid >= 0.3) & (grid <= 1.0)) / 0.7 + (1 - liked) * (grid <= 0.2) / 1.2
        prior = np.tile(density, (cfg.categories, 1))
        if cfg.new_category_date:
            prior[-1] = 0.5
        return prior

    def informed_slates(
        self,
        users: Sequence[int],
        day: dt.date | str,
        devices: Sequence[str] | str = "desktop",
        k: int = SLATE_SIZE,
        policy: Policy | None = None,
        grid_size: int = 41,
    ) -> np.ndarray:
        """The reference for what the logs allow: the slates of a ranker that knows everything about
        the world (click model, examination and fatigue, each item's relevance terms, the prior of
        interests) except the users' interests, and ranks by each item's click probability in
        expectation over the posterior of the user's interest in its category given her logged
        impressions and clicks of the days before ``day`` (served by ``policy``, default popularity).

        The oracle's CTR is what perfect knowledge gives; this one's is what the logged data can
        support - a learned ranker's gap to it is its own, the rest is the logs'. Approximate in one
        way: the interests' slow random walk is ignored (the posterior treats them as constant)."""
        cfg = self.config
        d = self.day_index(day)
        u = np.asarray(users, dtype=np.int64)
        row = pd.Series(np.arange(len(u)), index=u)
        if row.index.has_duplicates:
            raise ValueError("users: listed more than once; rule: one slate per user")
        grid = np.linspace(-1.0, 1.0, grid_size)
        with np.errstate(divide="ignore"):
            log_post = np.broadcast_to(np.log(self.interest_prior(grid)), (len(u), cfg.categories, grid_size))
        log_post = log_post.copy()
        exam = np.asarray(EXAMINATION)
        for past in range(d):
            date = cfg.start_date + dt.timedelta(days=past)
            traffic = self.traffic(date, policy)
            imp = traffic.impressions
            mine = imp["user_id"].isin(row.index).to_numpy()
            if not mine.any():
                continue
            imp = imp[mine]
            index = self.requests(date).set_index("request_id")["request_index"]
            seen = exam[imp["slot"].to_numpy()] * cfg.fatigue ** index.reindex(imp["request_id"]).to_numpy()
            clicked = imp["impression_id"].isin(traffic.clicks["impression_id"]).to_numpy()
            cat = self.catalogue(date)
            item = imp["item_id"].to_numpy()
            logit = self._item_logit(cat, past, item, imp["device"].to_numpy() == "mobile")
            p = seen[:, None] * _sigmoid(cfg.a_interest * grid[None, :] + logit[:, None])
            ll = np.where(clicked[:, None], np.log(p), np.log1p(-p))
            np.add.at(log_post, (row[imp["user_id"].to_numpy()].to_numpy(), cat.category[item]), ll)
        post = np.exp(log_post - log_post.max(axis=2, keepdims=True))
        post /= post.sum(axis=2, keepdims=True)
        cat = self.catalogue(day)

        def expected(rows, cand, item_logit):  # over the posterior: the expected click probability
            p = _sigmoid(cfg.a_interest * grid[None, :] + item_logit[cand][:, None])  # cand x grid
            return np.einsum("ucg,cg->uc", post[rows][:, cat.category[cand], :], p)

        return self._top_k(u, day, devices, k, expected)

    def popularity(self, day: dt.date | str) -> np.ndarray:
        """What the shop measures as popularity on ``day``, per catalogue position: quality, freshness
        and the mean interest of joined users in the item's category."""
        d = self.day_index(day)
        cat = self.catalogue(day)
        joined = self.users.join_day <= d
        mean_interest = self.interests(day)[joined].mean(axis=0)
        return self.config.a_interest * mean_interest[cat.category] + self._item_logit(
            cat, d, np.arange(len(cat)), False
        )

    # --- traffic --------------------------------------------------------------------------------
    def requests(self, day: dt.date | str) -> pd.DataFrame:
        """The day's requests: sessions of joined users (a Poisson number by activity), each of
        ``1 + Poisson(1)`` requests a minute or so apart, with device and the request's index in its
        session. Sorted by time; ids ``day index * ID_STRIDE + sequence``."""
        cfg = self.config
        d = self.day_index(day)
        self._check_horizon(d)
        rng = self._rng(_TRAFFIC, d)
        users = self.users
        joined = np.flatnonzero(users.join_day <= d)
        rate = users.activity[joined]
        rate = rate * (cfg.requests_per_day / 2.0) / rate.sum()
        sessions = rng.poisson(rate)
        session_user = np.repeat(joined, sessions)
        n_sessions = len(session_user)
        start = (rng.choice(24, n_sessions, p=_HOURLY) * 3600 + rng.uniform(0, 3600, n_sessions)).astype(
            float
        )
        mobile = rng.random(n_sessions) < users.mobile_share[session_user]
        other = np.where(rng.random(n_sessions) < 0.8, DEVICES[1], DEVICES[2])
        device = np.where(mobile, DEVICES[0], other)
        per_session = 1 + rng.poisson(1.0, n_sessions)
        session = np.repeat(np.arange(n_sessions), per_session)
        index_in_session = np.arange(len(session)) - np.repeat(
            np.cumsum(per_session) - per_session, per_session
        )
        gaps = rng.exponential(60.0, len(session)) * (index_in_session > 0)
        offset = start[session] + _cumsum_by_group(gaps, session)
        keep = offset < SECONDS_PER_DAY
        frame = pd.DataFrame(
            {
                "user_id": session_user[session][keep],
                "session": session[keep],
                "request_index": index_in_session[keep],
                "device": device[session][keep],
                "offset_s": offset[keep],
            }
        ).sort_values(["offset_s", "user_id"], kind="stable", ignore_index=True)
        frame["request_id"] = d * ID_STRIDE + np.arange(len(frame), dtype=np.int64)
        frame["shown_at"] = pd.Timestamp(cfg.start_date + dt.timedelta(days=d)) + pd.to_timedelta(
            np.floor(frame["offset_s"]), unit="s"
        )
        return frame.drop(columns="offset_s")

    def traffic(
        self, day: dt.date | str, policy: Policy | None = None, requests: pd.DataFrame | None = None
    ) -> DayTraffic:
        """The day's served slates (impressions), clicks and purchases, with event times; ``requests``:
        only these of the day's requests (rows of :meth:`requests`) were served (not cached)."""
        d = self.day_index(day)
        policy = policy or PopularityPolicy()
        key = (d, policy.name)
        if requests is None and key in self._traffic:
            return self._traffic[key]
        day = self.config.start_date + dt.timedelta(days=d)
        req = self.requests(day) if requests is None else requests.reset_index(drop=True)
        items, propensity = policy.slates(self, req, day, self._rng(_POLICY, d))
        n, k = items.shape
        slot = np.tile(np.arange(k), n)
        imp = pd.DataFrame(
            {
                "impression_id": np.repeat(req["request_id"].to_numpy() * 10, k) + slot,
                "request_id": np.repeat(req["request_id"].to_numpy(), k),
                "user_id": np.repeat(req["user_id"].to_numpy(), k),
                "item_id": items.ravel(),
                "slot": slot,
                "propensity": propensity.ravel(),
                "device": np.repeat(req["device"].to_numpy(), k),
                "policy": policy.name,
                "shown_at": np.repeat(req["shown_at"].to_numpy(), k),
                "request_index": np.repeat(req["request_index"].to_numpy(), k),
            }
        )
        rng = self._rng(_CLICKS, d)
        p = self.click_probability(imp["user_id"], imp["item_id"], day, imp["device"])
        examined = (
            rng.random(len(imp)) < np.asarray(EXAMINATION)[slot] * self.config.fatigue ** imp["request_index"]
        )
        clicked = examined & (rng.random(len(imp)) < p)
        delay = np.minimum(2.0 + rng.exponential(15.0, len(imp)), CLICK_DELAY_CAP_S)
        clicks = imp.loc[clicked, ["impression_id", "request_id", "user_id", "item_id"]].copy()
        clicks.insert(0, "click_id", clicks["impression_id"])
        clicks["shown_at"] = imp.loc[clicked, "shown_at"]  # echoed by the tracking link
        clicks["clicked_at"] = clicks["shown_at"] + pd.to_timedelta(np.floor(delay[clicked]), unit="s")
        prng = self._rng(_PURCHASES, d)
        cat = self.catalogue(day)
        interest = self.interests(day)[
            clicks["user_id"].to_numpy(), cat.category[clicks["item_id"].to_numpy()]
        ]
        price = cat.price[clicks["item_id"].to_numpy()]
        p_buy = _sigmoid(
            self.config.p0_purchase
            + self.config.p1_purchase * interest
            - self.users.price_sensitivity[clicks["user_id"].to_numpy()] * np.log(price / 30.0)
        )
        bought = prng.random(len(clicks)) < p_buy
        wait = np.minimum(prng.exponential(1.5 * 3600.0, len(clicks)), PURCHASE_DELAY_CAP_S)
        purchases = pd.DataFrame(
            {
                "purchase_id": clicks["click_id"].to_numpy()[bought],
                "click_id": clicks["click_id"].to_numpy()[bought],
                "impression_id": clicks["impression_id"].to_numpy()[bought],
                "user_id": clicks["user_id"].to_numpy()[bought],
                "item_id": clicks["item_id"].to_numpy()[bought],
                "price": price[bought],
                "purchased_at": clicks["clicked_at"].to_numpy()[bought]
                + pd.to_timedelta(np.floor(wait[bought]), unit="s").to_numpy(),
            }
        )
        out = DayTraffic(imp.drop(columns="request_index"), clicks.reset_index(drop=True), purchases)
        if requests is None:
            self._traffic = {k2: v for k2, v in self._traffic.items() if k2[0] >= d - 1}
            self._traffic[key] = out
        return out

    # --- what lands each day ------------------------------------------------------------------
    def items_file(self, day: dt.date | str) -> pd.DataFrame:
        """The catalogue's changes of ``day``: on the start date the whole starting catalogue (launched
        before it) and the day's launches; later the day's launches and price changes."""
        d = self.day_index(day)
        self._check_horizon(d)
        items = self._items
        start = pd.Timestamp(self.config.start_date)
        day_start = start + pd.Timedelta(days=d)
        rng = self._rng(_NEW_ITEMS, 10_000 + d)  # launch and change times within the day
        parts = []
        launched = (
            np.r_[self.items_launched_on(-1), self.items_launched_on(d)]
            if d == 0
            else self.items_launched_on(d)
        )
        within = pd.to_timedelta(rng.integers(0, 6 * 3600, len(launched)), unit="s")
        launch_ts = start + pd.to_timedelta(items["launch_day"][launched], unit="D") + within
        parts.append(
            pd.DataFrame(
                {
                    "item_id": launched,
                    "price": self.prices(max(d - 1, 0))[launched] if d else items["price"][launched],
                    "launched_at": launch_ts,
                    # the start date's file is a snapshot of the catalogue taken that day
                    "updated_at": day_start + within,
                }
            )
        )
        ids, _ = self.price_changes(d)
        ids = ids[items["launch_day"][ids] < d]
        if len(ids):
            parts.append(
                pd.DataFrame(
                    {
                        "item_id": ids,
                        "price": self.prices(d)[ids],
                        "launched_at": start + pd.to_timedelta(items["launch_day"][ids], unit="D"),
                        "updated_at": day_start
                        + pd.to_timedelta(rng.integers(6 * 3600, SECONDS_PER_DAY, len(ids)), unit="s"),
                    }
                )
            )
        frame = pd.concat(parts, ignore_index=True)
        i = frame["item_id"].to_numpy()
        frame["category"] = items["category"][i]
        frame["brand"] = items["brand"][i]
        frame["sponsored"] = items["sponsored"][i]
        frame = frame.sort_values(["updated_at", "item_id"], kind="stable", ignore_index=True)
        frame.insert(0, "change_id", d * ID_STRIDE + np.arange(len(frame), dtype=np.int64))
        return frame[
            ["change_id", "item_id", "category", "brand", "price", "sponsored", "launched_at", "updated_at"]
        ]

    def landing(self, day: dt.date | str, policy: Policy | None = None) -> dict[str, pd.DataFrame]:
        """The four files that land for ``day``: the catalogue's changes, the day's impressions, and the
        clicks and purchases that *arrive* on it (events of the day and late ones of the day before)."""
        d = self.day_index(day)
        lo = pd.Timestamp(self.config.start_date) + pd.Timedelta(days=d)
        days = [self.traffic(lo.date() - dt.timedelta(days=1), policy)] if d > 0 else []
        days.append(self.traffic(lo.date(), policy))
        return self.landing_of(day, days)

    def landing_of(self, day: dt.date | str, days: Sequence[DayTraffic]) -> dict[str, pd.DataFrame]:
        """:meth:`landing` of given traffic: ``days`` = [the day before's, the day's] (or the day's
        alone), e.g. the day's slates served by the real-time API after a day logged by the popularity policy."""
        d = self.day_index(day)
        lo = pd.Timestamp(self.config.start_date) + pd.Timedelta(days=d)
        hi = lo + pd.Timedelta(days=1)
        clicks = pd.concat([t.clicks for t in days], ignore_index=True)
        purchases = pd.concat([t.purchases for t in days], ignore_index=True)
        return {
            "items": self.items_file(day),
            "impressions": days[-1].impressions,
            "clicks": clicks[(clicks["clicked_at"] >= lo) & (clicks["clicked_at"] < hi)].reset_index(
                drop=True
            ),
            "purchases": purchases[(purchases["purchased_at"] >= lo) & (purchases["purchased_at"] < hi)]
            .sort_values(["purchased_at", "purchase_id"], kind="stable")
            .reset_index(drop=True),
        }


def _cumsum_by_group(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``values`` within runs of equal ``group`` (groups contiguous)."""
    total = np.cumsum(values)
    starts = np.r_[True, group[1:] != group[:-1]] if len(group) else np.array([], bool)
    base = np.maximum.accumulate(np.where(starts, total - values, 0.0)) if len(group) else total
    return total - base

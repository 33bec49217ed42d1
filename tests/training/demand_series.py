"""Synthetic weekly demand with known price elasticities, for fast demand-model tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def synthetic_demand(series: int = 10, weeks: int = 130, seed: int = 0, level: float = 400.0) -> tuple[
        pd.DataFrame, pd.DataFrame]:
    """Product-week rows whose units follow ``level x season x (price / p0) ** e x promotion lift``, Poisson.

    Prices move by list changes and promotions (10-30% off for 1-3 weeks); competitors walk around our price.

    Returns:
        The rows (``product_id``, ``week_start``, ``units``, ``price``, ``competitor_price``, ``promotion``,
        ``category``) and the truth (``unique_id``, ``elasticity``).
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2023-01-02")
    weeks_index = pd.date_range(start, periods=weeks, freq="W-MON")
    rows, truth = [], []
    for i in range(series):
        e = rng.uniform(-2.5, -0.8)
        p0 = rng.uniform(20, 500)
        base = level * rng.uniform(0.5, 2.0)
        phase = rng.uniform(0, 2 * np.pi)
        list_price = np.full(weeks, p0)
        for change in sorted(rng.choice(np.arange(10, weeks), 3, replace=False)):
            list_price[change:] *= rng.uniform(0.9, 1.12)
        discount = np.zeros(weeks)
        for _ in range(weeks // 10):
            w0 = rng.integers(0, weeks)
            discount[w0:w0 + rng.integers(1, 4)] = rng.uniform(0.1, 0.3)
        price = list_price * (1 - discount)
        comp = p0 * np.exp(np.cumsum(rng.normal(0, 0.01, weeks)))
        week_of_year = weeks_index.isocalendar().week.to_numpy().astype(float)
        season = 1 + 0.25 * np.sin(2 * np.pi * week_of_year / 52 + phase)
        mean = base * season * (price / p0) ** e * np.where(discount > 0, 1.1, 1.0)
        units = rng.poisson(mean)
        rows.append(pd.DataFrame({"product_id": f"S{i:02d}", "week_start": weeks_index, "units": units,
                                  "price": price.round(2), "competitor_price": comp.round(2),
                                  "promotion": (discount > 0).astype(int), "category": "AB"[i % 2]}))
        truth.append({"unique_id": f"S{i:02d}", "elasticity": e})
    return pd.concat(rows, ignore_index=True), pd.DataFrame(truth)

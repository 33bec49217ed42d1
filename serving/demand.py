"""Demand forecasts for the HTTP API and batch scoring: functions that take the model as an argument.

``forecast_request`` checks a request against the model (known series, horizon, price paths) and answers p10 /
p50 / p90 per series and period. Products are not customer data, so demand has no record scope: every scoring
role may forecast every series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from serving.predict import RequestError


def series_ids(series: Sequence[Mapping[str, str | None]]) -> list[str]:
    """The id of each requested series (``product_id`` or ``unique_id``), in request order.

    Raises:
        RequestError: 422 naming the entry with neither or both.
    """
    ids = []
    for at, ref in enumerate(series):
        given = [v for v in (ref.get("product_id"), ref.get("unique_id")) if v is not None]
        if len(given) != 1:
            raise RequestError(422, f"series.{at}", "give exactly one of product_id or unique_id")
        ids.append(str(given[0]))
    return ids


def check_forecast_request(model, ids: list[str], horizon: int, prices: Mapping[str, Sequence[float]] | None,
                           max_series: int) -> dict[str, list[float]] | None:
    """Refuse what the model cannot answer, naming the field.

    Returns:
        The price paths cut to ``horizon`` (or ``None``).

    Raises:
        RequestError: 413 too many series; 404 unknown series; 422 a horizon beyond the model's maximum, a price
        path for a series not asked for, too short, or with a price that is not a positive number.
    """
    if len(ids) > max_series:
        raise RequestError(413, "series", f"{len(ids)} series; at most {max_series} per request")
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise RequestError(422, "series", "each series once per request", duplicated)
    known = set(model.history_["unique_id"].unique())
    unknown = [i for i in ids if i not in known]
    if unknown:
        short = [i for i in unknown if i in set(getattr(model, "short_series_", []))]
        reason = ("unknown series: the model has no history of them" if len(short) < len(unknown)
                  else "series too short for the model to forecast")
        raise RequestError(404, "series", reason, unknown)
    if horizon > model.max_horizon:
        raise RequestError(422, "horizon", f"horizon {horizon} is beyond the model's maximum of {model.max_horizon}")
    if not prices:
        return None
    if not model.roles_["price"]:
        raise RequestError(422, "prices", "this model takes no prices (its data has none)")
    stray = sorted(set(prices) - set(ids))
    if stray:
        raise RequestError(422, "prices", "price paths for series not requested", stray)
    out = {}
    for uid, path in prices.items():
        if len(path) < horizon:
            raise RequestError(422, f"prices.{uid}", f"{len(path)} prices for a horizon of {horizon}")
        for step, value in enumerate(path[:horizon]):
            if value is None or not math.isfinite(value) or value <= 0:
                raise RequestError(422, f"prices.{uid}.{step}", f"a price must be a positive number, got {value!r}")
        out[uid] = [float(v) for v in path[:horizon]]
    return out


def forecast_request(model, ids: list[str], horizon: int, prices: Mapping[str, Sequence[float]] | None,
                     max_series: int) -> list[dict]:
    """Forecast the requested series, in request order.

    Returns:
        One ``{"series", "price_path", "points": [{"step", "period_start", "p10", "p50", "p90", "price"}]}`` per
        series.
    """
    paths = check_forecast_request(model, ids, horizon, prices, max_series)
    forecast = model.forecast(horizon, prices=paths, ids=ids)
    price_column = model.roles_["price"][0] if model.roles_["price"] else None
    last_price = (model.history_.sort_values("ds").groupby("unique_id")[price_column].last().to_dict()
                  if price_column else {})
    out = []
    by_series = {uid: g.sort_values("step") for uid, g in forecast.groupby("unique_id", sort=False)}
    for uid in ids:
        g = by_series[uid]
        given = paths is not None and uid in paths
        assumed = paths[uid] if given else [last_price.get(uid)] * horizon
        points = [{"step": int(step), "period_start": pd.Timestamp(ds).strftime("%Y-%m-%d"),
                   "p10": _number(p10), "p50": _number(p50), "p90": _number(p90),
                   "price": None if price is None or (isinstance(price, float) and np.isnan(price))
                   else round(float(price), 6)}
                  for step, ds, p10, p50, p90, price in zip(g["step"], g["ds"], g["p10"], g["p50"], g["p90"],
                                                            assumed, strict=True)]
        out.append({"series": uid, "price_path": "given" if given else ("last known price" if price_column
                                                                         else "none"), "points": points})
    return out


def _number(value: float) -> float:
    return round(float(value), 4) if np.isfinite(value) else 0.0


def log_records(forecasts: list[dict], horizon: int, prices: Mapping | None) -> tuple[list[dict], list[dict]]:
    """The inference-log rows of a forecast: one per series and period (inputs, result)."""
    inputs, results = [], []
    for f in forecasts:
        for point in f["points"]:
            inputs.append({"series": f["series"], "horizon": horizon, "step": point["step"],
                           "price": point["price"], "price_path": f["price_path"]})
            results.append({"series": f["series"], **point})
    return inputs, results

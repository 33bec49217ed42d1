"""Replaying production: a champion scoring the entities of a past day, logged to the inference log as the service
logs them, so that monitoring and the backtest judge the same records a live service would have served.

The service's own scoring path (``serving``) is not imported here (``monitoring`` sits above ``serving`` in the
layout's arrows); a replay scores the task's view rows with the champion's artifact directly, which is what the
service does for a record given by id, and writes rows in the log's one layout (``features.production``).
"""

from __future__ import annotations

import json
from datetime import date, datetime, time

import numpy as np
import pandas as pd

from salesml.settings import Settings

#: Who the replayed records are logged as.
REPLAY_PRINCIPAL = "replay"


class ReplayError(RuntimeError):
    """A replay of a kind replays do not cover."""


def _plain(value):
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def risk_log_columns(task: str, model_name: str, version: str, model, rows: pd.DataFrame, id_column: str,
                     at: datetime, principal: str = REPLAY_PRINCIPAL) -> dict[str, list]:
    """The inference-log columns of a risk model scoring ``rows`` at ``at``: inputs are the record's id and the
    model's features, the prediction its calibrated probability (pure: nothing is written)."""
    p = model.predict_proba(rows)
    features = list(model.features)
    ids = rows[id_column].astype(str).tolist()
    records = [{id_column: i, **{f: _plain(v) for f, v in zip(features, values, strict=True)}}
               for i, values in zip(ids, rows[features].itertuples(index=False, name=None), strict=True)]
    n = len(records)
    return {"time": [at] * n, "task": [task] * n, "kind": ["risk"] * n, "principal": [principal] * n,
            "model": [model_name] * n, "version": [str(version)] * n,
            "inputs": [json.dumps(r) for r in records], "prediction": [float(x) for x in p],
            "outputs": [json.dumps({id_column: i, "probability": round(float(x), 6)}) for i, x in
                        zip(ids, p, strict=True)]}


def replay_scores(settings: Settings, task: str, day: date, at: datetime | None = None) -> dict:
    """Score the open entities of a risk task at the end of ``day`` with its champion and log them.

    Args:
        settings: where the registry, the store and the logs are.
        task: a risk task built from a view (``opportunity_loss``, ``customer_churn``).
        day: the day scored: the view is built at that cutoff, with the data as of that day.
        at: the time logged (default: 18:00 that day).

    Returns:
        ``{"task", "version", "day", "records"}``.

    Raises:
        ReplayError: when the task is not a risk view task.
        RegistryError: when it has no champion, or the champion's artifact fails its checks.
    """
    replayed = replay_risk(settings, task, day, at)
    return {"task": task, "version": replayed["version"], "day": f"{day:%Y-%m-%d}",
            "records": len(replayed["rows"])}


def replay_risk(settings: Settings, task: str, day: date, at: datetime | None = None,
                rows: pd.DataFrame | None = None) -> dict:
    """``replay_scores``, returning what was scored: ``{"version", "model", "rows", "probability"}`` (the view's
    rows at the cutoff ``day``, or ``rows`` when given, and the champion's probability of each)."""
    from experiments.registered import load_champion
    from experiments.tracking import configure_mlflow
    from features.production import write_log_part
    from training.registry import get_task

    definition = get_task(task)
    if definition.kind != "risk" or definition.data.source != "view":
        raise ReplayError(f"replays score risk tasks built from a view; {task} is a {definition.kind} task")
    client = configure_mlflow(settings)
    model, champion = load_champion(client, task)
    if rows is None:
        rows = open_rows(settings, task, day, champion_horizon(client, champion))
    when = at or datetime.combine(day, time(18))
    columns = risk_log_columns(task, champion.name, str(champion.version), model, rows, definition.data.id_column,
                               when)
    if columns["time"]:
        write_log_part(settings.logs_dir, task, f"{when:%Y-%m-%d}", columns)
    return {"version": str(champion.version), "model": model, "rows": rows,
            "probability": np.asarray(columns["prediction"], dtype=float)}


def champion_horizon(client, version) -> int:
    """The label horizon (days) of the run behind a registered version."""
    from monitoring.monitor import run_horizon

    return run_horizon(client.get_run(version.run_id))


def open_rows(settings: Settings, task: str, day: date, horizon: int) -> pd.DataFrame:
    """A risk task's view rows at the cutoff ``day`` (the entities open then), with the data as of that day."""
    from features.pipeline import build_view
    from features.store import FeatureStore
    from features.views import ViewConfig
    from training.registry import get_task

    definition = get_task(task)
    with FeatureStore.from_settings(settings, read_only=True) as store:
        return build_view(store, definition.data.name, day, cutoffs=[day], config=ViewConfig(horizon_days=horizon),
                          threads=settings.threads).frame


def demand_log_columns(task: str, model_name: str, version: str, forecast: pd.DataFrame, at: datetime,
                       principal: str = REPLAY_PRINCIPAL) -> dict[str, list]:
    """The inference-log columns of a demand forecast (``unique_id``, ``ds``, ``step``, ``p10``, ``p50``, ``p90``
    and optionally ``price``): one row per series and period, as the service logs a forecast (pure)."""
    n, horizon = len(forecast), int(forecast["step"].max()) if len(forecast) else 0
    prices = forecast["price"] if "price" in forecast.columns else pd.Series([None] * n, index=forecast.index)
    inputs, outputs = [], []
    for uid, ds, step, p10, p50, p90, price in zip(forecast["unique_id"], forecast["ds"], forecast["step"],
                                                   forecast["p10"], forecast["p50"], forecast["p90"], prices,
                                                   strict=True):
        price = _plain(price)
        inputs.append(json.dumps({"series": str(uid), "horizon": horizon, "step": int(step), "price": price,
                                  "price_path": "last known price" if price is not None else "none"}))
        outputs.append(json.dumps({"series": str(uid), "step": int(step),
                                   "period_start": pd.Timestamp(ds).strftime("%Y-%m-%d"),
                                   "p10": _plain(p10), "p50": _plain(p50), "p90": _plain(p90), "price": price}))
    return {"time": [at] * n, "task": [task] * n, "kind": ["demand"] * n, "principal": [principal] * n,
            "model": [model_name] * n, "version": [str(version)] * n, "inputs": inputs,
            "prediction": [float(x) for x in forecast["p50"]], "outputs": outputs}


def value_log_columns(task: str, model_name: str, version: str, values: pd.DataFrame, at: datetime, as_of: date,
                      horizon_days: int, principal: str = REPLAY_PRINCIPAL) -> dict[str, list]:
    """The inference-log columns of a value model's answers (``values``: ``account_id``, ``expected_value``,
    ``ltv``, ``p_alive``, ``value_band``), as the service logs them: the horizon starts at ``as_of``, the day the
    answers are as of, which monitoring labels them from (pure)."""
    n = len(values)
    inputs, outputs = [], []
    for account, expected, ltv, p_alive, band in zip(values["account_id"], values["expected_value"], values["ltv"],
                                                     values["p_alive"], values["value_band"], strict=True):
        inputs.append(json.dumps({"account_id": str(account), "horizon_days": int(horizon_days),
                                  "as_of": f"{as_of:%Y-%m-%d}"}))
        outputs.append(json.dumps({"account_id": str(account), "expected_value": _plain(expected),
                                   "ltv": _plain(ltv), "p_alive": _plain(p_alive), "value_band": str(band)}))
    return {"time": [at] * n, "task": [task] * n, "kind": ["value"] * n, "principal": [principal] * n,
            "model": [model_name] * n, "version": [str(version)] * n, "inputs": inputs,
            "prediction": [float(x) for x in values["expected_value"]], "outputs": outputs}


def segments_log_columns(task: str, model_name: str, version: str, assigned: pd.DataFrame, at: datetime,
                         principal: str = REPLAY_PRINCIPAL) -> dict[str, list]:
    """The inference-log columns of a segmentation's assignments (``assigned``: ``account_id``, ``segment``,
    ``name``, ``strength``), as the service logs an assignment of records it was given (pure)."""
    n = len(assigned)
    inputs, outputs = [], []
    for account, segment, name, strength in zip(assigned["account_id"], assigned["segment"], assigned["name"],
                                                assigned["strength"], strict=True):
        inputs.append(json.dumps({"account_id": str(account), "source": "request"}))
        outputs.append(json.dumps({"account_id": str(account), "segment": int(segment), "name": str(name),
                                   "strength": _plain(strength), "source": "request"}))
    return {"time": [at] * n, "task": [task] * n, "kind": ["segments"] * n, "principal": [principal] * n,
            "model": [model_name] * n, "version": [str(version)] * n, "inputs": inputs,
            "prediction": [float(x) for x in assigned["segment"]], "outputs": outputs}

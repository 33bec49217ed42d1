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
    from experiments.registered import load_champion
    from experiments.tracking import configure_mlflow
    from features.pipeline import build_view
    from features.production import write_log_part
    from features.store import FeatureStore
    from features.views import ViewConfig
    from monitoring.monitor import run_horizon
    from training.registry import get_task

    definition = get_task(task)
    if definition.kind != "risk" or definition.data.source != "view":
        raise ReplayError(f"replays score risk tasks built from a view; {task} is a {definition.kind} task")
    client = configure_mlflow(settings)
    model, champion = load_champion(client, task)
    name = champion.name
    horizon = run_horizon(client.get_run(champion.run_id))
    with FeatureStore.from_settings(settings, read_only=True) as store:
        rows = build_view(store, definition.data.name, day, cutoffs=[day],
                          config=ViewConfig(horizon_days=horizon), threads=settings.threads).frame
    when = at or datetime.combine(day, time(18))
    columns = risk_log_columns(task, name, str(champion.version), model, rows, definition.data.id_column, when)
    if columns["time"]:
        write_log_part(settings.logs_dir, task, f"{when:%Y-%m-%d}", columns)
    return {"task": task, "version": str(champion.version), "day": f"{day:%Y-%m-%d}",
            "records": len(columns["time"])}

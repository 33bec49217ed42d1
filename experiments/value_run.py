"""Tracked training of lifetime-value models: one MLflow run, a registered version of ``value.<task>``, its tags.

``run_value_training`` is the pipeline behind ``salesml train customer_value``. It loads the purchase history and
the customer view from the feature store, trains with ``training.value`` (pure of MLflow) and logs:

- params and the view as an MLflow dataset with its feature version;
- the holdout figures of both models and of the RFM-only baseline (MAE, Spearman, top-10% and top-20% revenue
  capture, total predicted over actual), and the BG/NBD purchase counts against actual and the naive forecast;
- the papers' calibration/holdout table (``evaluation/calibration.json``) and plots of it and of cumulative
  repeat purchases in the holdout, expected against actual;
- the evaluation data the audit reads (the holdout rows with both predictions, the training reference and the
  newest rows), and the final model's own predictions (``evaluation/predictions.parquet``) that a loaded version
  must reproduce;
- the pyfunc model, and only then the registered version (``register_version`` leaves none half-registered).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import mlflow
import numpy as np
import optuna
import pandas as pd

from experiments.plots import calibration_holdout_figure, log_figure, tracking_figure
from experiments.registry import (
    EVALUATION_FILES,
    TAG_FEATURE_VERSION,
    TAG_KIND,
    TAG_TRAINER,
    TAG_WINDOW,
)
from experiments.risk_run import register_version
from experiments.tracking import (
    configure_mlflow,
    ensure_experiment,
    log_best_trial,
    log_pyfunc_model,
    log_run_context,
    log_training_dataset,
    name_study,
)
from features.store import FeatureStore
from salesml.settings import Settings
from training.configs import with_home
from training.registry import get_kind, get_task
from training.value import ID, ValueConfig, ValueData, ValueResult, load_value_data, train_value_model

PYFUNC_CODE = Path(__file__).resolve().parent / get_kind("value").pyfunc
#: The final model's predictions for its accounts, as training computed them (a loaded version must reproduce them).
PREDICTIONS = PurePosixPath("evaluation/predictions.parquet")
PYFUNC_REQUIREMENTS = ("mlflow", "salesml", "lightgbm", "xgboost", "numpy", "pandas", "scipy", "scikit-learn")
#: Most training rows kept as the drift reference.
REFERENCE_ROWS = 20_000


def value_study_name(data: ValueData, config: ValueConfig) -> str:
    """One Optuna study per (task, data snapshot) and objective."""
    return name_study("value", config.task, data.task.feature_version, config.model_dump(mode="json", include={
        "horizon_days", "families", "max_estimators", "early_stopping_rounds", "seed", "validation_cutoffs",
        "exclude_features", "sensitive_as_features", "start"}))


def run_value_training(settings: Settings, task: str, config: ValueConfig, trainer: str, baseline: bool = False,
                       progress: Callable[[int, float], None] | None = None,
                       status: Callable[[str], None] | None = None) -> dict:
    """Train, track and register a lifetime-value model.

    Args:
        settings: where the feature store, MLflow and Optuna live.
        task: a value task (``customer_value``).
        config: training config.
        trainer: identity of whoever runs it (a tag on the version).
        baseline: not offered (the RFM-only baseline and the naive forecast run in every training).
        progress: called with (finished trials, best value).
        status: called with a short description of each step.

    Returns:
        ``{"model", "version", "run_id", "metrics", "params", "feature_version", "windows", ...}``.
    """
    if baseline:
        raise ValueError("value models have no separate baseline: every training runs the RFM-only baseline and "
                         "the naive purchase forecast beside the models and logs their figures")
    say = status or (lambda _: None)
    config = with_home(config.model_copy(update={"task": task}), settings.home)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with FeatureStore.from_settings(settings) as store:
        say(f"loading {task}")
        definition = get_task(task, store)
        data = load_value_data(store, task, config)
    client = configure_mlflow(settings)
    name = definition.model_name
    experiment_id = ensure_experiment(settings, name)
    rows = data.task
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{task}-{config.model}") as run:
        log_run_context(task, rows.feature_version, trainer, rows.window, config)
        mlflow.log_params({"data.rows": len(rows.frame), "data.purchases": len(data.purchases),
                           "data.features": len(rows.spec.features)})
        log_training_dataset(rows.frame, settings.feature_store_path,
                             f"{task}@{rows.feature_version}", rows.feature_version, rows.snapshot, rows.spec.label)
        say(f"{len(data.purchases)} purchases and {len(rows.frame)} labelled customer rows, {rows.window}")
        result = train_value_model(data, config, settings.optuna_storage_resolved, value_study_name(data, config),
                                   progress, say)
        log_best_trial(settings.optuna_storage_resolved, value_study_name(data, config))
        metrics = result.metrics
        mlflow.log_params({f"model.{k}": v for k, v in result.params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        say("logging figures and evaluation data")
        _log_evaluation(result, data)
        say("logging the model")
        digests, model_uri = _log_model(result)
        say("registering")
        tags = {TAG_WINDOW: rows.window, TAG_FEATURE_VERSION: rows.feature_version, TAG_TRAINER: trainer,
                TAG_KIND: config.model, **config.run_tags}
        version = register_version(client, name, model_uri, run.info.run_id, digests, task, tags)
    return {
        "model": name,
        "version": str(version),
        "run_id": run.info.run_id,
        "metrics": {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()},
        "feature_version": rows.feature_version,
        "params": result.params,
        "windows": result.windows,
        "calibration": result.calibration.to_dict(orient="records"),
        "unavailable_feature_groups": rows.unavailable,
    }


def _log_evaluation(result: ValueResult, data: ValueData) -> None:
    rows = data.task
    frame = rows.frame
    test_cutoff = pd.Timestamp(result.windows["test_cutoff"])
    window = frame[frame["cutoff"] == test_cutoff].copy()
    window[ID] = window[ID].astype(str)
    window = window.merge(result.holdout.drop(columns=["actual_value"]), on=ID, how="left")
    window["prediction"] = window[result.model.choice]
    reference = frame[frame["cutoff"] + pd.Timedelta(days=result.windows["horizon_days"]) <= test_cutoff]
    if len(reference) > REFERENCE_ROWS:
        reference = reference.sample(REFERENCE_ROWS, random_state=0)
    recent = rows.recent if rows.recent is not None else window
    log_figure(calibration_holdout_figure(result.calibration), "calibration_holdout")
    log_figure(tracking_figure(result.tracking), "cumulative_repeat_purchases")
    predictions = result.model.predict(result.model.accounts[:200])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {EVALUATION_FILES["window"]: window, EVALUATION_FILES["reference"]: reference,
                 EVALUATION_FILES["recent"]: recent, PREDICTIONS: predictions,
                 PurePosixPath("evaluation/holdout.parquet"): result.holdout}
        for path, part in files.items():
            local = folder / path.name
            part.reset_index(drop=True).to_parquet(local, index=False)
            mlflow.log_artifact(str(local), str(path.parent))
    mlflow.log_dict({"by_frequency": result.calibration.to_dict(orient="records"),
                     "cumulative": result.tracking.to_dict(orient="records")}, "evaluation/calibration.json")
    mlflow.log_dict(result.windows, "evaluation/windows.json")
    mlflow.log_dict({"test_cutoff": result.windows["test_cutoff"],
                     "validation_cutoffs": result.windows["validation_cutoffs"],
                     "horizon_days": result.windows["horizon_days"]}, "split.json")


def _log_model(result: ValueResult) -> tuple[dict[str, str], str]:
    model = result.model
    # The horizon is a parameter (optional, the model's own by default), not an input column.
    example = (pd.DataFrame({ID: [str(a) for a in model.accounts[:2]]}), {"horizon_days": model.horizon_days})
    return log_pyfunc_model(model, PYFUNC_CODE, "value_model", example, PYFUNC_REQUIREMENTS)

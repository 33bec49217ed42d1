"""Tracked training of demand models: one MLflow run, a registered version of ``demand.<task>``, its tags.

``run_demand_training`` is the pipeline behind ``salesml train TASK`` for demand tasks. It loads the task's series
from the feature store, tunes and trains with ``training.demand`` (pure of MLflow), and logs:

- params, the series as an MLflow dataset with its feature version;
- the test figures (WAPE, MASE, bias, pinball losses, 80% coverage, overall and per window) beside each
  statsforecast baseline's, and per horizon step and per series (``evaluation/by_step.json``,
  ``evaluation/by_series.parquet``);
- each series' implied own-price elasticity (``evaluation/elasticities.parquet``), judged against the simulator's
  ground truth where there is one;
- plots of forecast against actual for sample series and of WAPE by horizon step;
- the evaluation data the audit reads (the test forecasts, the training reference and the newest rows), and
  the final model's own forecast (``evaluation/forecasts.parquet``) that a loaded version must reproduce;
- the pyfunc model, and only then the registered version. A failure before the version is fully tagged leaves
  no registered version behind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import mlflow
import numpy as np
import optuna
import pandas as pd

from experiments.plots import forecast_figure, horizon_figure, log_figure
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
from training.demand import (
    ID,
    TARGET,
    TIME,
    DemandConfig,
    DemandData,
    DemandResult,
    load_demand_data,
    train_demand_model,
)
from training.registry import get_kind, get_task

#: The models-from-code pyfunc of demand models (the kind's definition names the file).
PYFUNC_CODE = Path(__file__).resolve().parent / get_kind("demand").pyfunc
#: The final model's forecast from its history, as training computed it (a loaded version must reproduce it).
FORECASTS = PurePosixPath("evaluation/forecasts.parquet")
PYFUNC_REQUIREMENTS = ("mlflow", "salesml", "lightgbm", "xgboost", "mlforecast", "numpy", "pandas",
                       "scikit-learn")
#: Series drawn in the forecast-against-actual plot.
PLOTTED_SERIES = 4


def demand_study_name(data: DemandData, config: DemandConfig) -> str:
    """One Optuna study per (task, data snapshot) and objective: trials are comparable only on the same series,
    windows and search space."""
    return name_study("demand", config.task, data.feature_version, {
        "target": data.target, **config.model_dump(mode="json", include={
            "horizon", "season_length", "families", "cv_windows", "test_windows", "max_estimators", "seed", "pruning",
            "price_columns", "competitor_columns", "planned_columns", "observed_columns", "holiday_column",
            "static_columns", "series_feature", "monotone_price", "series", "period_length"})})


def run_demand_training(settings: Settings, task: str, config: DemandConfig, trainer: str, baseline: bool = False,
                        progress: Callable[[int, float], None] | None = None,
                        status: Callable[[str], None] | None = None) -> dict:
    """Train, track and register a demand model.

    Args:
        settings: where the feature store, MLflow and Optuna live.
        task: a demand task (``product_demand``, ``sales_periods``).
        config: training config.
        trainer: identity of whoever runs it (a tag on the version; validators cannot approve their own).
        baseline: not offered for demand models (the statsforecast baselines run in every training).
        progress: called with (finished trials, best value).
        status: called with a short description of each step.

    Returns:
        ``{"model", "version", "run_id", "metrics", "params", "feature_version", "baselines", ...}``.
    """
    if baseline:
        raise ValueError("demand models have no separate baseline: every training runs the statsforecast "
                         "baselines beside the model and logs their figures")
    say = status or (lambda _: None)
    config = with_home(config.model_copy(update={"task": task}), settings.home)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with FeatureStore.from_settings(settings) as store:
        say(f"loading {task}")
        definition = get_task(task, store)
        data = load_demand_data(store, task, config)
    client = configure_mlflow(settings)
    name = definition.model_name
    experiment_id = ensure_experiment(settings, name)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{task}-tuned") as run:
        log_run_context(task, data.feature_version, trainer, data.window, config)
        mlflow.log_params({"data.target": data.target, "data.freq": data.series.freq,
                           "data.season_length": data.series.season_length, "data.series": len(data.series.ids)})
        log_training_dataset(data.series.frame, settings.feature_store_path,
                             f"{task}@{data.feature_version}", data.feature_version, data.snapshot, TARGET)
        say(f"{len(data.series.ids)} series of {data.series.freq} periods, {data.window}")
        result = train_demand_model(data.series, config, settings.optuna_storage_resolved,
                                    demand_study_name(data, config), progress, say, data.oracle)
        log_best_trial(settings.optuna_storage_resolved, demand_study_name(data, config))
        metrics = result.metrics
        mlflow.log_params({f"model.{k}": v for k, v in result.params.to_dict().items() if k != "booster"})
        mlflow.log_params({f"model.booster.{k}": v for k, v in result.params.booster.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and v is not None and np.isfinite(v)})
        say("logging figures and evaluation data")
        _log_study(result)
        _log_evaluation(result, data, config)
        say("logging the model")
        digests, model_uri = _log_model(result, config)
        say("registering")
        tags = {TAG_WINDOW: data.window, TAG_FEATURE_VERSION: data.feature_version, TAG_TRAINER: trainer,
                TAG_KIND: "tuned", **config.run_tags}
        version = register_version(client, name, model_uri, run.info.run_id, digests, task, tags)
    return {
        "model": name,
        "version": str(version),
        "run_id": run.info.run_id,
        "metrics": {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()},
        "feature_version": data.feature_version,
        "params": result.params.to_dict(),
        "windows": result.windows,
        "target": data.target,
        "series": len(data.series.ids),
        "unavailable_feature_groups": [],
    }


def _log_study(result: DemandResult) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trials.csv"
        result.trials.to_csv(path, index=False)
        mlflow.log_artifact(str(path), "study")
    complete = result.trials[result.trials["state"] == "COMPLETE"].sort_values("number")
    best = np.inf
    for number, value in zip(complete["number"], complete["value"], strict=True):
        best = min(best, float(value))
        mlflow.log_metric("study_best_value", best, step=int(number))
    mlflow.log_metrics({"study_trials": len(result.trials),
                        "study_pruned": int((result.trials["state"] == "PRUNED").sum())})


def _log_evaluation(result: DemandResult, data: DemandData, config: DemandConfig) -> None:
    test = result.test
    history = data.series.frame
    origin = pd.Timestamp(result.windows["test_origin"])
    by_step = result.by_step
    baselines = {}
    for name in config.baselines:
        per = test.dropna(subset=[name]).groupby("step").apply(
            lambda g, n=name: float(np.abs(g[TARGET] - g[n]).sum() / max(np.abs(g[TARGET]).sum(), 1e-12)),
            include_groups=False)
        baselines[name] = per
    # The largest series by volume: where the errors weigh most in WAPE.
    top = test.groupby(ID)[TARGET].sum().sort_values(ascending=False).index[:PLOTTED_SERIES].tolist()
    log_figure(forecast_figure(test, top, history[history[TIME] <= origin]), "forecast_vs_actual")
    log_figure(horizon_figure(by_step, baselines), "wape_by_horizon")
    forecasts = result.model.forecast(result.model.horizon)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = data.series.frame
        files = {
            EVALUATION_FILES["window"]: test.merge(inputs.drop(columns=[TARGET]), on=[ID, TIME], how="left"),
            EVALUATION_FILES["reference"]: inputs[inputs[TIME] <= origin],
            EVALUATION_FILES["recent"]: inputs[inputs[TIME] > origin],
            PurePosixPath("evaluation/by_series.parquet"): result.by_series,
            PurePosixPath("evaluation/elasticities.parquet"): result.elasticities,
            FORECASTS: forecasts,
        }
        for path, frame in files.items():
            local = folder / path.name
            frame.reset_index(drop=True).to_parquet(local, index=False)
            mlflow.log_artifact(str(local), str(path.parent))
    mlflow.log_dict({"by_step": by_step.to_dict(orient="records"),
                     "baselines_by_step": {k: {int(s): float(v) for s, v in per.items()} for k, per in
                                           baselines.items()}}, "evaluation/by_step.json")
    mlflow.log_dict(result.windows, "evaluation/windows.json")
    mlflow.log_dict({"test_origin": result.windows["test_origin"], "horizon": config.horizon,
                     "test_windows": config.test_windows, "cv_windows": config.cv_windows,
                     "calibration_windows": config.calibration_windows}, "split.json")


def _log_model(result: DemandResult, config: DemandConfig) -> tuple[dict[str, str], str]:
    model = result.model
    example = pd.DataFrame({"unique_id": model.history_[ID].unique()[:2].astype(str),
                            "horizon": np.full(min(2, model.history_[ID].nunique()), config.horizon)})
    return log_pyfunc_model(model, PYFUNC_CODE, "demand_model", example, PYFUNC_REQUIREMENTS)

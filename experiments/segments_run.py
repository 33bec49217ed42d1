"""Tracked training of segmentations: one MLflow run, a registered version of ``segments.<task>``, its tags.

``run_segments_training`` is the pipeline behind ``salesml train customer_segments``. It loads the customer view at
the latest month end and the one before (with lifetime value, P(alive) and won-deal discount) from the feature
store, trains with ``training.segments`` (pure of MLflow) and logs:

- params, the view as an MLflow dataset with its feature version;
- HDBSCAN's figures (segments, noise share, DBCV, silhouette, bootstrap ARI, ARI against the simulator's true
  segments where known) beside KMeans-on-RFM's;
- the profile table (``evaluation/profiles.parquet``), the migration matrix (``evaluation/migration.json``) and
  each bootstrap refit's ARI;
- the evaluation data the audit reads (the accounts with every column and their segment, as window, reference and
  recent), and the final model's assignment of sample accounts (``evaluation/assignments.parquet``) that a loaded
  version must reproduce;
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
    log_unavailable_groups,
    name_study,
)
from features.store import FeatureStore
from salesml.settings import Settings
from training.configs import with_home
from training.registry import get_kind, get_task
from training.segments import (
    ID,
    SegmentsConfig,
    SegmentsData,
    SegmentsResult,
    load_segments_data,
    train_segments_model,
)

PYFUNC_CODE = Path(__file__).resolve().parent / get_kind("segments").pyfunc
#: Sample accounts' assignment by the final model, as training computed it (a loaded version must reproduce it).
ASSIGNMENTS = PurePosixPath("evaluation/assignments.parquet")
PYFUNC_REQUIREMENTS = ("mlflow", "salesml", "hdbscan", "numpy", "pandas", "scikit-learn")


def segments_study_name(data: SegmentsData, config: SegmentsConfig) -> str:
    """One Optuna study per (task, data snapshot) and objective."""
    return name_study("segments", config.task, data.feature_version, config.model_dump(mode="json", include={
        "features", "log_features", "max_noise_share", "min_cluster_size", "min_samples", "max_epsilon", "seed",
        "exclude_features"}))


def run_segments_training(settings: Settings, task: str, config: SegmentsConfig, trainer: str,
                          baseline: bool = False, progress: Callable[[int, float], None] | None = None,
                          status: Callable[[str], None] | None = None) -> dict:
    """Train, track and register a segmentation.

    Args:
        settings: where the feature store, MLflow and Optuna live.
        task: a segments task (``customer_segments``).
        config: training config.
        trainer: identity of whoever runs it (a tag on the version).
        baseline: not offered (KMeans on RFM runs in every training).
        progress: called with (finished trials, best value).
        status: called with a short description of each step.

    Returns:
        ``{"model", "version", "run_id", "metrics", "params", "feature_version", "profiles", "migration"}``.
    """
    if baseline:
        raise ValueError("segmentations have no separate baseline: KMeans on RFM runs beside HDBSCAN in every "
                         "training and its figures are logged")
    say = status or (lambda _: None)
    config = with_home(config.model_copy(update={"task": task}), settings.home)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with FeatureStore.from_settings(settings) as store:
        say(f"loading {task}")
        definition = get_task(task, store)
        data = load_segments_data(store, task, config)
    client = configure_mlflow(settings)
    name = definition.model_name
    experiment_id = ensure_experiment(settings, name)
    window = f"{data.cutoff:%Y-%m-%d}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{task}-hdbscan") as run:
        log_run_context(task, data.feature_version, trainer, window, config)
        mlflow.log_params({"data.accounts": len(data.current), "data.cutoff": window})
        log_training_dataset(data.current, settings.feature_store_path,
                             f"{task}@{data.feature_version}", data.feature_version, data.snapshot)
        unavailable = log_unavailable_groups(data.unavailable, say)
        result = train_segments_model(data, config, settings.optuna_storage_resolved,
                                      segments_study_name(data, config), progress, say)
        log_best_trial(settings.optuna_storage_resolved, segments_study_name(data, config))
        metrics = result.metrics
        mlflow.log_params({f"model.{k}": v for k, v in result.params.items() if k != "features"})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        say("logging profiles, migration and evaluation data")
        _log_evaluation(result, data)
        if result.dropped:
            mlflow.log_dict(result.dropped, "left_out_features.json")
        say("logging the model")
        digests, model_uri = _log_model(result)
        say("registering")
        tags = {TAG_WINDOW: window, TAG_FEATURE_VERSION: data.feature_version, TAG_TRAINER: trainer,
                TAG_KIND: "hdbscan", **config.run_tags}
        version = register_version(client, name, model_uri, run.info.run_id, digests, task, tags)
    profiles = result.model.profiles
    return {
        "model": name,
        "version": str(version),
        "run_id": run.info.run_id,
        "metrics": {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()},
        "feature_version": data.feature_version,
        "params": result.params,
        "profiles": profiles[["segment", "name", "size", "share", "ltv", "churn_risk", "price_sensitivity"]]
        .to_dict(orient="records"),
        "migration": result.model.migration.to_dict(orient="index"),
        "unavailable_feature_groups": unavailable,
        "left_out_features": result.dropped,
    }


def _log_evaluation(result: SegmentsResult, data: SegmentsData) -> None:
    model = result.model
    window = data.current.reset_index(drop=True).copy()
    window[ID] = window[ID].astype(str)
    labels = model.assignments.set_index(ID)
    window["segment"] = window[ID].map(labels["segment"]).astype(int)
    window["segment_name"] = window[ID].map(labels["name"])
    window["kmeans_segment"] = window[ID].map(result.kmeans).astype(int)
    sample = window.head(200)
    assigned = model.assign(sample)
    assigned.insert(0, ID, sample[ID].to_numpy())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {EVALUATION_FILES["window"]: window, EVALUATION_FILES["reference"]: window,
                 EVALUATION_FILES["recent"]: window, ASSIGNMENTS: assigned,
                 PurePosixPath("evaluation/profiles.parquet"): model.profiles}
        for path, part in files.items():
            local = folder / path.name
            part.reset_index(drop=True).to_parquet(local, index=False)
            mlflow.log_artifact(str(local), str(path.parent))
    mlflow.log_dict({"matrix": model.migration.to_dict(orient="index"),
                     "previous_cutoff": None if data.previous is None else
                     f"{pd.Timestamp(data.previous['cutoff'].max()):%Y-%m-%d}",
                     "cutoff": f"{data.cutoff:%Y-%m-%d}"}, "evaluation/migration.json")
    mlflow.log_dict({"bootstrap_ari": result.bootstrap, "names": {str(k): v for k, v in model.names.items()},
                     "sensitive": data.sensitive}, "evaluation/windows.json")
    mlflow.log_dict({"cutoff": f"{data.cutoff:%Y-%m-%d}", "accounts": len(window)}, "split.json")


def _log_model(result: SegmentsResult) -> tuple[dict[str, str], str]:
    model = result.model
    example = pd.DataFrame({ID: [str(a) for a in model.accounts[:2]]})
    return log_pyfunc_model(model, PYFUNC_CODE, "segments_model", example, PYFUNC_REQUIREMENTS,
                            digests_artifact=True)

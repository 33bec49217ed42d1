"""Tracked training of risk models: one MLflow parent run, a registered version, its tags.

``run_risk_training`` is the pipeline behind ``salesml train TASK`` for risk tasks. It loads the task's rows from
the feature store, tunes and trains with ``training.risk`` (pure of MLflow), logs params, the dataset with its
feature version, metrics, plots, reason codes, the evaluation data the audit reads, and the pyfunc model, and
only then registers a new version of ``risk.<task>``. A failure at any step before the version is fully tagged
leaves no registered version behind.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import mlflow
import numpy as np
import optuna
import pandas as pd

from experiments.plots import calibration_figure, log_figure, roc_figure, shap_summary_figure
from experiments.registered import load_version_model
from experiments.registry import (
    EVALUATION_FILES,
    TAG_CODE_VERSION,
    TAG_FEATURE_VERSION,
    TAG_GATE,
    TAG_KIND,
    TAG_MITIGATION,
    TAG_REGISTERED,
    TAG_RETRAIN_MONTH,
    TAG_TASK,
    TAG_TASK_KIND,
    TAG_TRAINER,
    TAG_VARIANT_OF,
    TAG_WINDOW,
    sha_tag,
)
from experiments.tracking import (
    code_version,
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
from training.baseline import StageBaseline
from training.evaluate import auc_interval_metrics, classification_metrics
from training.explain import reason_codes
from training.models import GROUP_THRESHOLDS
from training.registry import get_kind
from training.risk import TrainingResult, split_rows, train_risk_model
from training.tasks import RiskConfig, TaskData, load_task_data, resolve_task, with_home

log = logging.getLogger(__name__)
#: The models-from-code pyfunc of risk models (the kind's definition names the file).
PYFUNC_CODE = Path(__file__).resolve().parent / get_kind("risk").pyfunc
#: Run artifact holding the test rows' probabilities as training computed them.
TEST_PREDICTIONS = PurePosixPath("evaluation/test_predictions.parquet")
#: Training rows kept as the drift reference at most (Evidently slows down badly on large frames).
REFERENCE_ROWS = 50_000
#: Test rows explained with exact TreeSHAP for the run's global importance and summary plot, at most.
EXPLANATION_ROWS = 5_000
#: What the logged pyfunc needs, pinned to the versions installed here. Naming them spares MLflow its inference,
#: which loads the model in a subprocess (about 5 s of every training).
PYFUNC_REQUIREMENTS = ("mlflow", "salesml", "lightgbm", "xgboost", "numpy", "pandas", "scikit-learn", "scipy")


def study_name(data: TaskData, config: RiskConfig) -> str:
    """One Optuna study per (task, data snapshot), and per objective: a study's trials must be comparable, so
    the features, the split and the search settings are part of the name too."""
    return name_study("risk", data.spec.name, data.feature_version, {
        "features": data.spec.features, "label": data.spec.label, **config.model_dump(mode="json", include={
            "families", "cv_folds", "test_size", "split_seed", "test_cutoffs", "validation_cutoffs",
            "embargo_cutoffs", "max_estimators", "early_stopping_rounds", "horizon_days", "seed", "pruning"})})


def run_risk_training(settings: Settings, task: str, config: RiskConfig, trainer: str, baseline: bool = False,
                       progress: Callable[[int, float], None] | None = None,
                       status: Callable[[str], None] | None = None) -> dict:
    """Train, track and register a risk model.

    Args:
        settings: where the feature store, MLflow and Optuna live.
        task: task name.
        config: training config.
        trainer: identity of whoever runs it (a tag on the version; validators cannot approve their own).
        baseline: train the stage-based win-rate baseline instead of a tuned booster.
        progress: called with (finished trials, best value).
        status: called with a short description of each step.

    Returns:
        ``{"model", "version", "run_id", "metrics", ...}``.
    """
    say = status or (lambda _: None)
    config = with_home(config, settings.home)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with FeatureStore.from_settings(settings) as store:
        say(f"loading {task}")
        spec = resolve_task(task, store, config)
        data = load_task_data(store, spec, config)
    if data.frame.empty:
        raise ValueError(f"task {task} has no labelled rows")
    client = configure_mlflow(settings)
    name = spec.definition.model_name
    experiment_id = ensure_experiment(settings, name)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{task}-{'baseline' if baseline else 'tuned'}") as run:
        log_run_context(task, data.feature_version, trainer, data.window, config)
        log_training_dataset(data.frame, settings.feature_store_path,
                             f"{data.spec.name}@{data.feature_version}", data.feature_version, data.snapshot, data.spec.label)
        unavailable = log_unavailable_groups(data.unavailable, say)
        if baseline:
            say("fitting the stage-based baseline")
            result_model, metrics, test_rows, test_frame, split = _train_baseline(data, config)
            params = {"family": "stage_baseline"}
        else:
            say("tuning")
            result = train_risk_model(data, config, settings.optuna_storage_resolved, study_name(data, config),
                                       progress)
            log_best_trial(settings.optuna_storage_resolved, study_name(data, config))
            result_model, metrics, params = result.model, result.metrics, result.params
            test_rows, split = result.test_rows, result.split
            test_frame = data.frame.iloc[split.test]
            say("logging plots and explanations")
            _log_study(result)
            _log_explanations(result, test_frame, config.threads, config.seed)
            mlflow.log_dict(result.calibration_briers, "calibration_briers.json")
        mlflow.log_params({f"model.{k}": v for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        _log_curves(test_rows, spec.label, data)
        _log_test_predictions(test_rows)
        mlflow.log_dict(split.description, "split.json")
        train_rows = data.frame.iloc[np.concatenate([split.train, split.valid])]
        _log_evaluation(test_frame, train_rows, data.recent, config.seed)
        say("logging the model")
        digests, model_uri = _log_model(result_model, test_frame)
        say("registering")
        tags = {TAG_WINDOW: data.window, TAG_FEATURE_VERSION: data.feature_version, TAG_TRAINER: trainer,
                TAG_KIND: "stage_baseline" if baseline else "tuned", **config.run_tags}
        version = register_version(client, name, model_uri, run.info.run_id, digests, spec.name, tags)
    return {
        "model": name,
        "version": str(version),
        "run_id": run.info.run_id,
        "metrics": {k: (None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v)
                    for k, v in metrics.items()},
        "feature_version": data.feature_version,
        "params": params,
        "unavailable_feature_groups": unavailable,
    }


def _log_study(result: TrainingResult) -> None:
    study = result.study
    trials = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration", "user_attrs"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trials.csv"
        trials.to_csv(path, index=False)
        mlflow.log_artifact(str(path), "study")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = -np.inf
    for t in sorted(complete, key=lambda t: t.number):
        best = max(best, t.value)
        mlflow.log_metric("study_best_value", best, step=t.number)
    mlflow.log_metrics({"study_trials": len(study.trials), "study_trials_run_now": result.trials_run,
                        "study_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)})
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    log_figure(plot_optimization_history(study).figure, "optuna_history")
    if len(complete) >= 3:
        try:
            with warnings.catch_warnings():
                # One per parameter that few trials have varied: expected in a short study, and the figure shows it.
                warnings.filterwarnings("ignore", message="Some regimes for parameter", category=UserWarning)
                log_figure(plot_param_importances(study).figure, "optuna_param_importances")
        except (ValueError, RuntimeError) as exc:  # too few varied trials for importances
            log.info("no parameter importances: %s", exc)


def _log_test_predictions(test_rows: pd.DataFrame) -> None:
    """The test rows' keys, labels and probabilities as the trained model gave them, for validators to recompute
    figures from and to check a loaded version against."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / TEST_PREDICTIONS.name
        test_rows.reset_index(drop=True).to_parquet(path, index=False)
        mlflow.log_artifact(str(path), str(TEST_PREDICTIONS.parent))


def _log_evaluation(window: pd.DataFrame, train_rows: pd.DataFrame, recent: pd.DataFrame | None, seed: int
                    ) -> None:
    """The rows the audit judges a version on, so that it reads them from the registry instead of rebuilding
    (and re-materialising) the task's views: the test window with every column (features, keys, label, time,
    sensitive attributes), at most ``REFERENCE_ROWS`` sampled training rows, and the newest cutoff's rows."""
    if len(train_rows) > REFERENCE_ROWS:
        train_rows = train_rows.sample(REFERENCE_ROWS, random_state=seed).sort_index()
    frames = {"window": window, "reference": train_rows, "recent": recent}
    with tempfile.TemporaryDirectory() as tmp:
        for key, frame in frames.items():
            if frame is None:
                continue
            path = Path(tmp) / EVALUATION_FILES[key].name
            frame.reset_index(drop=True).to_parquet(path, index=False)
            mlflow.log_artifact(str(path), str(EVALUATION_FILES[key].parent))


def _log_curves(test_rows: pd.DataFrame, label: str, data: TaskData) -> None:
    y = test_rows[label].astype(int).to_numpy()
    p = test_rows["probability"].to_numpy()
    if len(np.unique(y)) < 2:
        return
    oracle = None
    if data.oracle is not None and data.spec.time_column:
        joined = test_rows.merge(data.oracle, on=[data.spec.id_column, data.spec.time_column], how="left")
        if joined["oracle"].notna().all():
            oracle = pd.DataFrame({"y": joined[label].astype(int), "p": joined["oracle"]})
    from sklearn.metrics import roc_auc_score

    log_figure(roc_figure(y, p, float(roc_auc_score(y, p)), oracle), "roc")
    log_figure(calibration_figure(y, p), "calibration")


def _log_explanations(result: TrainingResult, test_frame: pd.DataFrame, threads: int, seed: int) -> None:
    model = result.model
    # Exact TreeSHAP is the costliest step of a large training (about 4 ms a row for the IBM model on one thread,
    # three minutes for its 15,605 test rows), so it gets the training's threads and a fixed-seed sample of the
    # test rows, whose mean |SHAP| estimates the whole set's within sampling error.
    sample = test_frame.sample(n=min(len(test_frame), EXPLANATION_ROWS), random_state=seed)
    mlflow.log_param("explanation_rows", len(sample))
    matrix = model.preprocessor.transform(sample)
    contributions = model.contributions(sample, threads=threads, matrix=matrix)
    log_figure(shap_summary_figure(contributions, matrix), "shap_summary")
    riskiest = test_frame.assign(_p=result.test_rows["probability"].to_numpy()).nlargest(20, "_p")
    reasons = reason_codes(model, riskiest.drop(columns="_p"), k=3)
    keys = [c for c in model.metadata.get("keys", []) if c in riskiest.columns]
    examples = [{**{k: str(row[k]) for k in keys}, "probability": float(row["_p"]), "reasons": r}
                for (_, row), r in zip(riskiest.iterrows(), reasons, strict=True)]
    mlflow.log_dict({"examples": examples}, "explanations/reason_codes.json")
    importance = contributions.abs().mean().sort_values(ascending=False)
    mlflow.log_dict({"mean_abs_shap": {k: float(v) for k, v in importance.items()}}, "explanations/global.json")


def _log_model(model, test_frame: pd.DataFrame) -> tuple[dict[str, str], str]:
    example = test_frame[model.features].head(5).reset_index(drop=True)
    # The model reads every number as float64 and takes a missing one, but a signature inferred from an integer
    # column says `long`, which MLflow's schema check then holds to: a pyfunc or `mlflow models serve` request with
    # a missing count failed "Can not safely convert float64 to int64". As `double` the column takes both.
    integers = [c for c in example.columns if pd.api.types.is_integer_dtype(example[c].dtype)]
    example[integers] = example[integers].astype("float64")
    return log_pyfunc_model(model, PYFUNC_CODE, "risk_model", example, PYFUNC_REQUIREMENTS)


def register_version(client, name: str, model_uri: str, run_id: str, digests: dict[str, str], task: str,
                     tags: dict) -> str:
    """Register a logged model as a new version of ``name`` with its lineage, gate and digest tags; a version
    whose tags could not all be written is deleted again, so none stays half-registered. The task and the monthly
    loop's month (when ``tags`` name one) are written with the registration itself and ``salesml.registered``
    last: a process killed in between leaves a version the loop recognises as cut short and deletes.

    Returns:
        The new version.
    """
    first = {TAG_TASK: task, **({TAG_RETRAIN_MONTH: tags[TAG_RETRAIN_MONTH]} if TAG_RETRAIN_MONTH in tags else {})}
    version = mlflow.register_model(model_uri, name, tags=first)
    try:
        tags = {**tags, TAG_CODE_VERSION: code_version(), TAG_GATE: "pending", "salesml.run_id": run_id,
                TAG_TASK_KIND: name.partition(".")[0]}
        tags.update({sha_tag(file): digest for file, digest in digests.items()})
        for key, value in tags.items():
            client.set_model_version_tag(name, version.version, key, value)
        client.update_model_version(name, version.version, description=json.dumps(
            {"task": task, "feature_version": tags.get(TAG_FEATURE_VERSION), "trainer": tags.get(TAG_TRAINER),
             "variant_of": tags.get(TAG_VARIANT_OF)}))
        client.set_model_version_tag(name, version.version, TAG_REGISTERED, "complete")
    except BaseException:
        # A version without its tags (digests, trainer) must not stay in the registry.
        client.delete_model_version(name, version.version)
        raise
    return str(version.version)


def register_threshold_variant(settings: Settings, name: str, version: str, mitigation: dict,
                               example: pd.DataFrame) -> str:
    """Register a fairness-mitigated variant of a version as a new candidate version.

    The variant is the same artifact with one alert threshold per group of the mitigated attribute
    (``training.models.GROUP_THRESHOLDS``), logged in its own run and tagged with the version it derives from.
    It keeps the original trainer, so its trainer still cannot approve it, and it starts with gate ``pending``:
    it is audited like any candidate.

    Args:
        settings: where MLflow lives.
        name: registered model.
        version: the version the variant derives from.
        mitigation: ``attribute``, ``thresholds`` (group to threshold) and ``method`` from the fairness audit.
        example: a few feature rows, as the model's input example.

    Returns:
        The new version.
    """
    client = configure_mlflow(settings)
    model, info = load_version_model(client, name, version)
    model.metadata = {**model.metadata, GROUP_THRESHOLDS: {
        "attribute": mitigation["attribute"], "thresholds": mitigation["thresholds"],
        "method": mitigation.get("method", ""), "variant_of": str(version)}}
    experiment_id = ensure_experiment(settings, name)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"v{version}-threshold-variant") as run:
        mlflow.set_tags({"salesml.variant_of": str(version), "salesml.task": info.tags.get(TAG_TASK, "")})
        mlflow.log_dict(model.metadata[GROUP_THRESHOLDS], "fairness/group_thresholds.json")
        _copy_evaluation(client, info.run_id)
        digests, model_uri = _log_model(model, example)
        tags = {key: info.tags[key] for key in (TAG_WINDOW, TAG_FEATURE_VERSION, TAG_TRAINER) if key in info.tags}
        tags.update({TAG_KIND: "threshold_variant", TAG_VARIANT_OF: str(version),
                     TAG_MITIGATION: f"{mitigation.get('method', 'ThresholdOptimizer')} on {mitigation['attribute']}"})
        return register_version(client, name, model_uri, run.info.run_id, digests,
                         info.tags.get(TAG_TASK) or model.metadata.get("task"), tags)


def _copy_evaluation(client, source_run: str) -> None:
    """Log into the active run the evaluation data and split of ``source_run``: a variant of a version is judged
    on the rows its base version was."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in ("evaluation", "split.json"):
            try:
                local = client.download_artifacts(source_run, path, tmp)
            except (mlflow.exceptions.MlflowException, OSError):
                continue
            if Path(local).is_dir():
                mlflow.log_artifacts(local, path)
            else:
                mlflow.log_artifact(local)


def _train_baseline(data: TaskData, config: RiskConfig):
    spec, frame = data.spec, data.frame
    if "stage" not in frame.columns:
        raise ValueError("the stage-based baseline needs the opportunity view's stage column")
    split = split_rows(data, config)
    y = frame[spec.label].astype(int).to_numpy()
    train_idx = np.concatenate([split.train, split.valid])
    model = StageBaseline(metadata={"task": spec.name, "label": spec.label, "keys": spec.keys,
                                    "id_column": spec.id_column, "alert_threshold": 0.5})
    model.fit(frame["stage"].iloc[train_idx], y[train_idx])
    test_frame = frame.iloc[split.test]
    p = model.predict_proba(test_frame)
    metrics = classification_metrics(y[split.test], p, "test_")
    metrics.update(auc_interval_metrics(y[split.test], p, test_frame, spec.id_column, config.seed))
    metrics["oracle_roc_auc"] = None
    keep = [c for c in (*spec.keys, spec.label) if c in frame.columns]
    return model, metrics, test_frame[list(dict.fromkeys(keep))].assign(probability=p), test_frame, split

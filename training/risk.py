"""The risk trainer (deal loss, churn, any binary outcome): split, tune, fit, calibrate, evaluate. Pure of MLflow.

``train_risk_model`` takes a task's rows and a config and returns a ``TrainingResult``: the calibrated model,
the Optuna study, metrics on validation and test, the scored test rows and the early-warning figures. The
experiments layer tracks it in MLflow and registers it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import optuna
import pandas as pd
from sklearn.model_selection import train_test_split

from training.calibration import choose_calibrator
from training.evaluate import (
    auc_interval_metrics,
    classification_metrics,
    early_warning,
    threshold_at_precision,
)
from training.models import RiskModel, fit_estimator, make_estimator, native_booster
from training.preprocess import TabularPreprocessor
from training.search import (
    SearchData,
    SearchSettings,
    fit_trial_model,
    make_objective,
    open_study,
    params_from_trial,
    progress_reporter,
    run_study,
    score_folds,
)
from training.tasks import RiskConfig, TaskData

log = logging.getLogger(__name__)


class InsufficientDataError(ValueError):
    """Too few labelled examples to train this task (with what to do instead)."""


@dataclass
class Split:
    """Row indexes of the train, validation and test sets (validation empty for cross-validated data)."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    description: dict = field(default_factory=dict)


@dataclass
class TrainingResult:
    """Everything a training produced."""

    model: RiskModel
    study: optuna.Study
    metrics: dict[str, float | None]
    params: dict
    split: Split
    test_rows: pd.DataFrame
    trials_run: int
    calibration_briers: dict[str, float]


def split_rows(data: TaskData, config: RiskConfig) -> Split:
    """Time-based split for timed data, the fixed stratified split otherwise.

    Timed data: the last ``test_cutoffs`` labelled cutoffs are the test set, the ``validation_cutoffs`` before them
    validate, and training uses the cutoffs before that, minus an embargo as long as the label horizon so that no
    training label looks into the validation window. Never shuffled across time.

    Raises:
        InsufficientDataError: when there are too few cutoffs for the windows.
    """
    frame, spec = data.frame, data.spec
    if spec.timed:
        times = pd.to_datetime(frame[spec.time_column]).dt.to_period("M")
        periods = sorted(times.unique())
        embargo = config.embargo_cutoffs if config.embargo_cutoffs is not None else math.ceil(config.horizon_days / 30)
        needed = config.test_cutoffs + config.validation_cutoffs + embargo + 2
        if len(periods) < needed:
            raise InsufficientDataError(f"{len(periods)} labelled months; the time split needs at least {needed} "
                                   f"({config.test_cutoffs} test, {config.validation_cutoffs} validation, "
                                   f"{embargo} embargo, 2 training)")
        test_p = periods[-config.test_cutoffs:]
        valid_p = periods[-(config.test_cutoffs + config.validation_cutoffs):-config.test_cutoffs]
        train_p = periods[: len(periods) - config.test_cutoffs - config.validation_cutoffs - embargo]
        index = np.arange(len(frame))
        split = Split(index[times.isin(train_p).to_numpy()], index[times.isin(valid_p).to_numpy()],
                      index[times.isin(test_p).to_numpy()])
        split.description = {"kind": "time", "train": f"{train_p[0]}..{train_p[-1]}",
                             "validation": f"{valid_p[0]}..{valid_p[-1]}", "test": f"{test_p[0]}..{test_p[-1]}",
                             "embargo_months": embargo}
        return split
    y = frame[spec.label].astype(int).to_numpy()
    index = np.arange(len(frame))
    train, test = train_test_split(index, test_size=config.test_size, stratify=y, random_state=config.split_seed)
    return Split(np.sort(train), np.array([], dtype=int), np.sort(test),
                 {"kind": "stratified", "test_size": config.test_size, "random_state": config.split_seed,
                  "tuning": f"{config.cv_folds}-fold cross-validation inside the training part"})


def check_class_counts(data: TaskData, config: RiskConfig) -> None:
    """Refuse a task that declares a minimum of realised outcomes (opportunity scoring: 200 won and 200 lost
    deals) when the store holds fewer.

    Raises:
        InsufficientDataError: saying so and offering the task's baseline when it has one.
    """
    task = data.spec.definition
    if task is None or task.min_outcomes is None or task.outcomes is None or data.outcomes is None:
        return
    known = task.outcomes
    counts = data.outcomes[known.column].value_counts()
    positive, negative = int(counts.get(known.positive, 0)), int(counts.get(known.negative, 0))
    if min(positive, negative) < config.min_deals_per_outcome:
        offer = (f" Train the stage-based win-rate baseline instead: salesml train {task.name} --baseline"
                 if task.baseline else "")
        raise InsufficientDataError(
            f"{task.name} needs at least {config.min_deals_per_outcome} {known.negative} and "
            f"{config.min_deals_per_outcome} {known.positive} outcomes (Salesforce's documented minimum for "
            f"opportunity scoring); the store has {negative} {known.negative} and {positive} {known.positive}."
            + offer)


def train_risk_model(data: TaskData, config: RiskConfig, storage_url: str, study_name: str,
                      progress: Callable[[int, float], None] | None = None) -> TrainingResult:
    """Tune, fit, calibrate and evaluate a churn or deal-loss model.

    Args:
        data: the task's labelled rows.
        config: the training config.
        storage_url: Optuna RDB storage.
        study_name: the study (one per task and data snapshot; an existing one is resumed).
        progress: called with (finished trials, best value) after each trial.

    Returns:
        The trained model and its evaluation.
    """
    check_class_counts(data, config)
    spec, frame = data.spec, data.frame
    split = split_rows(data, config)
    y = frame[spec.label].astype(int).to_numpy()
    for name, idx in (("training", split.train), ("test", split.test)):
        if len(np.unique(y[idx])) < 2:
            raise InsufficientDataError(f"the {name} set has a single class; more labelled history is needed")
    pre = TabularPreprocessor(spec.numeric, spec.categorical).fit(frame.iloc[split.train])
    x = pre.transform(frame)
    # A constraint on a feature whose group the data lacks (no activities in a CRM export) has nothing to hold.
    missing = {c for g in data.unavailable for c in g["columns"]}
    unknown = [f for f in config.monotone if f not in pre.feature_names_ and f not in missing]
    if unknown:
        raise ValueError(f"monotone constraints name features the task does not have: {', '.join(unknown)}")
    constraints = [{"increasing": 1, "decreasing": -1}.get(config.monotone.get(f, ""), 0) for f in pre.feature_names_]
    settings = SearchSettings(list(config.families), config.max_estimators, config.early_stopping_rounds,
                              config.threads, config.seed, config.pruning, constraints if any(constraints) else None)
    if spec.timed:
        search = SearchData(x.iloc[split.train], y[split.train], spec.categorical, x.iloc[split.valid], y[split.valid])
    else:
        search = SearchData.cross_validated(x.iloc[split.train], y[split.train], spec.categorical, config.cv_folds,
                                            config.seed)
    study = open_study(study_name, storage_url, config.seed, config.pruning, config.heartbeat_seconds)

    report = progress_reporter(progress)

    objective = make_objective(search, settings)
    trials_run = run_study(study, objective, settings.families, config.trials, config.timeout, report,
                           config.initial_trials)
    best = study.best_trial
    family, params = params_from_trial(best.params, float(np.mean(search.y_train)))

    if spec.timed:
        estimator, _, rounds = fit_trial_model(family, params, search, settings)
        valid_scores = estimator.predict_proba(search.x_valid)[:, 1]
        valid_y = search.y_valid
    else:
        # The study's best trial scored these folds already; a resumed study's best may predate this process.
        held = objective.out_of_fold(best.number)
        if held is not None:
            valid_scores, rounds_seen = held
        else:
            valid_scores, _, rounds_seen = score_folds(family, params, search, settings)
        rounds = max(10, int(np.mean(rounds_seen) * 1.1))
        if settings.monotone:
            params = {**params, "monotone_constraints": settings.monotone if family == "lightgbm"
                      else tuple(settings.monotone)}
        estimator = make_estimator(family, params, threads=config.threads, seed=config.seed, n_estimators=rounds)
        estimator = fit_estimator(estimator, family, search.x_train, search.y_train, None, spec.categorical,
                                  config.early_stopping_rounds)
        valid_y = search.y_train
    calibrator, briers = choose_calibrator(valid_scores, valid_y, config.seed)
    metadata = {
        "task": spec.name, "label": spec.label, "id_column": spec.id_column, "time_column": spec.time_column,
        "keys": spec.keys, "sensitive": spec.sensitive, "family": family, "params": params, "rounds": rounds,
        "calibration": calibrator.method, "positive_rate": float(np.mean(y[split.train])),
    }
    model = RiskModel(family, native_booster(estimator, family), pre, calibrator, metadata)

    metrics: dict[str, float | None] = {"cv_or_validation_roc_auc": float(best.value)}
    calibrated_valid = calibrator.predict(valid_scores)
    metrics.update(classification_metrics(valid_y, calibrated_valid, "validation_"))
    test_frame = frame.iloc[split.test]
    p_test = model.predict_proba(test_frame)
    metrics.update(classification_metrics(y[split.test], p_test, "test_"))
    metrics.update(auc_interval_metrics(y[split.test], p_test, test_frame, spec.id_column, config.seed))
    keep = [c for c in (*spec.keys, spec.id_column, spec.time_column, spec.label) if c and c in frame.columns]
    test_rows = test_frame[list(dict.fromkeys(keep))].assign(probability=p_test)
    metrics["oracle_roc_auc"] = None
    if data.oracle is not None:
        id_col = spec.id_column
        joined = test_rows.merge(data.oracle, on=[id_col, spec.time_column], how="left")
        if joined["oracle"].notna().all():
            from sklearn.metrics import roc_auc_score

            metrics["oracle_roc_auc"] = float(roc_auc_score(joined[spec.label].astype(int), joined["oracle"]))
    if spec.definition is not None and spec.definition.outcomes is not None and data.outcomes is not None:
        threshold = threshold_at_precision(valid_y, calibrated_valid, config.early_warning_precision)
        model.metadata["alert_threshold"] = threshold
        known = spec.definition.outcomes
        metrics.update(early_warning(test_rows, data.outcomes, threshold, config.early_warning_days, spec.label,
                                     known.id_column, known.time_column, known.column, known.positive))
    else:
        model.metadata["alert_threshold"] = threshold_at_precision(valid_y, calibrated_valid, 0.5)
    model.metadata["metrics"] = {k: v for k, v in metrics.items() if k.startswith("test_")}
    return TrainingResult(model, study, metrics, {"family": family, **params, "rounds": rounds}, split, test_rows,
                          trials_run, briers)

"""Optuna search: one study per (task, data snapshot) in RDB storage, TPE, the model family as a hyperparameter.

Each family has its own search space. Trials stop early on the validation AUC (early stopping) and are pruned by
Optuna's LightGBM and XGBoost pruning callbacks. Because the study lives in the RDB storage (SQLite by default,
PostgreSQL at scale), a killed run resumes it and several worker processes can share it; trials left running by a
dead worker are failed through heartbeats.

The pruner compares trials at equal learning progress, not at equal boosting rounds. At a given round a trial
with a small learning rate is always behind one with a large rate, though it often ends higher: on Sales
Win/Loss, a resumed study drew its best configuration so far (learning rate 0.028, CV AUC 0.945) again and
pruned it at round 30, where it stood at 0.911 against the completed trials' median of 0.917. So the callbacks
see the trial through ``ProgressSteps``, which turns rounds into steps of shrinkage (learning rate x rounds, one
step per ``REPORT_SHRINKAGE``). That also spaces the reports: each is a round trip to the RDB storage (about
15 ms on SQLite), which per round would cost more than the boosting itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState
from optuna_integration import LightGBMPruningCallback, XGBoostPruningCallback
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from training.models import best_iteration, fit_estimator, make_estimator

log = logging.getLogger(__name__)

#: Shrinkage (learning rate x boosting rounds) between two reports to the pruner: every 10 rounds at a learning
#: rate of 0.05, every 50 at 0.01.
REPORT_SHRINKAGE = 0.5
#: Reports (in shrinkage steps) before the pruner may stop a trial: 16 steps, a shrinkage of 8 (about 270 rounds at
#: a learning rate of 0.03). Earlier, the ranking of trials does not yet hold. `experiments/benchmarks/pruning.py`
#: replays the pruner over 30-trial studies run without pruning: allowed from step 4, it would have stopped Telco's
#: 12 best trials and Sales Win/Loss's 3rd, 4th, 5th, 7th and 8th; from step 16, only Telco's 9th best and below
#: and Win/Loss's 18th and below, at about 80% and 70% of the unpruned time.
PRUNING_WARMUP_STEPS = 16

#: Starting points tried first in a new study, one per family: sensible defaults that TPE improves on.
DEFAULT_TRIALS = {
    "lightgbm": {"family": "lightgbm", "lgb_learning_rate": 0.03, "lgb_num_leaves": 15, "lgb_min_child_samples": 40,
                 "lgb_colsample_bytree": 0.7, "lgb_subsample": 0.8, "lgb_reg_lambda": 1.0, "lgb_reg_alpha": 0.01,
                 "imbalance": "none"},
    "xgboost": {"family": "xgboost", "xgb_learning_rate": 0.03, "xgb_max_depth": 4, "xgb_min_child_weight": 2.0,
                "xgb_subsample": 0.8, "xgb_colsample_bytree": 0.7, "xgb_reg_lambda": 1.0, "xgb_reg_alpha": 0.01,
                "xgb_gamma": 0.01, "imbalance": "none"},
}


def suggest_params(trial: optuna.Trial, families: list[str], positive_rate: float) -> tuple[str, dict]:
    """Sample a family and its hyperparameters.

    Returns:
        The family and the keyword arguments for ``make_estimator``.
    """
    family = trial.suggest_categorical("family", families)
    weight = trial.suggest_categorical("imbalance", ["none", "balanced"])
    scale = (1 - positive_rate) / positive_rate if weight == "balanced" and positive_rate > 0 else 1.0
    if family == "lightgbm":
        params = {
            "learning_rate": trial.suggest_float("lgb_learning_rate", 0.01, 0.3, log=True),
            "num_leaves": trial.suggest_int("lgb_num_leaves", 4, 256, log=True),
            "min_child_samples": trial.suggest_int("lgb_min_child_samples", 5, 300, log=True),
            "colsample_bytree": trial.suggest_float("lgb_colsample_bytree", 0.3, 1.0),
            "subsample": trial.suggest_float("lgb_subsample", 0.5, 1.0),
            "subsample_freq": 1,
            "reg_lambda": trial.suggest_float("lgb_reg_lambda", 1e-3, 30.0, log=True),
            "reg_alpha": trial.suggest_float("lgb_reg_alpha", 1e-3, 10.0, log=True),
            "scale_pos_weight": scale,
        }
    else:
        params = {
            "learning_rate": trial.suggest_float("xgb_learning_rate", 0.01, 0.3, log=True),
            "max_depth": trial.suggest_int("xgb_max_depth", 2, 10),
            "min_child_weight": trial.suggest_float("xgb_min_child_weight", 0.5, 50.0, log=True),
            "subsample": trial.suggest_float("xgb_subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("xgb_colsample_bytree", 0.3, 1.0),
            "reg_lambda": trial.suggest_float("xgb_reg_lambda", 1e-3, 30.0, log=True),
            "reg_alpha": trial.suggest_float("xgb_reg_alpha", 1e-3, 10.0, log=True),
            "gamma": trial.suggest_float("xgb_gamma", 1e-3, 5.0, log=True),
            "scale_pos_weight": scale,
        }
    return family, params


def params_from_trial(params: dict, positive_rate: float) -> tuple[str, dict]:
    """Rebuild the family and estimator arguments from a finished trial's parameters."""
    fixed = optuna.trial.FixedTrial(params)
    return suggest_params(fixed, [params["family"]], positive_rate)


class ProgressSteps:
    """A trial as Optuna's pruning callbacks see it, with boosting rounds turned into steps of learning progress.

    The callbacks report the validation AUC at every round; this passes a report on only when the shrinkage
    (learning rate x rounds) reaches the next multiple of ``REPORT_SHRINKAGE``, as that multiple's step, and asks
    the pruner only then, so trials with different learning rates are compared at equal progress.
    """

    def __init__(self, trial: optuna.Trial, learning_rate: float):
        self._trial = trial
        self._rate = learning_rate
        self._step = 0
        self._reported = False

    @property
    def study(self) -> optuna.Study:
        """The trial's study (the callbacks check its direction)."""
        return self._trial.study

    def report(self, value: float, step: int) -> None:
        """Report ``value`` of boosting round ``step`` (0-based) when it completes a new progress step."""
        progress = int((step + 1) * self._rate / REPORT_SHRINKAGE + 1e-9)
        self._reported = progress > self._step
        if self._reported:
            self._step = progress
            self._trial.report(value, progress)

    def should_prune(self) -> bool:
        """The pruner's verdict, asked right after a report only."""
        return self._reported and self._trial.should_prune()


@dataclass
class SearchData:
    """What the objective trains on: a fixed validation set (timed data) or cross-validation folds."""

    x_train: pd.DataFrame
    y_train: np.ndarray
    categorical: list[str]
    x_valid: pd.DataFrame | None = None
    y_valid: np.ndarray | None = None
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None

    @classmethod
    def cross_validated(cls, x: pd.DataFrame, y: np.ndarray, categorical: list[str], n_folds: int, seed: int
                        ) -> SearchData:
        """Stratified folds of ``x`` (untimed data)."""
        folds = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x, y))
        return cls(x, y, categorical, folds=folds)


@dataclass
class SearchSettings:
    """How the study runs."""

    families: list[str]
    max_estimators: int
    early_stopping_rounds: int
    threads: int
    seed: int
    pruning: bool = True
    monotone: list[int] | None = None


def fit_trial_model(family: str, params: dict, data: SearchData, settings: SearchSettings, train_idx=None,
                    valid_idx=None, trial: optuna.Trial | None = None):
    """Fit one model with early stopping (and the pruning callback when ``trial`` is given).

    Returns:
        The fitted estimator, its validation AUC and its best iteration.
    """
    if train_idx is None:
        xt, yt, xv, yv = data.x_train, data.y_train, data.x_valid, data.y_valid
    else:
        xt, yt = data.x_train.iloc[train_idx], data.y_train[train_idx]
        xv, yv = data.x_train.iloc[valid_idx], data.y_train[valid_idx]
    callbacks = None
    if trial is not None and settings.pruning:
        progress = ProgressSteps(trial, params["learning_rate"])
        callbacks = [LightGBMPruningCallback(progress, "auc", valid_name="valid_0") if family == "lightgbm"
                     else XGBoostPruningCallback(progress, "validation_0-auc")]
    if settings.monotone:
        params = {**params, "monotone_constraints": settings.monotone if family == "lightgbm"
                  else tuple(settings.monotone)}
    estimator = make_estimator(family, params, threads=settings.threads, seed=settings.seed,
                               n_estimators=settings.max_estimators,
                               early_stopping_rounds=settings.early_stopping_rounds,
                               callbacks=callbacks if family == "xgboost" else None)
    estimator = fit_estimator(estimator, family, xt, yt, (xv, yv), data.categorical, settings.early_stopping_rounds,
                              callbacks=callbacks if family == "lightgbm" else None)
    auc = float(roc_auc_score(yv, estimator.predict_proba(xv)[:, 1]))
    return estimator, auc, best_iteration(estimator, family) or settings.max_estimators


def score_folds(family: str, params: dict, data: SearchData, settings: SearchSettings,
                trial: optuna.Trial | None = None) -> tuple[np.ndarray, list[float], list[int]]:
    """Fit one model per cross-validation fold (the first fold reports to ``trial`` for pruning).

    Returns:
        The out-of-fold scores of every training row, each fold's validation AUC and best iteration.
    """
    scores = np.zeros(len(data.y_train))
    aucs, iterations = [], []
    for k, (train_idx, valid_idx) in enumerate(data.folds):
        model, auc, best = fit_trial_model(family, params, data, settings, train_idx, valid_idx,
                                           trial=trial if k == 0 else None)
        scores[valid_idx] = model.predict_proba(data.x_train.iloc[valid_idx])[:, 1]
        aucs.append(auc)
        iterations.append(best)
    return scores, aucs, iterations


class Objective:
    """The Optuna objective: validation AUC, or mean cross-validated AUC (the first fold drives pruning).

    With folds it keeps the out-of-fold scores of the best complete trial so far, so that the trainer calibrates
    on them instead of fitting the same fold models a second time (``out_of_fold``). Only one trial's scores are
    held, whatever the study's length.
    """

    def __init__(self, data: SearchData, settings: SearchSettings) -> None:
        self.data, self.settings = data, settings
        self.positive_rate = float(np.mean(data.y_train))
        self._best: tuple[int, float, np.ndarray, list[int]] | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        family, params = suggest_params(trial, self.settings.families, self.positive_rate)
        data = self.data
        if data.folds is None:
            _, auc, best = fit_trial_model(family, params, data, self.settings, trial=trial)
            trial.set_user_attr("best_iteration", best)
            return auc
        scores, aucs, iterations = score_folds(family, params, data, self.settings, trial)
        trial.set_user_attr("best_iteration", int(np.mean(iterations)))
        trial.set_user_attr("fold_aucs", aucs)
        value = float(np.mean(aucs))
        if self._best is None or value > self._best[1]:
            self._best = (trial.number, value, scores, iterations)
        return value

    def out_of_fold(self, number: int) -> tuple[np.ndarray, list[int]] | None:
        """Trial ``number``'s out-of-fold scores and best iterations per fold, if this process ran it and it is
        the best complete trial it has run (a resumed study's earlier trials are not held)."""
        if self._best is None or self._best[0] != number:
            return None
        return self._best[2], self._best[3]


def make_objective(data: SearchData, settings: SearchSettings) -> Objective:
    """The Optuna objective of a study on ``data`` (see ``Objective``)."""
    return Objective(data, settings)


def progress_reporter(progress: Callable[[int, float], None] | None
                      ) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """A study callback that calls ``progress`` with (finished trials, best value so far; NaN before any)."""
    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if progress:
            done = sum(t.state.is_finished() for t in study.trials)
            try:
                best = study.best_value
            except ValueError:
                best = float("nan")
            progress(done, best)

    return report


def make_pruner(warmup_steps: int = PRUNING_WARMUP_STEPS) -> optuna.pruners.BasePruner:
    """The pruner of every study: median of the completed trials at the same step, after 5 trials and the warm-up."""
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup_steps)


def open_study(name: str, storage_url: str, seed: int, pruning: bool, heartbeat_seconds: int = 30,
               direction: str = "maximize") -> optuna.Study:
    """Create or load a study in RDB storage, failing trials whose worker stopped sending heartbeats.

    The sampler's seed is ``seed`` plus the trials the study already holds: a new study is reproducible, and a
    resumed one does not draw again the random start-up trials it drew before the interruption (with the same seed
    it would, and spend the resumed trials on parameter sets it has already scored).
    """
    storage = optuna.storages.RDBStorage(storage_url, heartbeat_interval=heartbeat_seconds,
                                         grace_period=2 * heartbeat_seconds)
    pruner = make_pruner() if pruning else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True,
                                sampler=_sampler(seed), pruner=pruner)
    optuna.storages.fail_stale_trials(study)
    held = len(study.get_trials(deepcopy=False))
    if held:
        study.sampler = _sampler(seed + held)
    return study


def _sampler(seed: int) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def run_study(study: optuna.Study, objective: Callable[[optuna.Trial], float], families: list[str], trials: int,
              timeout: float | None = None, callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
              | None = None, initial: list[dict] | None = None, defaults: dict[str, dict] | None = None,
              fixed: dict | None = None) -> int:
    """Run trials until the study holds ``trials`` finished (complete or pruned) ones, or ``timeout`` passes.

    New studies start with the ``initial`` parameter sets, and a default trial for each family they leave out
    (``defaults``: risk models' unless given); ``fixed`` parameters are added to every enqueued set.

    Returns:
        The number of trials run now.
    """
    def finished() -> int:
        return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))

    done = finished()
    remaining = trials - done
    if remaining <= 0:
        return 0
    if not study.trials:
        given = [p for p in initial or [] if p.get("family") in families]
        fixed = {"imbalance": "none"} if fixed is None else fixed
        defaults = DEFAULT_TRIALS if defaults is None else defaults
        for params in given:
            study.enqueue_trial({**fixed, **params})
        for family in families:
            if not any(p["family"] == family for p in given):
                study.enqueue_trial(defaults[family])
    study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=[callback] if callback else None,
                   catch=(ValueError,), gc_after_trial=True)
    return finished() - done

"""Benchmark: does the pruner stop the right trials?

For ``telco_churn`` and ``ibm_sales_win_loss`` (the fixed stratified 80/20 split, seed 42), two measurements:

- **Live.** A study with pruning, as ``salesml train TASK`` runs it; then every pruned trial is trained to the end,
  without pruning, on the same cross-validation folds. A fair pruner stops trials that would have finished below
  the completed ones; a biased one (against slow learners, say) stops trials that would have ranked high. Reported:
  the completed trials' best and median CV AUC, each pruned trial's final CV AUC, how many would have finished
  above that median and above that best, and the seconds each part took.
- **Replay.** A study that reports every step but never prunes; then Optuna's own pruner (``make_pruner``) is
  replayed over its learning curves for each warm-up in ``--warmups``. Reported per warm-up: the final-AUC ranks of
  the trials it would have stopped, the rank of the best trial it keeps, and the share of the unpruned time it
  would have spent (a trial stopped at step s of fold 1, whose curve ran to step S, costs s / S of one fold).

Prints one JSON object.

    python experiments/benchmarks/pruning.py [--trials 30] [--warmups 4 8 16 24] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where the features benchmark would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import optuna
from optuna.trial import TrialState

from experiments.benchmarks.tuning import DATASETS, load_benchmark_task, prepare_search
from training.search import (
    PRUNING_WARMUP_STEPS,
    SearchData,
    SearchSettings,
    make_objective,
    make_pruner,
    open_study,
    run_study,
)


def check_live(search: SearchData, settings: SearchSettings, trials: int) -> dict:
    """Run a study with pruning, then finish its pruned trials without pruning."""
    with tempfile.TemporaryDirectory() as tmp:
        study = open_study("pruning-live", f"sqlite:///{tmp}/optuna.db", settings.seed, pruning=True)
        start = time.perf_counter()
        run_study(study, make_objective(search, settings), settings.families, trials)
        study_seconds = time.perf_counter() - start
        finished = study.get_trials(deepcopy=False)
    completed = [t.value for t in finished if t.state == TrialState.COMPLETE]
    pruned = [t for t in finished if t.state == TrialState.PRUNED]
    best, median = max(completed), float(np.median(completed))
    unpruned = make_objective(search, dataclasses.replace(settings, pruning=False))
    rows = []
    start = time.perf_counter()
    for trial in pruned:
        step = max(trial.intermediate_values)
        rows.append({"trial": trial.number, "family": trial.params["family"],
                     "learning_rate": round(trial.params.get("lgb_learning_rate",
                                                             trial.params.get("xgb_learning_rate")), 4),
                     "pruned_at_step": step, "auc_when_pruned": round(trial.intermediate_values[step], 4),
                     "final_cv_roc_auc": round(unpruned(optuna.trial.FixedTrial(trial.params)), 4)})
    finals = [r["final_cv_roc_auc"] for r in rows]
    return {"warmup_steps": PRUNING_WARMUP_STEPS, "trials": len(finished), "completed": len(completed),
            "pruned": len(pruned), "best_completed_cv_roc_auc": round(best, 4),
            "median_completed_cv_roc_auc": round(median, 4),
            "pruned_above_median": sum(f > median for f in finals), "pruned_above_best": sum(f > best for f in finals),
            "best_pruned_final_cv_roc_auc": max(finals, default=None), "study_seconds": round(study_seconds, 1),
            "finishing_pruned_seconds": round(time.perf_counter() - start, 1), "pruned_trials": rows}


def record_curves(search: SearchData, settings: SearchSettings, trials: int) -> list[optuna.trial.FrozenTrial]:
    """Run a study whose trials report every step to a pruner that never prunes."""
    with tempfile.TemporaryDirectory() as tmp:
        study = open_study("pruning-curves", f"sqlite:///{tmp}/optuna.db", settings.seed, pruning=False)
        run_study(study, make_objective(search, settings), settings.families, trials)
        return [t for t in study.get_trials() if t.state == TrialState.COMPLETE]


def replay_pruner(curves: list[optuna.trial.FrozenTrial], warmup_steps: int, folds: int) -> dict:
    """Which of the recorded trials ``make_pruner(warmup_steps)`` would have stopped, and at what cost."""
    pruner = make_pruner(warmup_steps)
    study = optuna.create_study(direction="maximize")
    ranks = {t.number: i + 1 for i, t in enumerate(sorted(curves, key=lambda t: -t.value))}
    stopped, kept, seconds = [], [], 0.0
    for trial in sorted(curves, key=lambda t: t.number):
        duration = (trial.datetime_complete - trial.datetime_start).total_seconds()
        steps = sorted(trial.intermediate_values)
        at = None
        for i, step in enumerate(steps):
            seen = {s: trial.intermediate_values[s] for s in steps[:i + 1]}
            if pruner.prune(study, optuna.trial.create_trial(state=TrialState.RUNNING, intermediate_values=seen)):
                at = step
                break
        if at is None:
            study.add_trial(optuna.trial.create_trial(value=trial.value, intermediate_values=trial.intermediate_values))
            kept.append(trial.number)
            seconds += duration
        else:
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.PRUNED, intermediate_values={s: v for s, v in trial.intermediate_values.items()
                                                              if s <= at}))
            stopped.append(trial.number)
            seconds += duration / folds * at / steps[-1]
    total = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in curves)
    return {"warmup_steps": warmup_steps, "pruned": len(stopped),
            "pruned_final_ranks": sorted(ranks[n] for n in stopped),
            "best_kept_rank": min(ranks[n] for n in kept), "time_share": round(seconds / total, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="Trials per study (completed plus pruned).")
    parser.add_argument("--warmups", type=int, nargs="+", default=[4, 8, 16, 24],
                        help="Warm-up steps to replay over the unpruned study.")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = {}
    for name in args.datasets:
        data, config = load_benchmark_task(name, args.data, sensitive_as_features=name == "ibm_sales_win_loss")
        search, _, _, _ = prepare_search(data, config)
        settings = SearchSettings(["lightgbm", "xgboost"], config.max_estimators, config.early_stopping_rounds, 2,
                                  config.seed, pruning=True)
        live = check_live(search, settings, args.trials)
        start = time.perf_counter()
        curves = record_curves(search, settings, args.trials)
        results[name] = {"live": live, "unpruned_study_seconds": round(time.perf_counter() - start, 1),
                         "unpruned_best_cv_roc_auc": round(max(t.value for t in curves), 4),
                         "replay": [replay_pruner(curves, w, config.cv_folds) for w in args.warmups]}
    print(json.dumps({"benchmark": "pruning", "trials": args.trials, "datasets": results}))


if __name__ == "__main__":
    main()

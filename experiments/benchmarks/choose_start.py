"""Choose a task's starting trial by cross-validation alone, without the test rows ever being loaded into the search.

A config's ``initial_trials`` are the first trials a new study runs; the acceptance tests train from them. This
script makes that choice auditable: it splits a shared dataset as the trainer does (the fixed stratified 80/20,
seed 42), **drops the test rows before anything is fitted or scored**, runs an Optuna study with the trainer's
objective on the cross-validation folds of the 80%, and prints the best trial by CV with its parameters in the
config's form. No test figure is computed, so none can steer the choice.

    python experiments/benchmarks/choose_start.py [--dataset ibm_sales_win_loss] [--trials 26]
        [--exclude "Opportunity Number"] [--data ../shared/data] [--storage start.db]

Prints one JSON object: the dataset, the columns used, every trial's CV ROC AUC, and the best trial.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where the features benchmark would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from training.preprocess import TabularPreprocessor  # noqa: E402
from training.risk import split_rows  # noqa: E402
from training.search import SearchData, SearchSettings, make_objective, open_study, run_study  # noqa: E402
from training.tasks import load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ibm_sales_win_loss", choices=["ibm_sales_win_loss", "telco_churn"])
    parser.add_argument("--trials", type=int, default=26)
    parser.add_argument("--exclude", nargs="*", default=[], help="feature columns to leave out")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--storage", type=Path, default=None,
                        help="Optuna SQLite file to keep the study in; an interrupted run given the same file "
                             "resumes it (default: a temporary file)")
    args = parser.parse_args()
    from experiments.benchmarks.tuning import load_benchmark_task

    config = load_config(REPO / "experiments" / "configs" / f"{args.dataset}.yaml")
    data, _ = load_benchmark_task(args.dataset, args.data, config.sensitive_as_features)
    spec = data.spec
    spec.numeric = [c for c in spec.numeric if c not in args.exclude]
    spec.categorical = [c for c in spec.categorical if c not in args.exclude]
    split = split_rows(data, config)
    # From here on only the training 80% exists: the test rows are gone before any fit or score.
    train = data.frame.iloc[split.train].reset_index(drop=True)
    del data
    y = train["label"].astype(int).to_numpy()
    pre = TabularPreprocessor(spec.numeric, spec.categorical).fit(train)
    search = SearchData.cross_validated(pre.transform(train), y, spec.categorical, config.cv_folds, config.seed)
    settings = SearchSettings(list(config.families), config.max_estimators, config.early_stopping_rounds,
                              config.threads, config.seed, config.pruning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        storage = args.storage.resolve() if args.storage else Path(tmp) / "optuna.db"
        study = open_study("start", f"sqlite:///{storage}", config.seed, config.pruning)
        run_study(study, make_objective(search, settings), settings.families, args.trials, None, None, [])
        trials = [{"number": t.number, "state": t.state.name, "cv_roc_auc": t.value, "params": t.params}
                  for t in study.trials]
        best = study.best_trial
    print(json.dumps({"benchmark": "choose_start", "dataset": args.dataset, "training_rows": len(train),
                      "test_rows_loaded": 0, "excluded": args.exclude, "features": spec.features,
                      "cv_folds": config.cv_folds, "seconds": round(time.perf_counter() - start, 1),
                      "trials": trials, "best": {"number": best.number, "cv_roc_auc": best.value,
                                                 "initial_trial": best.params},
                      "positive_rate": float(np.mean(y))}, default=str))


if __name__ == "__main__":
    main()

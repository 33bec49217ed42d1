"""Benchmark: best test AUC against wall time at an equal tuning budget, and final-model training throughput.

For ``telco_churn`` and ``ibm_sales_win_loss`` (the fixed stratified 80/20 split, seed 42) it runs, each for the
same budget on 2 cores: our Optuna tuner with pruning, our tuner without pruning, and FLAML AutoML (metric
roc_auc, ``pip install '.[bench]'``). It records the test AUC of each tuner's best model as the budget is spent.
Then it times the final-model fit on a simulated table of 1M rows. Target: at equal budget, our test AUC >= FLAML's
on both datasets. Prints one JSON object.

    python experiments/benchmarks/tuning.py [--budget 300] [--data ../shared/data] [--rows 1000000]
        [--datasets ...] [--tuners ours_pruning ours_no_pruning flaml] [--exclude COLUMN ...]

``--exclude`` leaves feature columns out for every tuner (e.g. ``"Opportunity Number"``, a record id on Win/Loss);
``--rows 0`` skips the throughput part.
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

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import roc_auc_score

from features.sources.datasets import TELCO, WIN_LOSS, load_dataset
from features.standards import parse_frame
from training.models import fit_estimator, make_estimator
from training.preprocess import TabularPreprocessor
from training.risk import Split, split_rows
from training.search import (
    SearchData,
    SearchSettings,
    make_objective,
    open_study,
    params_from_trial,
    run_study,
)
from training.tasks import RiskConfig, TaskData, TaskSpec

DATASETS = {"telco_churn": (TELCO, "telco_churn"), "ibm_sales_win_loss": (WIN_LOSS, "ibm_sales_win_loss")}
TUNERS = ("ours_pruning", "ours_no_pruning", "flaml")


def load_benchmark_task(name: str, root: Path, sensitive_as_features: bool) -> tuple[TaskData, RiskConfig]:
    """A shared dataset's task rows, read in place from ``root``, and the benchmark's training config."""
    mapping, folder = DATASETS[name]
    imported = load_dataset(name, root / folder)
    source = imported.sources[0]
    frame, _ = parse_frame(source.frame, source.table)
    frame = frame[frame["label"].notna()]
    features = dict(mapping.features)
    if sensitive_as_features:
        features.update(mapping.sensitive_types)
    numeric = [c for c, t in features.items() if t not in ("category", "string")]
    categorical = [c for c, t in features.items() if t in ("category", "string")]
    spec = TaskSpec(name, "table", source.table.name, "label", "row_id", None, numeric, categorical, [], ["row_id"])
    config = RiskConfig(cv_folds=3 if len(frame) > 20000 else 5, max_estimators=2000, early_stopping_rounds=50,
                         sensitive_as_features=sensitive_as_features)
    return TaskData(spec, frame, name, name, ""), config


def prepare_search(data: TaskData, config: RiskConfig) -> tuple[SearchData, pd.DataFrame, np.ndarray, Split]:
    """The cross-validation folds inside the fixed 80%, with the model matrix, labels and split they come from."""
    split = split_rows(data, config)
    y = data.frame["label"].astype(int).to_numpy()
    pre = TabularPreprocessor(data.spec.numeric, data.spec.categorical).fit(data.frame.iloc[split.train])
    x = pre.transform(data.frame)
    search = SearchData.cross_validated(x.iloc[split.train], y[split.train], data.spec.categorical, config.cv_folds,
                                        config.seed)
    return search, x, y, split


def _ours(data: TaskData, config: RiskConfig, budget: float, pruning: bool) -> list[dict]:
    search, x, y, split = prepare_search(data, config)
    settings = SearchSettings(["lightgbm", "xgboost"], config.max_estimators, config.early_stopping_rounds, 2,
                              config.seed, pruning)
    improvements: list[tuple[float, optuna.trial.FrozenTrial]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        study = open_study("bench", f"sqlite:///{tmp}/optuna.db", config.seed, pruning)

        def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            try:
                best = study.best_trial
            except ValueError:
                return
            if not improvements or improvements[-1][1].number != best.number:
                improvements.append((time.perf_counter() - start, best))

        run_study(study, make_objective(search, settings), settings.families, trials=10_000, timeout=budget,
                  callback=record)
    # Test AUC of each new best model, computed after the budget so that it costs the tuner nothing.
    curve = []
    for seconds, best in improvements:
        family, params = params_from_trial(best.params, float(np.mean(search.y_train)))
        rounds = max(10, int(best.user_attrs.get("best_iteration", 100) * 1.1))
        est = make_estimator(family, params, threads=2, seed=config.seed, n_estimators=rounds)
        est = fit_estimator(est, family, search.x_train, search.y_train, None, data.spec.categorical, 50)
        auc = roc_auc_score(y[split.test], est.predict_proba(x.iloc[split.test])[:, 1])
        curve.append({"seconds": round(seconds, 1), "trial": best.number, "cv_roc_auc": round(best.value, 4),
                      "test_roc_auc": round(float(auc), 4)})
    return curve


def _flaml(data: TaskData, config: RiskConfig, budget: float) -> list[dict]:
    from flaml import AutoML

    split = split_rows(data, config)
    y = data.frame["label"].astype(int).to_numpy()
    cols = data.spec.features
    x = data.frame[cols].copy()
    for c in data.spec.categorical:
        x[c] = x[c].astype("category")
    for c in data.spec.numeric:
        x[c] = pd.to_numeric(x[c], errors="coerce").astype(float)
    automl = AutoML()
    start = time.perf_counter()
    automl.fit(x.iloc[split.train], y[split.train], task="classification", metric="roc_auc", time_budget=budget,
               n_jobs=2, seed=config.seed, verbose=0, eval_method="cv", n_splits=config.cv_folds)
    auc = roc_auc_score(y[split.test], automl.predict_proba(x.iloc[split.test])[:, 1])
    return [{"seconds": round(time.perf_counter() - start, 1), "best_estimator": automl.best_estimator,
             "test_roc_auc": round(float(auc), 4)}]


def _throughput(rows: int) -> dict:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(rows, 30)), columns=[f"f{i}" for i in range(30)])
    y = (x["f0"] + 0.5 * x["f1"] * x["f2"] + rng.normal(size=rows) > 0.5).astype(int).to_numpy()
    out = {}
    for family in ("lightgbm", "xgboost"):
        est = make_estimator(family, {"learning_rate": 0.1}, threads=2, seed=0, n_estimators=200)
        start = time.perf_counter()
        fit_estimator(est, family, x, y, None, [], 50)
        seconds = time.perf_counter() - start
        out[family] = {"rows": rows, "rounds": 200, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="Seconds per tuner and dataset.")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--tuners", nargs="+", default=list(TUNERS), choices=list(TUNERS))
    parser.add_argument("--exclude", nargs="*", default=[], help="feature columns left out for every tuner")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = {}
    for name in args.datasets:
        data, config = load_benchmark_task(name, args.data, sensitive_as_features=name == "ibm_sales_win_loss")
        data.spec.numeric = [c for c in data.spec.numeric if c not in args.exclude]
        data.spec.categorical = [c for c in data.spec.categorical if c not in args.exclude]
        entry = {"rows": len(data.frame), "excluded": args.exclude, "ours_pruning": [], "ours_no_pruning": []}
        for tuner in args.tuners:
            if tuner == "flaml":
                try:
                    entry["flaml"] = _flaml(data, config, args.budget)
                except ImportError:
                    entry["flaml"] = "not installed: pip install '.[bench]'"
            else:
                entry[tuner] = _ours(data, config, args.budget, tuner == "ours_pruning")
        entry.setdefault("flaml", "not run")
        best = lambda curve: max((p["test_roc_auc"] for p in curve), default=None) if isinstance(curve, list) else None  # noqa: E731
        entry["final"] = {"ours_pruning": entry["ours_pruning"][-1]["test_roc_auc"] if entry["ours_pruning"] else None,
                          "ours_no_pruning": (entry["ours_no_pruning"][-1]["test_roc_auc"]
                                              if entry["ours_no_pruning"] else None),
                          "flaml": best(entry["flaml"])}
        f = entry["final"]
        entry["ours_at_least_flaml"] = (f["flaml"] is not None and f["ours_pruning"] is not None
                                        and f["ours_pruning"] >= f["flaml"])
        results[name] = entry
    print(json.dumps({"benchmark": "tuning", "budget_seconds": args.budget, "datasets": results,
                      "throughput": _throughput(args.rows) if args.rows > 0 else "skipped"}))


if __name__ == "__main__":
    main()

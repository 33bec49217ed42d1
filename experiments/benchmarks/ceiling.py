"""Benchmark: how high well-known methods reach on the literature's fixed split of Telco and Sales Win/Loss.

Issue 4 sets test ROC AUC targets on these splits (Telco 0.850, Sales Win/Loss 0.947). This measures what other
sound methods reach there, so that a missed target can be told apart from a weak tuner. All methods see every
column the literature's models saw, the sensitive ones included. Each is chosen by cross-validation inside the
80% training part, exactly as our trainer is; the test AUC is only reported, never used to choose. Per dataset:

- logistic regression on one-hot categories (the literature's 0.842 on Telco, a check that the split matches);
- a small grid of LightGBM and XGBoost settings through our estimator factory, the best by CV refitted on the
  80% (our trainer's final model), its test AUC over several model seeds, and the average of its fold models;
- that booster blended with the logistic regression, the weight chosen out of fold;
- on Telco, the booster with derived charge features (average monthly charge, its change, number of services);
- CatBoost with its own categorical encoding, when installed (``pip install '.[bench]'``).

Prints one JSON object.

    python experiments/benchmarks/ceiling.py [--data ../shared/data] [--datasets telco_churn ibm_sales_win_loss]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where the features benchmark would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import pandas as pd
from scipy.special import logit
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from experiments.benchmarks.tuning import DATASETS, load_benchmark_task, prepare_search
from training.models import fit_estimator, make_estimator
from training.search import DEFAULT_TRIALS, SearchData, SearchSettings, fit_trial_model, params_from_trial

THREADS = 2
SEEDS = 5
#: Booster settings tried per dataset, in the trainer's parameter names: its defaults, shapes that suit each data
#: set (shallow additive trees on Telco's 5,600 rows, larger trees on Win/Loss's 62,000), and the Win/Loss config's
#: starting points, the one it had before (learning rate 0.08) included.
GRID = {
    "telco_churn": [
        DEFAULT_TRIALS["lightgbm"], DEFAULT_TRIALS["xgboost"],
        {**DEFAULT_TRIALS["lightgbm"], "lgb_num_leaves": 4, "lgb_learning_rate": 0.03},
        {**DEFAULT_TRIALS["lightgbm"], "lgb_num_leaves": 6, "lgb_learning_rate": 0.013, "lgb_reg_lambda": 5.4,
         "lgb_reg_alpha": 2.3},
        {**DEFAULT_TRIALS["xgboost"], "xgb_max_depth": 2, "xgb_learning_rate": 0.03},
    ],
    "ibm_sales_win_loss": [
        {**DEFAULT_TRIALS["lightgbm"], "lgb_learning_rate": 0.023, "lgb_num_leaves": 91, "lgb_min_child_samples": 11,
         "lgb_colsample_bytree": 0.6, "lgb_subsample": 0.84, "lgb_reg_lambda": 0.011, "lgb_reg_alpha": 0.002},
        {**DEFAULT_TRIALS["lightgbm"], "lgb_learning_rate": 0.08, "lgb_num_leaves": 63, "lgb_min_child_samples": 20,
         "lgb_colsample_bytree": 0.6, "lgb_reg_lambda": 0.1},
        {**DEFAULT_TRIALS["lightgbm"], "lgb_learning_rate": 0.05, "lgb_num_leaves": 63, "lgb_min_child_samples": 20,
         "lgb_colsample_bytree": 0.6, "lgb_reg_lambda": 0.1},
        {**DEFAULT_TRIALS["lightgbm"], "lgb_learning_rate": 0.02, "lgb_num_leaves": 127,
         "lgb_colsample_bytree": 0.4, "lgb_reg_lambda": 0.1},
        {**DEFAULT_TRIALS["xgboost"], "xgb_learning_rate": 0.1, "xgb_max_depth": 8, "xgb_colsample_bytree": 0.6},
    ],
}
TELCO_SERVICES = ["OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport", "StreamingTV",
                  "StreamingMovies"]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return round(float(roc_auc_score(y, p)), 4)


def _cv_auc(search: SearchData, oof: np.ndarray) -> float:
    """The mean of the folds' AUCs, as the trainer's objective scores a trial."""
    return round(float(np.mean([roc_auc_score(search.y_train[v], oof[v]) for _, v in search.folds])), 5)


def _booster(search: SearchData, x_test: pd.DataFrame, y_test: np.ndarray, params: dict,
             settings: SearchSettings) -> dict:
    """Cross-validate one setting, refit it on the whole 80% as the trainer does, and score the test part."""
    positive_rate = float(np.mean(search.y_train))
    family, kwargs = params_from_trial(params, positive_rate)
    oof = np.zeros(len(search.y_train))
    fold_test = np.zeros(len(y_test))
    rounds = []
    for train_idx, valid_idx in search.folds:
        model, _, best = fit_trial_model(family, kwargs, search, settings, train_idx, valid_idx)
        oof[valid_idx] = model.predict_proba(search.x_train.iloc[valid_idx])[:, 1]
        fold_test += model.predict_proba(x_test)[:, 1] / len(search.folds)
        rounds.append(best)
    n_rounds = max(10, int(np.mean(rounds) * 1.1))
    tests = []
    # The first seed is the trainer's; the others show how much the test AUC owes to the seed.
    for seed in range(settings.seed, settings.seed + SEEDS):
        est = make_estimator(family, kwargs, threads=THREADS, seed=seed, n_estimators=n_rounds)
        est = fit_estimator(est, family, search.x_train, search.y_train, None, search.categorical, 50)
        p = est.predict_proba(x_test)[:, 1]
        tests.append(roc_auc_score(y_test, p))
        if seed == settings.seed:
            refit = p
    return {"family": family, "params": {k: v for k, v in params.items() if k != "family"}, "rounds": n_rounds,
            "cv_roc_auc": _cv_auc(search, oof), "test_roc_auc": round(float(tests[0]), 4),
            "test_roc_auc_over_seeds": [round(float(min(tests)), 4), round(float(max(tests)), 4)],
            "test_roc_auc_fold_average": _auc(y_test, fold_test), "_oof": oof, "_test": refit}


def _raw_columns(data) -> pd.DataFrame:
    """The task's features as read, numbers as floats and categories as text, for methods with their own encoding."""
    numeric, categorical = data.spec.numeric, data.spec.categorical
    frame = data.frame[numeric + categorical].copy()
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    frame[categorical] = frame[categorical].astype(str)
    return frame


def _logistic(data, search: SearchData, train: np.ndarray, test: np.ndarray, y: np.ndarray) -> dict:
    numeric, categorical = data.spec.numeric, data.spec.categorical
    frame = _raw_columns(data)
    frame[numeric] = frame[numeric].fillna(0.0)

    def model():
        columns = ColumnTransformer([("numeric", StandardScaler(), numeric),
                                     ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical)])
        return make_pipeline(columns, LogisticRegression(max_iter=3000))

    x_train = frame.iloc[train]
    oof = np.zeros(len(train))
    for train_idx, valid_idx in search.folds:
        oof[valid_idx] = model().fit(x_train.iloc[train_idx], search.y_train[train_idx]).predict_proba(
            x_train.iloc[valid_idx])[:, 1]
    p = model().fit(x_train, search.y_train).predict_proba(frame.iloc[test])[:, 1]
    return {"cv_roc_auc": _cv_auc(search, oof), "test_roc_auc": _auc(y[test], p),
            "_oof": oof, "_test": p}


def _blend(booster: dict, linear: dict, search: SearchData, y_test: np.ndarray) -> dict:
    """Booster and logistic regression averaged in log-odds, the weight chosen out of fold."""
    def mix(a, b, w):
        return (1 - w) * logit(np.clip(a, 1e-6, 1 - 1e-6)) + w * logit(np.clip(b, 1e-6, 1 - 1e-6))

    weights = np.round(np.arange(0.0, 0.61, 0.1), 1)
    cv = [_cv_auc(search, mix(booster["_oof"], linear["_oof"], w)) for w in weights]
    w = float(weights[int(np.argmax(cv))])
    return {"weight_of_logistic": w, "cv_roc_auc": max(cv),
            "test_roc_auc": _auc(y_test, mix(booster["_test"], linear["_test"], w))}


def _telco_charge_features(frame: pd.DataFrame, x: pd.DataFrame) -> pd.DataFrame:
    tenure = pd.to_numeric(frame["tenure"], errors="coerce").astype(float)
    average = pd.to_numeric(frame["TotalCharges"], errors="coerce").astype(float) / tenure.replace(0, np.nan)
    monthly = pd.to_numeric(frame["MonthlyCharges"], errors="coerce").astype(float)
    return x.assign(average_monthly_charge=average.to_numpy(), charge_change=(monthly - average).to_numpy(),
                    services=sum((frame[s] == "Yes").astype(int) for s in TELCO_SERVICES).to_numpy())


def _catboost(data, search: SearchData, train: np.ndarray, test: np.ndarray, y: np.ndarray) -> dict | str:
    try:
        from catboost import CatBoostClassifier
    except ImportError:
        return "not installed: pip install '.[bench]'"
    categorical = data.spec.categorical
    frame = _raw_columns(data)
    x_train = frame.iloc[train]
    aucs, rounds = [], []
    for train_idx, valid_idx in search.folds:
        model = CatBoostClassifier(iterations=5000, learning_rate=0.05, eval_metric="AUC", thread_count=THREADS,
                                   random_seed=0, verbose=0, allow_writing_files=False, od_type="Iter", od_wait=100,
                                   cat_features=categorical)
        model.fit(x_train.iloc[train_idx], search.y_train[train_idx],
                  eval_set=(x_train.iloc[valid_idx], search.y_train[valid_idx]), use_best_model=True)
        aucs.append(roc_auc_score(search.y_train[valid_idx], model.predict_proba(x_train.iloc[valid_idx])[:, 1]))
        rounds.append(model.get_best_iteration() + 1)
    model = CatBoostClassifier(iterations=max(10, int(np.mean(rounds) * 1.1)), learning_rate=0.05,
                               thread_count=THREADS, random_seed=0, verbose=0, allow_writing_files=False,
                               cat_features=categorical)
    model.fit(x_train, search.y_train)
    return {"cv_roc_auc": round(float(np.mean(aucs)), 5),
            "test_roc_auc": _auc(y[test], model.predict_proba(frame.iloc[test])[:, 1])}


def _test_figures(entry) -> list[float]:
    if isinstance(entry, dict):
        return [f for key, value in entry.items() for f in (
            [value] if key.startswith("test_roc_auc") and isinstance(value, float) else
            value if key == "test_roc_auc_over_seeds" else _test_figures(value))]
    if isinstance(entry, list):
        return [f for item in entry for f in _test_figures(item)]
    return []


def measure_ceiling(name: str, root: Path) -> dict:
    """Every method on one dataset's fixed split; see the module docstring."""
    start = time.perf_counter()
    data, config = load_benchmark_task(name, root, sensitive_as_features=True)
    search, x, y, split = prepare_search(data, config)
    settings = SearchSettings(["lightgbm", "xgboost"], 6000, 50, THREADS, config.seed, pruning=False)
    x_test, y_test = x.iloc[split.test], y[split.test]
    grid = []
    for params in GRID[name]:
        _say(f"{name}: {params['family']} {', '.join(f'{k}={v}' for k, v in params.items() if k != 'family')}")
        grid.append(_booster(search, x_test, y_test, params, settings))
    chosen = int(np.argmax([g["cv_roc_auc"] for g in grid]))
    best = grid[chosen]
    _say(f"{name}: logistic regression")
    linear = _logistic(data, search, split.train, split.test, y)
    out = {"rows": len(data.frame), "test_rows": len(split.test),
           "logistic_regression": {k: v for k, v in linear.items() if not k.startswith("_")},
           "boosters": [{k: v for k, v in g.items() if not k.startswith("_")} for g in grid],
           "best_booster_by_cv": chosen,
           "blend_best_booster_and_logistic": _blend(best, linear, search, y_test)}
    if name == "telco_churn":
        _say(f"{name}: the best booster with derived charge features")
        extended = _telco_charge_features(data.frame, x)
        derived = SearchData(extended.iloc[split.train], search.y_train, search.categorical, folds=search.folds)
        result = _booster(derived, extended.iloc[split.test], y_test, {"family": best["family"], **best["params"]},
                          settings)
        out["best_booster_with_charge_features"] = {k: v for k, v in result.items() if not k.startswith("_")}
    _say(f"{name}: catboost")
    out["catboost"] = _catboost(data, search, split.train, split.test, y)
    # Read off every figure above, the seed ranges and fold averages included: the most any of them reached.
    out["highest_test_roc_auc_of_any_method"] = max(_test_figures(out))
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = parser.parse_args()
    results = {}
    for name in args.datasets:
        results[name] = measure_ceiling(name, args.data)
    print(json.dumps({"benchmark": "ceiling", "datasets": results}))


if __name__ == "__main__":
    main()

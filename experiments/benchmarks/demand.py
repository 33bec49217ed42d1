"""Benchmark: demand forecasting quality and time, and its scale.

Sections (``--only`` picks some):

- ``walmart``: the issue's backtest (last 4 windows of 12 weeks) for our trainer (the config's start, or a fresh
  study with ``--trials``), mlforecast with default settings (LightGBM defaults, lags 1 and 52, week of year),
  statsforecast SeasonalNaive, AutoETS and AutoARIMA: mean WAPE, per window, seconds.
- ``simulator``: the same on the simulator's product-week view (``--accounts``, 24 months, seed 7), with the
  implied elasticities against the ground truth.
- ``identifiability``: how well any estimator could recover each product's elasticity from the simulator's data:
  the correctly specified per-product log-log regression on the units sold, on the demand before stock-outs, and
  on the noise-free expected units, at each of ``--identify-accounts``.
- ``scale``: synthetic series x 104 weeks (``--series``, default 1,000 and 10,000), one fixed config, no tuning:
  training (with the interval calibration), forecasting 12 weeks for every series, peak RSS (each size in a
  process of its own).

``--choose-start`` runs a 30-trial study on the Walmart tuning windows only and prints its best parameters (the
start in experiments/configs/walmart_weekly_sales.yaml). Prints one JSON object.

    python experiments/benchmarks/demand.py [--only walmart,simulator,identifiability,scale] [--trials 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _mlforecast_default(series, windows: int, horizon: int, threads: int) -> tuple[list[float], float]:
    import lightgbm as lgb
    from mlforecast import MLForecast

    from training.demand import ID, TARGET, TIME, wape

    started = time.perf_counter()
    mlf = MLForecast(models={"lgb": lgb.LGBMRegressor(verbose=-1, n_jobs=threads, random_state=0)},
                     freq=series.freq, lags=[1, series.season_length], date_features=["week"])
    cv = mlf.cross_validation(series.frame[[ID, TIME, TARGET]], n_windows=windows, h=horizon, step_size=horizon,
                              static_features=[])
    per = [wape(g[TARGET], g["lgb"].clip(lower=0)) for _, g in cv.groupby("cutoff")]
    return per, time.perf_counter() - started


def _quality(series, config, oracle=None, threads: int = 2) -> dict:
    from training.demand import TARGET, forecast_baselines, train_demand_model, wape

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_demand_model(series, config.model_copy(update={"baselines": []}),
                                    f"sqlite:///{tmp}/optuna.db", "bench", oracle=oracle)
    ours = time.perf_counter() - started
    out = {"series": len(series.ids), "periods": int(series.frame.groupby("unique_id").size().max()),
           "test_windows": config.test_windows, "horizon": config.horizon,
           "salesml": {"mean_wape": result.metrics["test_wape_mean_window"], "windows": result.windows["model"],
                       "coverage_80": result.metrics["test_coverage_80"], "seconds": round(ours, 1),
                       "trials": config.trials, "params": result.params.to_dict()}}
    for key in ("elasticity_within_25pct", "elasticity_judged_series", "elasticity_median"):
        if key in result.metrics:
            out["salesml"][key] = result.metrics[key]
    per, seconds = _mlforecast_default(series, config.test_windows, config.horizon, threads)
    out["mlforecast_default"] = {"mean_wape": float(np.mean(per)), "windows": per, "seconds": round(seconds, 1)}
    actual = result.test[["unique_id", "ds", TARGET]]
    for name in ("seasonal_naive", "auto_ets", "auto_arima"):
        started = time.perf_counter()
        base = forecast_baselines(series, windows=config.test_windows, horizon=config.horizon, names=[name],
                                  threads=threads).merge(actual, on=["unique_id", "ds"])
        per = [wape(g[TARGET], g[name]) for _, g in base.groupby("window")]
        out[name] = {"mean_wape": float(np.mean(per)), "windows": per,
                     "seconds": round(time.perf_counter() - started, 1)}
    best = min(("seasonal_naive", "auto_ets", "auto_arima"), key=lambda n: out[n]["mean_wape"])
    out["best_baseline"] = best
    out["ratio_to_best_baseline"] = out["salesml"]["mean_wape"] / out[best]["mean_wape"]
    out["ratio_to_auto_ets"] = out["salesml"]["mean_wape"] / out["auto_ets"]["mean_wape"]
    return out


def walmart(args) -> dict:
    from features.sources.datasets import load_dataset
    from training.demand import DemandConfig, make_series_frame
    from training.tasks import load_config

    data = Path(args.shared_data) / "walmart_weekly_sales"
    imported = load_dataset("walmart_weekly_sales", data)
    periods = next(s.frame for s in imported.sources if s.table.name == "sales_periods")
    config = load_config(REPO / "experiments/configs/walmart_weekly_sales.yaml", DemandConfig, trials=args.trials)
    series = make_series_frame(periods, id_column="series_id", time_column="period_start", target="revenue",
                               config=config)
    return _quality(series, config)


def _simulated_home(accounts: int, work: Path) -> Path:
    from features.ingest import discover_sources, ingest
    from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation
    from features.store import FeatureStore

    home = work / f"sim-{accounts}"
    if not (home / "features.duckdb").exists():
        write_organisation(simulate_organisation(SimulationConfig(accounts=accounts, months=24, seed=7)),
                           home / "demo_data")
        with FeatureStore(home / "features.duckdb") as store:
            ingest(discover_sources(home / "demo_data"), store)
    return home


def simulator(args, work: Path) -> dict:
    from features.store import FeatureStore
    from training.configs import with_home
    from training.demand import DemandConfig, load_demand_data
    from training.tasks import load_config

    home = _simulated_home(args.accounts, work)
    config = load_config(REPO / "experiments/configs/product_demand.yaml", DemandConfig, trials=args.sim_trials)
    config = with_home(config, home)
    with FeatureStore(home / "features.duckdb") as store:
        data = load_demand_data(store, "product_demand", config)
    out = _quality(data.series, config, data.oracle)
    out["accounts"] = args.accounts
    return out


def identifiability(args, work: Path) -> dict:
    from features.pipeline import build_view, latest_event
    from features.store import FeatureStore

    out = {}
    for accounts in args.identify_accounts:
        home = _simulated_home(accounts, work)
        with FeatureStore(home / "features.duckdb") as store:
            view = build_view(store, "product_week", latest_event(store, (("orders", "order_date"),))).frame
        truth = pd.read_parquet(home / "demo_data/ground_truth/product_elasticities.parquet").set_index("product_id")
        demand = pd.read_parquet(home / "demo_data/ground_truth/product_week_demand.parquet")
        view["week_start"] = pd.to_datetime(view["week_start"])
        demand["week_start"] = pd.to_datetime(demand["week_start"])
        rows = view.merge(demand, on=["product_id", "week_start"])
        figures = {}
        for column in ("units", "demand_units", "expected_units"):
            errors = []
            for pid, g in rows.groupby("product_id"):
                g = g[g[column] > 0]
                week = g["week_start"].dt.isocalendar().week.to_numpy(dtype=float)
                x = np.column_stack([np.ones(len(g)), np.log(g["price"] / g["price"].median()),
                                     np.log(g["competitor_price"] / g["price"]), g["promotion"],
                                     np.sin(2 * np.pi * week / 52), np.cos(2 * np.pi * week / 52),
                                     np.arange(len(g)) / 52])
                beta = np.linalg.lstsq(x, np.log(g[column].astype(float)), rcond=None)[0]
                true = truth.loc[pid, "elasticity"] - truth.loc[pid, "competitor_elasticity"]
                errors.append(abs(beta[1] - beta[2] - true) / abs(true))
            errors = np.asarray(errors)
            figures[column] = {"within_25pct": float((errors <= 0.25).mean()),
                               "median_relative_error": float(np.median(errors))}
        noise = np.log(demand["demand_units"].clip(lower=1) / demand["expected_units"])
        figures["sd_log_demand_over_expected"] = float(noise.std())
        figures["stockout_share"] = float(demand["stockout"].mean())
        out[str(accounts)] = figures
    return out


def scale_one(series_count: int, threads: int) -> dict:
    """One size of the scale section (run in its own process for a clean peak RSS)."""
    from tests.training.demand_series import synthetic_demand
    from training.demand import (
        DEFAULT_PARAMS,
        DemandConfig,
        DemandForecaster,
        make_series_frame,
        params_from_values,
    )

    rows, _ = synthetic_demand(series=series_count, weeks=104, seed=1)
    config = DemandConfig(holiday_column=None, static_columns=["category"])
    started = time.perf_counter()
    series = make_series_frame(rows, id_column="product_id", time_column="week_start", target="units",
                               config=config)
    prepared = time.perf_counter() - started
    params = params_from_values(DEFAULT_PARAMS["lightgbm"], 600)
    started = time.perf_counter()
    model = DemandForecaster(params, horizon=12, max_horizon=24, threads=threads).fit(series, calibration_windows=4)
    trained = time.perf_counter() - started
    started = time.perf_counter()
    forecast = model.forecast(12)
    forecasting = time.perf_counter() - started
    return {"series": series_count, "rows": int(len(series.frame)), "prepare_seconds": round(prepared, 1),
            "train_seconds": round(trained, 1), "forecast_seconds": round(forecasting, 2),
            "forecast_rows": int(len(forecast)),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2)}


def scale(args) -> dict:
    out = {}
    for n in args.series:
        answer = subprocess.run([sys.executable, __file__, "--scale-one", str(n), "--threads", str(args.threads)],
                                capture_output=True, text=True, check=True)
        out[str(n)] = json.loads(answer.stdout.strip().splitlines()[-1])
    sizes = sorted(args.series)
    if len(sizes) > 1:
        small, large = out[str(sizes[0])], out[str(sizes[-1])]
        out["train_time_growth"] = large["train_seconds"] / small["train_seconds"]
        out["size_growth"] = sizes[-1] / sizes[0]
    return out


def choose_start(args) -> dict:
    """A study on the Walmart tuning windows only (the trainer's own), and its best point."""
    from features.sources.datasets import load_dataset
    from training.demand import DemandConfig, make_series_frame, train_demand_model
    from training.tasks import load_config

    imported = load_dataset("walmart_weekly_sales", Path(args.shared_data) / "walmart_weekly_sales")
    periods = next(s.frame for s in imported.sources if s.table.name == "sales_periods")
    config = load_config(REPO / "experiments/configs/walmart_weekly_sales.yaml", DemandConfig, trials=30)
    config = config.model_copy(update={"initial_trials": [], "baselines": []})
    series = make_series_frame(periods, id_column="series_id", time_column="period_start", target="revenue",
                               config=config)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_demand_model(series, config, f"sqlite:///{tmp}/optuna.db", "choose-start")
    best = result.trials.sort_values("value").iloc[0]
    return {"best_cv_wape": float(best["value"]), "params": {k[len("params_"):]: v for k, v in best.items()
                                                             if k.startswith("params_") and pd.notna(v)}}


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="walmart,simulator,identifiability,scale")
    parser.add_argument("--trials", type=int, default=1, help="Walmart: trials (1: the config's start).")
    parser.add_argument("--sim-trials", type=int, default=10, help="Simulator: trials of the study.")
    parser.add_argument("--accounts", type=int, default=1500)
    parser.add_argument("--identify-accounts", type=int, nargs="+", default=[1500, 6000])
    parser.add_argument("--series", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shared-data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--scale-one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--choose-start", action="store_true")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.scale_one:
        print(json.dumps(scale_one(args.scale_one, args.threads)))
        return
    if args.choose_start:
        print(json.dumps(choose_start(args), default=float))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="salesml-demand-"))
    out = {}
    wanted = args.only.split(",")
    if "walmart" in wanted:
        out["walmart"] = walmart(args)
    if "simulator" in wanted:
        out["simulator"] = simulator(args, work)
    if "identifiability" in wanted:
        out["identifiability"] = identifiability(args, work)
    if "scale" in wanted:
        out["scale"] = scale(args)
    print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()

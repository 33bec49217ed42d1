"""Benchmark: customer segments and lifetime value, quality on the simulator and scale.

Sections (``--only`` picks some):

- ``simulator``: the segmentation trainer on the simulator (``--accounts``, 24 months, seed 7): HDBSCAN's ARI
  against the true segments, its noise share, bootstrap ARI and DBCV beside KMeans on RFM, and the ceiling any
  method reaches on the same features: a gradient-boosted classifier trained on the true segments themselves
  (5-fold cross-validated predictions), with and without the account's size band (the simulator scales order
  rate and units by company size).
- ``online_retail``: UCI Online Retail imported as ``salesml import`` does (``../shared/data``): the profile table,
  DBCV (hdbscan's relative validity and the exact index on a sample) and silhouette of HDBSCAN beside KMeans on
  RFM, the features left out and why.
- ``scale``: fit time and peak RSS of HDBSCAN (10,000 to 300,000 accounts of simulated customer profiles) and of
  the BG/NBD fit (10,000, 100,000 and 1,000,000 simulated summaries), each size in a process of its own. HDBSCAN
  as trained (fitted on at most `max_fit_accounts`, the rest placed by approximate_predict) and fitted on all;
  BG/NBD on a continuous clock (every customer distinct) and on the daily grid of real order histories.
- ``assign``: throughput of ``POST /segments/assign`` by id on ``salesml serve`` (the demo organisation's
  champion, built with ``salesml demo --no-serve`` unless ``--home`` has one): one id per request (wrk, 16
  connections) and ``--batch-ids`` ids per request (ids/s). Needs wrk (``apt-get install wrk``).

Prints one JSON object.

    python experiments/benchmarks/segments.py [--only simulator,online_retail,scale,assign] [--accounts 2000]
        [--trials 20] [--home DIR]
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

# Run as a script, this folder comes first on sys.path, where serving.py would shadow the serving package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))


def _peak_gb() -> float:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child started by a big parent
    # reported the parent's peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024 ** 2, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 3)


def simulator(args) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import adjusted_rand_score
    from sklearn.model_selection import cross_val_predict

    from features.sources.simulator import SimulationConfig, simulate_organisation
    from tests.features.test_views import load_store
    from training.registry import TASKS, Data, Oracle, Task
    from training.segments import (
        SegmentScaler,
        SegmentsConfig,
        expand_features,
        load_segments_data,
        train_segments_model,
    )

    org = simulate_organisation(SimulationConfig(accounts=args.accounts, months=24, seed=7))
    with tempfile.TemporaryDirectory() as tmp:
        truth_dir = Path(tmp) / "truth"
        truth_dir.mkdir()
        org.ground_truth["account_segments"].to_parquet(truth_dir / "account_segments.parquet")
        store = load_store(org.tables)
        task = TASKS.get("customer_segments") or Task(
            "customer_segments", "segments", Data("view", "customer", "account_id", "", "cutoff", "account",
                                                  events=(("orders", "order_date"),), owners="accounts"),
            "benchmark", oracle=Oracle("account_segments.parquet", "account_id", "segment"))
        TASKS.setdefault("customer_segments", task)
        config = SegmentsConfig(trials=args.trials, ground_truth=str(truth_dir), threads=args.threads)
        started = time.perf_counter()
        data = load_segments_data(store, "customer_segments", config)
        loaded = time.perf_counter() - started
        result = train_segments_model(data, config, f"sqlite:///{tmp}/optuna.db", "bench")
        trained = time.perf_counter() - started - loaded
        store.close()
    frame = data.current
    truth = data.truth.set_index("account_id")["segment"].reindex(frame["account_id"].astype(str))
    known = truth.notna().to_numpy()
    features = expand_features(list(frame.columns), config.features)
    x = SegmentScaler.fit(frame, features, config.log_features).transform(frame)[known]
    y = truth[known].to_numpy()
    ceiling = {}
    for name, matrix in (("view_features", x),
                         ("view_features_and_size_band", np.column_stack([x, pd.get_dummies(
                             frame.loc[known, "size_band"].astype(str)).to_numpy(float)]))):
        predicted = cross_val_predict(HistGradientBoostingClassifier(max_iter=200, random_state=0), matrix, y, cv=5)
        ceiling[name] = {"ari": round(float(adjusted_rand_score(y, predicted)), 4),
                         "accuracy": round(float((predicted == y).mean()), 4)}
    m = result.metrics
    counts = pd.crosstab(result.model.assignments.set_index("account_id")["name"], truth)
    return {"accounts_simulated": args.accounts, "accounts_segmented": int(len(frame)),
            "true_segments": truth.value_counts().to_dict(),
            "hdbscan": {k: round(m[k], 4) for k in ("segments", "noise_share", "oracle_ari", "oracle_ari_clustered",
                                                     "bootstrap_ari_mean", "dbcv", "dbcv_exact_sample",
                                                     "silhouette")},
            "kmeans_rfm": {k: round(m[k], 4) for k in ("kmeans_segments", "kmeans_oracle_ari", "kmeans_silhouette",
                                                        "kmeans_dbcv_exact_sample")},
            "supervised_ceiling": ceiling, "names_by_true_segment": counts.to_dict(orient="index"),
            "load_seconds": round(loaded, 1), "train_seconds": round(trained, 1)}


def online_retail(args) -> dict:
    from features.ingest import ingest
    from features.sources.datasets import load_dataset
    from features.store import FeatureStore
    from salesml.settings import get_settings
    from training.segments import SegmentsConfig, load_segments_data, train_segments_model

    folder = get_settings().shared_data
    folder = (folder if folder.is_absolute() else REPO / folder) / "uci_online_retail"
    if not folder.is_dir():
        return {"skipped": f"{folder} not found"}
    config = SegmentsConfig(trials=args.trials, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        imported = load_dataset("uci_online_retail", folder)
        with FeatureStore(Path(tmp) / "store.duckdb") as store:
            ingest(imported.sources, store, as_of=None)
            data = load_segments_data(store, "customer_segments", config)
        loaded = time.perf_counter() - started
        result = train_segments_model(data, config, f"sqlite:///{tmp}/optuna.db", "bench")
        trained = time.perf_counter() - started - loaded
    m = result.metrics
    columns = ["segment", "name", "size", "share", "ltv", "churn_risk", "recency_days", "orders_365d", "value_365d",
               "tenure_days"]
    profiles = result.model.profiles
    table = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}
             for row in profiles[[c for c in columns if c in profiles.columns]].to_dict(orient="records")]
    return {"cutoff": f"{data.cutoff:%Y-%m-%d}", "accounts_segmented": int(len(data.current)),
            "features": result.params["features"], "left_out": result.dropped,
            "unavailable_feature_groups": [g["group"] for g in data.unavailable],
            "hdbscan": {k: round(m[k], 4) for k in ("segments", "noise_share", "dbcv", "dbcv_exact_sample",
                                                     "silhouette", "bootstrap_ari_mean")},
            "kmeans_rfm": {k: round(m[k], 4) for k in ("kmeans_segments", "kmeans_dbcv_exact_sample",
                                                        "kmeans_silhouette")},
            "profiles": table, "load_seconds": round(loaded, 1), "train_seconds": round(trained, 1)}


def assign(args) -> dict:
    import shutil

    import httpx

    from experiments.benchmarks.serving import _free_port, prepare_home, run_wrk, start, stop
    from experiments.registered import get_alias, load_version_model
    from experiments.registry import CHAMPION
    from experiments.tracking import configure_mlflow
    from salesml.settings import get_settings

    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed: apt-get install wrk"}
    home = (args.home or Path(tempfile.mkdtemp(prefix="salesml-bench-home-")) / "home").resolve()
    people = prepare_home(home, args.accounts, 4)
    client = configure_mlflow(get_settings(home=home))
    name = "segments.customer_segments"
    champion = get_alias(client, name, CHAMPION)
    model, _ = load_version_model(client, name, str(champion.version))
    ids = model.assignments["account_id"].astype(str).tolist()
    batch = (ids * (args.batch_ids // len(ids) + 1))[:args.batch_ids]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {people['executive']['token']}"}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "salesml.cli", "serve", "--port", str(port), "--workers", str(args.workers)],
                 {"SALESML_HOME": str(home), "SALESML_MAX_BATCH_ROWS": str(args.batch_ids)},
                 lambda: httpx.get(base + "/readyz", timeout=2).status_code == 200, "salesml")
    try:
        one = json.dumps({"task": "customer_segments", "accounts": [ids[0]]})
        many = json.dumps({"task": "customer_segments", "accounts": list(dict.fromkeys(batch))})
        unique = len(json.loads(many)["accounts"])
        for body in (one, many):
            httpx.post(base + "/segments/assign", content=body, headers=headers, timeout=60).raise_for_status()
        single = run_wrk(base + "/segments/assign", one, headers, 16, args.duration, 2)
        batched = run_wrk(base + "/segments/assign", many, headers, args.workers, args.duration, 1)
    finally:
        stop(proc)
    return {"model_version": str(champion.version), "accounts_segmented": len(ids), "workers": args.workers,
            "one_id_per_request": single,
            "ids_per_request": {"ids": unique, **batched, "ids_per_s": round(batched["requests_per_s"] * unique)}}


def _profiles(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` customer profiles from five overlapping kinds (what the simulator's segments look like)."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 5, n)
    rate = np.array([0.55, 0.3, 0.18, 0.3, 0.08])[kind] * np.exp(rng.normal(0, 0.3, n))
    return pd.DataFrame({
        "account_id": [f"A{i}" for i in range(n)], "orders_365d": rng.poisson(rate * 52) + 1.0,
        "value_365d": rng.gamma(2.0, 3000, n) * (1 + rate * 20), "recency_days": rng.exponential(1 / rate, n),
        "tenure_days": np.where(kind == 3, rng.uniform(30, 200, n), rng.uniform(300, 900, n)),
        "ltv": rng.gamma(2.0, 5000, n) * (1 + rate * 10), "p_alive": np.clip(rng.beta(8, 2, n) - (kind == 2) * 0.4, 0, 1),
        "deal_discount_365d": 0.12 + (kind == 1) * 0.08 + rng.normal(0, 0.03, n)})


def scale_one(what: str, n: int, threads: int) -> dict:
    if what.startswith("hdbscan"):
        from training.segments import SegmentScaler, SegmentsConfig, cluster_accounts

        frame = _profiles(n)
        features = [c for c in frame.columns if c != "account_id"]
        x = SegmentScaler.fit(frame, features, ["orders_365d", "value_365d", "recency_days", "ltv"]).transform(frame)
        # As trained: fitted on at most max_fit_accounts, the rest placed by approximate_predict; or on all.
        limit = SegmentsConfig().max_fit_accounts if what == "hdbscan" else n
        started = time.perf_counter()
        clustering = cluster_accounts(x, {"min_cluster_size": max(25, min(n, limit) // 200), "min_samples": 10,
                                          "cluster_selection_method": "eom", "cluster_selection_epsilon": 0.0},
                                      threads=threads, max_fit=limit, seed=0)
        seconds = time.perf_counter() - started
        return {"what": what, "accounts": n, "fitted_on": int(len(clustering.fit_rows)), "seconds": round(seconds, 2),
                "segments": int(clustering.labels.max() + 1),
                "noise_share": round(float((clustering.labels < 0).mean()), 4), "peak_rss_gb": _peak_gb()}
    from training.clv import BetaGeo

    rng = np.random.default_rng(0)
    T = rng.uniform(1, 78, n)
    alive = rng.uniform(0, 1, n) * T
    x = rng.poisson(rng.gamma(0.25, 1 / 4.4, n) * alive).astype(float)
    recency = np.where(x > 0, rng.uniform(0, 1, n) * alive, 0.0)
    # bgnbd_days: summaries on the daily grid real order histories have (weeks = days / 7); bgnbd: a continuous
    # clock, where no two customers are alike (the worst case for the fit's de-duplication).
    grid = (lambda v: np.round(v * 7) / 7) if what == "bgnbd_days" else (lambda v: np.round(v, 4))
    T, recency = grid(T), grid(recency)
    recency = np.minimum(recency, T)
    started = time.perf_counter()
    fitted = BetaGeo.fit(x, recency, T)
    seconds = time.perf_counter() - started
    return {"what": what, "accounts": n, "seconds": round(seconds, 2), "r": round(fitted.r, 4),
            "alpha": round(fitted.alpha, 4), "a": round(fitted.a, 4), "b": round(fitted.b, 4), "peak_rss_gb": _peak_gb()}


def scale(args) -> dict:
    out = {}
    for what, sizes in (("hdbscan", (10_000, 30_000, 100_000, 300_000)), ("hdbscan_all_fitted", (10_000, 30_000, 100_000)),
                        ("bgnbd", (10_000, 100_000, 1_000_000)), ("bgnbd_days", (10_000, 100_000, 1_000_000))):
        rows = []
        for n in sizes:
            answer = subprocess.run([sys.executable, __file__, "--scale-one", what, str(n), "--threads",
                                     str(args.threads)], capture_output=True, text=True, check=True)
            rows.append(json.loads(answer.stdout.strip().splitlines()[-1]))
        for small, large in zip(rows, rows[1:], strict=False):
            ratio = large["accounts"] / small["accounts"]
            large["growth_vs_previous"] = round(large["seconds"] / max(small["seconds"], 1e-9), 2)
            large["n_log_n_bound"] = round(ratio * np.log(large["accounts"]) / np.log(small["accounts"]), 2)
        out[what] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="simulator,online_retail,scale,assign")
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--home", type=Path, help="assign: a SALESML_HOME with a segments champion.")
    parser.add_argument("--duration", type=int, default=15, help="assign: seconds of load per run.")
    parser.add_argument("--workers", type=int, default=2, help="assign: service workers.")
    parser.add_argument("--batch-ids", type=int, default=1000, help="assign: ids per request in the batch run.")
    parser.add_argument("--scale-one", nargs=2, metavar=("WHAT", "N"))
    args = parser.parse_args()
    if args.scale_one:
        print(json.dumps(scale_one(args.scale_one[0], int(args.scale_one[1]), args.threads)))
        return
    sections = {"simulator": simulator, "online_retail": online_retail, "scale": scale, "assign": assign}
    result = {name: sections[name](args) for name in args.only.split(",")}
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()

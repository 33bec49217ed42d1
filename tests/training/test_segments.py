"""Segments: HDBSCAN tuned on DBCV recovers groups that are there, names them by rule, and saves without trusting
an unchecked pickle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.store import FeatureStore
from training.segments import (
    CLUSTERER_FILE,
    NOISE,
    SegmentModel,
    SegmentScaler,
    SegmentsConfig,
    SegmentsData,
    load_segments_data,
    migration_matrix,
    name_segments,
    train_segments_model,
    uninformative_features,
)

#: Four kinds of customer, as a sales organisation would describe them, in the view's own columns.
GROUPS = {
    "loyal": {"orders_365d": 40, "value_365d": 90_000, "recency_days": 5, "tenure_days": 700, "ltv": 120_000,
              "p_alive": 0.97, "deal_discount_365d": 0.10},
    "price": {"orders_365d": 15, "value_365d": 20_000, "recency_days": 15, "tenure_days": 600, "ltv": 25_000,
              "p_alive": 0.90, "deal_discount_365d": 0.25},
    "lapsing": {"orders_365d": 4, "value_365d": 6_000, "recency_days": 120, "tenure_days": 650, "ltv": 3_000,
                "p_alive": 0.35, "deal_discount_365d": 0.12},
    "new": {"orders_365d": 5, "value_365d": 7_000, "recency_days": 10, "tenure_days": 60, "ltv": 12_000,
            "p_alive": 0.95, "deal_discount_365d": 0.11},
}
FEATURES = ["orders_365d", "value_365d", "recency_days", "tenure_days", "ltv", "p_alive", "deal_discount_365d"]
QUICK = SegmentsConfig(trials=8, bootstrap_runs=4, features=FEATURES, rfm_features=["recency_days", "orders_365d",
                       "value_365d"], log_features=["orders_365d", "value_365d", "recency_days", "tenure_days",
                                                    "ltv"], threads=2)


def synthetic_customers(per_group: int = 150, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for name, centre in GROUPS.items():
        for _ in range(per_group):
            row = {k: v * np.exp(rng.normal(0, 0.12)) for k, v in centre.items()}
            row["p_alive"] = float(np.clip(centre["p_alive"] + rng.normal(0, 0.02), 0.01, 1.0))
            row["deal_discount_365d"] = float(max(0.0, centre["deal_discount_365d"] + rng.normal(0, 0.015)))
            rows.append({**row, "truth": name})
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    frame["account_id"] = [f"A{i:05d}" for i in range(len(frame))]
    frame["owner_rep_id"] = np.where(np.arange(len(frame)) % 2 == 0, "R1", "R2")
    frame["region"] = np.where(np.arange(len(frame)) % 3 == 0, "emea", "amer")
    return frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    frame = synthetic_customers()
    previous = synthetic_customers(seed=1)
    data = SegmentsData(frame.drop(columns="truth"), previous.drop(columns="truth"), pd.Timestamp("2025-06-30"),
                        "customer@test", "snap", frame[["account_id", "truth"]].rename(columns={"truth": "segment"}))
    storage = f"sqlite:///{tmp_path_factory.mktemp('segments') / 'optuna.db'}"
    return train_segments_model(data, QUICK, storage, "segments-test"), frame


def test_groups_that_are_there_are_found_stably_with_little_noise(trained):
    result, _ = trained
    m = result.metrics
    assert m["segments"] == 4 and m["oracle_ari"] >= 0.9, m
    assert m["noise_share"] <= QUICK.max_noise_share and m["bootstrap_ari_mean"] >= 0.85, m
    assert np.isfinite(m["kmeans_oracle_ari"]) and m["kmeans_segments"] == 4
    assert np.isfinite(m["silhouette"]) and np.isfinite(m["dbcv"])


def test_beyond_max_fit_accounts_a_sample_is_clustered_and_the_rest_placed_alike(tmp_path):
    frame = synthetic_customers(per_group=200, seed=3)
    data = SegmentsData(frame.drop(columns="truth"), None, pd.Timestamp("2025-06-30"), "customer@test", "snap",
                        frame[["account_id", "truth"]].rename(columns={"truth": "segment"}))
    config = QUICK.model_copy(update={"max_fit_accounts": 300, "trials": 4, "bootstrap_runs": 2})
    result = train_segments_model(data, config, f"sqlite:///{tmp_path / 'optuna.db'}", "sampled")
    m, assigned = result.metrics, result.model.assignments
    assert (m["accounts_fitted"], m["accounts"]) == (300, 800)
    assert m["segments"] == 4 and m["oracle_ari"] >= 0.9, m  # over all 800, 500 of them never fitted
    assert len(assigned) == 800 and assigned["membership"].map(len).eq(4).all()
    placed = assigned[assigned["segment"] >= 0]
    assert placed.apply(lambda r: int(np.argmax(r["membership"])) == r["segment"], axis=1).mean() > 0.95


def test_segments_are_named_from_their_profiles(trained):
    result, frame = trained
    assigned = result.model.assignments.set_index("account_id")["name"]
    truth = frame.set_index("account_id")["truth"]
    expected = {"loyal": "high-value loyal", "price": "price-sensitive", "lapsing": "at risk", "new": "new"}
    for group, name in expected.items():
        members = assigned[truth[truth == group].index]
        assert (members == name).mean() > 0.9, (group, members.value_counts().to_dict())


def test_naming_rules_read_z_scores_and_leave_the_rest_core():
    population = pd.DataFrame({"p_alive": [0.9] * 8 + [0.2] * 2, "ltv": [10.0] * 10, "tenure_days": [500.0] * 10,
                               "orders_365d": [10.0] * 10, "deal_discount_365d": [0.1] * 10})
    profiles = pd.DataFrame({"segment": [NOISE, 0, 1], "churn_risk": [0.1, 0.8, 0.1], "ltv": [10.0, 10.0, 10.0],
                             "price_sensitivity": [0.1, 0.1, 0.1], "tenure_days": [500.0] * 3,
                             "orders_365d": [10.0] * 3})
    assert name_segments(profiles, population) == {0: "at risk", 1: "core", NOISE: "unassigned"}


def test_migration_counts_moves_and_arrivals():
    names = {0: "a", 1: "b"}
    matrix = migration_matrix(pd.Series([0, 0, 1], index=["x", "y", "z"]), pd.Series([0, 1, 1], index=["x", "y", "w"]),
                              names)
    assert matrix.loc["a", "a"] == 1 and matrix.loc["a", "b"] == 1 and matrix.loc["(not a customer)", "b"] == 1
    assert matrix.loc["b", "(not a customer)"] == 1


def test_the_scaler_round_trips_through_json():
    frame = synthetic_customers(20)
    frame["stage"] = np.where(frame.index % 2 == 0, "active", "onboarding")
    scaler = SegmentScaler.fit(frame, [*FEATURES, "stage"], ["ltv"])
    again = SegmentScaler.from_dict(scaler.to_dict())
    np.testing.assert_allclose(again.transform(frame), scaler.transform(frame))
    assert "stage=onboarding" in scaler.columns and scaler.transform(frame).shape == (len(frame), len(FEATURES) + 2)


def test_the_clusterer_is_unpickled_only_after_its_digest_matches(trained, tmp_path):
    result, frame = trained
    digests = result.model.save(tmp_path / "model")
    with pytest.raises(ValueError, match="never opened unchecked"):
        SegmentModel.load(tmp_path / "model", {})
    with pytest.raises(ValueError, match="SHA-256"):
        SegmentModel.load(tmp_path / "model", {**digests, CLUSTERER_FILE: "0" * 64})
    loaded = SegmentModel.load(tmp_path / "model", digests)
    rows = frame.head(50)
    pd.testing.assert_frame_equal(loaded.assign(rows), result.model.assign(rows))


def test_features_that_cannot_separate_accounts_are_left_out_with_the_reason():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [np.nan] * 3, "p_alive": [1.0, 1.0 - 1e-9, 1.0],
                          "stage": ["customer"] * 3, "ltv": [10.0, 0.0, 5.0]})
    dropped = uninformative_features(frame, ["a", "b", "p_alive", "stage", "ltv"], ["ltv"])
    assert {d["feature"]: d["reason"].split(" (")[0] for d in dropped} == {
        "b": "missing for every account", "p_alive": "the same value for every account",
        "stage": "the same value for every account"}


def test_online_retail_profiles_report_dbcv_and_silhouette_beside_kmeans(online_retail, tmp_path):
    """UCI Online Retail as a user imports it: no tickets, deals or lifecycle stages, and BG/NBD finds no dropout
    in its one year (P(alive) is 1 for everyone), so those features are left out and named; the profile table
    and HDBSCAN's validity beside KMeans-on-RFM's are what the run reports (README)."""
    config = SegmentsConfig(trials=6, bootstrap_runs=3, validity_sample=2000, threads=2, seed=0)
    with FeatureStore(online_retail.copy_to(tmp_path)) as store:
        data = load_segments_data(store, "customer_segments", config)
    result = train_segments_model(data, config, f"sqlite:///{tmp_path}/optuna.db", "online-retail")
    m, profiles = result.metrics, result.model.profiles
    assert f"{data.cutoff:%Y-%m-%d}" == "2011-11-30" and m["accounts"] > 4000
    assert {g["group"] for g in data.unavailable} >= {"service", "price_sensitivity"}
    left_out = {d["feature"] for d in result.dropped}
    assert {"p_alive", "tickets_per_order_365d", "deal_discount_365d"} <= left_out
    assert not left_out & set(result.params["features"])
    assert m["segments"] >= 3 and m["noise_share"] <= 0.2
    assert int(profiles["size"].sum()) == m["accounts"]
    assert {"size", "ltv", "churn_risk", "name"} <= set(profiles.columns)
    # DBCV is HDBSCAN's own criterion and silhouette favours KMeans's convex clusters: each wins on its own.
    assert m["dbcv_exact_sample"] > m["kmeans_dbcv_exact_sample"]
    assert m["kmeans_silhouette"] > m["silhouette"] > 0

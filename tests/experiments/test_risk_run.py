"""Tracked churn training on the simulator: quality against the oracle, early warning, registry round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from experiments.registered import load_version_model
from experiments.registry import TAG_FEATURE_VERSION, TAG_TRAINER, sha_tag
from experiments.risk_run import TEST_PREDICTIONS, run_risk_training
from features.ingest import discover_sources, ingest
from features.pipeline import train_text_model
from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation
from features.store import FeatureStore
from salesml.settings import get_settings
from training.risk import InsufficientDataError
from training.tasks import load_config


def make_home(root: Path, accounts: int, months: int, seed: int) -> Path:
    home = root / "home"
    org = simulate_organisation(SimulationConfig(accounts=accounts, months=months, seed=seed))
    write_organisation(org, home / "demo_data")
    with FeatureStore(home / "features.duckdb") as store:
        ingest(discover_sources(home / "demo_data"), store)
        train_text_model(store)
    return home


@pytest.fixture(scope="module")
def sim_home(tmp_path_factory) -> Path:
    return make_home(tmp_path_factory.mktemp("sim"), 1500, 24, 7)


@pytest.fixture(scope="module")
def trained(sim_home):
    settings = get_settings(home=sim_home)
    config = load_config(Path("experiments/configs/opportunity_loss.yaml"), trials=8, ground_truth=str(
        sim_home / "demo_data" / "ground_truth"))
    return settings, run_risk_training(settings, "opportunity_loss", config, trainer="alice")


@pytest.mark.slow
def test_opportunity_loss_model_is_close_to_the_oracle_and_warns_early(trained):
    _, result = trained
    m = result["metrics"]
    assert m["test_roc_auc"] >= 0.85
    assert m["oracle_roc_auc"] is not None and m["oracle_roc_auc"] - m["test_roc_auc"] <= 0.03
    assert m["early_warning_recall_30d"] >= 0.6, m
    assert m["early_warning_precision"] >= 0.6
    assert set(result) >= {"model", "version", "run_id", "metrics"}
    assert result["model"] == "risk.opportunity_loss" and result["version"] == "1"


@pytest.mark.slow
def test_the_run_and_version_carry_lineage_metrics_and_plots(trained, tmp_path):
    settings, result = trained
    client = mlflow.MlflowClient(settings.tracking_uri_resolved, settings.tracking_uri_resolved)
    version = client.get_model_version("risk.opportunity_loss", result["version"])
    assert version.tags[TAG_TRAINER] == "alice"
    assert version.tags[TAG_FEATURE_VERSION] == result["feature_version"]
    assert version.tags[sha_tag("model.json")]
    run = client.get_run(result["run_id"])
    assert run.data.metrics["test_roc_auc"] == pytest.approx(result["metrics"]["test_roc_auc"])
    artifacts = {a.path for a in client.list_artifacts(result["run_id"], "plots")}
    assert {"plots/roc.png", "plots/calibration.png", "plots/shap_summary.png", "plots/optuna_history.png"} <= artifacts
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name.endswith(result["feature_version"])
    reasons = json.loads(Path(client.download_artifacts(result["run_id"], "explanations/reason_codes.json", str(tmp_path))
                              ).read_text())
    first = reasons["examples"][0]["reasons"]
    assert first and all(r["sentence"] and r["direction"] in ("raises_risk", "lowers_risk") for r in first)


def _test_rows_with_features(settings, result, dst: Path) -> pd.DataFrame:
    """The test rows with the probabilities training logged, joined back to their stored features."""
    logged = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=result["run_id"], artifact_path=str(TEST_PREDICTIONS), dst_path=str(dst)))
    with FeatureStore(settings.feature_store_path, read_only=True) as store:
        versions = store.table("feature_versions").execute()
        table = versions[versions["version"] == result["feature_version"]]["table_name"].iloc[0]
        features = store.table(table).execute()
    keys = [c for c in logged.columns if c != "probability"]
    rows = logged.merge(features, on=keys, how="left", validate="one_to_one")
    assert len(rows) == len(logged) == result["metrics"]["test_rows"]
    return rows


@pytest.mark.slow
def test_registered_version_loads_in_a_fresh_process_with_identical_predictions(trained, tmp_path):
    settings, result = trained
    uri = f"models:/{result['model']}/{result['version']}"
    mlflow.set_tracking_uri(settings.tracking_uri_resolved)
    rows = _test_rows_with_features(settings, result, tmp_path)
    rows.drop(columns="probability").to_parquet(tmp_path / "rows.parquet")
    code = (
        "import sys, mlflow, pandas as pd, numpy as np;"
        f"mlflow.set_tracking_uri({settings.tracking_uri_resolved!r});"
        f"m = mlflow.pyfunc.load_model({uri!r});"
        f"p = m.predict(pd.read_parquet({str(tmp_path / 'rows.parquet')!r}))['probability'].to_numpy();"
        f"np.save({str(tmp_path / 'p.npy')!r}, p)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, capture_output=True)
    # Against the probabilities training computed for its test metrics, not against another load.
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), rows["probability"].to_numpy(), rtol=0, atol=1e-9)


@pytest.mark.slow
def test_too_few_deals_is_refused_with_the_baseline_offered_and_the_baseline_trains(tmp_path):
    home = make_home(tmp_path, 60, 18, 3)
    settings = get_settings(home=home)
    config = load_config(None, trials=2)
    with pytest.raises(InsufficientDataError, match="200 won and 200 lost.*--baseline"):
        run_risk_training(settings, "opportunity_loss", config, trainer="bob")
    client = mlflow.MlflowClient(settings.tracking_uri_resolved, settings.tracking_uri_resolved)
    assert not client.search_model_versions("name='risk.opportunity_loss'")
    result = run_risk_training(settings, "opportunity_loss", config, trainer="bob", baseline=True)
    assert result["params"] == {"family": "stage_baseline"}
    model = mlflow.pyfunc.load_model(f"models:/risk.opportunity_loss/{result['version']}")
    out = model.predict(pd.DataFrame({"stage": ["lead", "negotiation", "unheard-of"]}))
    assert out["probability"].between(0, 1).all()


def test_training_without_activities_contacts_news_or_budget_lists_the_unavailable_groups(tmp_path):
    home = tmp_path / "home"
    org = simulate_organisation(SimulationConfig(accounts=600, months=17, seed=3))
    write_organisation(org, home / "demo_data")
    absent = ("activities", "contacts", "news_signals", "budget_signals")
    for name in absent:
        (home / "demo_data" / f"{name}.parquet").unlink()
    with FeatureStore(home / "features.duckdb") as store:
        ingest(discover_sources(home / "demo_data"), store)
        assert not any(store.has_table(name) for name in absent)
    config = load_config(Path(__file__).resolve().parents[2] / "experiments" / "configs" / "opportunity_loss.yaml",
                         trials=1)
    result = run_risk_training(get_settings(home=home), "opportunity_loss", config, trainer="alice")
    groups = {g["group"]: g for g in result["unavailable_feature_groups"]}
    assert set(groups) == {"engagement", "key_contacts", "news", "budget"}
    assert groups["engagement"]["tables"] == ["activities"] and "no activities" in groups["engagement"]["reason"]
    assert result["metrics"]["test_roc_auc"] > 0.6  # stage dynamics, deal and account facts still carry signal
    client = mlflow.MlflowClient(get_settings(home=home).tracking_uri_resolved)
    run = client.get_run(result["run_id"])
    assert run.data.tags["salesml.unavailable_feature_groups"] == "engagement,key_contacts,budget,news"
    logged = json.loads(Path(client.download_artifacts(result["run_id"], "unavailable_feature_groups.json",
                                                       str(tmp_path))).read_text())
    assert {g["group"] for g in logged} == set(groups)
    with FeatureStore(home / "features.duckdb", read_only=True) as store:
        view = store.table(store.latest_view_table("opportunity")).execute()
    assert view["meetings_30d"].isna().all() and view["dm_departures"].isna().all()  # missing, never 0
    assert view["stage_changes"].notna().any()
    model = load_version_model(client, "risk.opportunity_loss", result["version"])[0]
    assert "meetings_30d" not in model.features and "stage_changes" in model.features

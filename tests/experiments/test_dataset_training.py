"""Churn models on the shared datasets, on the literature's fixed split (stratified 80/20, seed 42).

Published comparisons on these splits: Telco, scikit-learn gradient boosting with defaults 0.842 and logistic
regression 0.842 (FLAML, 120 s: 0.847); Sales Win/Loss, LightGBM with defaults 0.940 (FLAML, 120 s: 0.946).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.risk_run import run_risk_training
from features.ingest import ingest
from features.sources.datasets import load_dataset
from features.store import FeatureStore
from salesml.settings import get_settings
from training.tasks import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


def _import(home: Path, dataset: str, folder: Path) -> None:
    imported = load_dataset(dataset, folder)
    with FeatureStore(home / "features.duckdb") as store:
        for task in imported.tasks:
            store.register_task(task["name"], task)
        ingest(imported.sources, store)


@pytest.mark.slow
def test_telco_churn_beats_the_published_defaults(shared_data, tmp_path):
    home = tmp_path / "home"
    _import(home, "telco_churn", shared_data / "telco_churn")
    config = load_config(CONFIGS / "telco_churn.yaml", trials=12)
    result = run_risk_training(get_settings(home=home), "telco_churn", config, trainer="ci")
    auc = result["metrics"]["test_roc_auc"]
    assert result["metrics"]["test_rows"] == 1409  # 20% of all 7,043 rows, blank TotalCharges included
    assert auc >= 0.845, auc


@pytest.mark.slow
def test_sales_win_loss_beats_the_lightgbm_default(shared_data, tmp_path):
    home = tmp_path / "home"
    _import(home, "ibm_sales_win_loss", shared_data / "ibm_sales_win_loss")
    # One trial: the config's start, the best by cross-validation of a study that never saw the test rows
    # (experiments/benchmarks/choose_start.py).
    config = load_config(CONFIGS / "ibm_sales_win_loss.yaml", trials=1)
    result = run_risk_training(get_settings(home=home), "ibm_sales_win_loss", config, trainer="ci")
    auc = result["metrics"]["test_roc_auc"]
    assert result["metrics"]["test_rows"] == 15605  # 20% of all 78,025 rows, repeated opportunity numbers included
    # The target: 0.9472 measured; LightGBM defaults: 0.940, FLAML in 120 s: 0.946.
    assert auc >= 0.947, auc

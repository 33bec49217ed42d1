"""Settings come from SALESML_* environment variables, with state under SALESML_HOME by default."""

from __future__ import annotations

from pathlib import Path

from salesml.settings import get_settings


def test_defaults_live_under_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SALESML_HOME", str(tmp_path))
    s = get_settings()
    assert s.home == tmp_path
    assert s.feature_store_path == tmp_path / "features.duckdb"
    assert s.tracking_uri_resolved == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.optuna_storage_resolved == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert s.threads == 2


def test_engines_are_pointed_elsewhere_by_settings_only(monkeypatch):
    monkeypatch.setenv("SALESML_TRACKING_URI", "postgresql://mlflow@db/mlflow")
    monkeypatch.setenv("SALESML_OPTUNA_STORAGE", "postgresql://optuna@db/optuna")
    monkeypatch.setenv("SALESML_FEATURE_STORE", "/data/features.duckdb")
    s = get_settings()
    assert s.tracking_uri_resolved == "postgresql://mlflow@db/mlflow"
    assert s.optuna_storage_resolved == "postgresql://optuna@db/optuna"
    assert s.feature_store_path == Path("/data/features.duckdb")

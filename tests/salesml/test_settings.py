"""Settings come from SALESML_* environment variables, with state under SALESML_HOME by default."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from salesml.settings import get_settings


def test_defaults_live_under_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SALESML_HOME", str(tmp_path))
    monkeypatch.delenv("SALESML_THREADS", raising=False)  # the parallel test run sets one thread per worker
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


def test_the_duckdb_memory_limit_reaches_the_feature_store_connection(monkeypatch, tmp_path):
    from features.store import FeatureStore

    monkeypatch.setenv("SALESML_HOME", str(tmp_path))
    assert get_settings().duckdb_memory_limit == "3GB"
    monkeypatch.setenv("SALESML_DUCKDB_MEMORY_LIMIT", " 512MiB ")
    with FeatureStore.from_settings(get_settings(), threads=1) as store:
        limit, threads = store.con.raw_sql(
            "SELECT current_setting('memory_limit'), current_setting('threads')").fetchone()
    assert (limit, threads) == ("512.0 MiB", 1)


def test_a_bad_memory_limit_is_refused_with_examples(monkeypatch):
    monkeypatch.setenv("SALESML_DUCKDB_MEMORY_LIMIT", "lots")
    with pytest.raises(ValidationError, match="expected a size such as 3GB, 500MB or 2GiB"):
        get_settings()


def test_path_settings_go_absolute_for_a_process_started_elsewhere(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SALESML_HOME", "state")
    monkeypatch.setenv("SALESML_FEATURE_STORE", "data/features.duckdb")
    monkeypatch.setenv("SALESML_TRACKING_URI", "sqlite:///runs/mlflow.db")
    monkeypatch.setenv("SALESML_ARTIFACT_LOCATION", "runs/artifacts")
    monkeypatch.setenv("SALESML_OPTUNA_STORAGE", "postgresql://optuna@db/optuna")
    env = get_settings().path_environment()
    assert env["SALESML_HOME"] == str(tmp_path / "state")
    assert env["SALESML_FEATURE_STORE"] == str(tmp_path / "data" / "features.duckdb")
    assert env["SALESML_TRACKING_URI"] == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert env["SALESML_ARTIFACT_LOCATION"] == str(tmp_path / "runs" / "artifacts")
    assert env["SALESML_OPTUNA_STORAGE"] == "postgresql://optuna@db/optuna"  # a server URL is left as it is
    assert Path(env["SALESML_SHARED_DATA"]).is_absolute()
    monkeypatch.setenv("SALESML_TRACKING_URI", "sqlite:////srv/mlflow.db")
    assert get_settings().path_environment()["SALESML_TRACKING_URI"] == "sqlite:////srv/mlflow.db"

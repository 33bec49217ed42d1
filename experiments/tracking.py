"""MLflow set-up shared by tracked runs and registry commands (plots are in ``experiments.plots``)."""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.sources import LocalArtifactDatasetSource

from salesml.settings import Settings

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


def configure_mlflow(settings: Settings) -> MlflowClient:
    """Point MLflow at the settings' tracking and registry store; return a client."""
    uri = settings.tracking_uri_resolved
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(settings: Settings, name: str) -> str:
    """The id of experiment ``name``, created with its artifacts under the settings' artifact location."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = settings.artifact_location_resolved.rstrip("/") + "/" + name
    return mlflow.create_experiment(name, artifact_location=location)


def code_version() -> str:
    """The git SHA of the code (with ``-dirty`` when the work tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_training_dataset(frame: pd.DataFrame, store_path: Path, name: str, feature_version: str, snapshot: str,
                         targets: str | None = None) -> None:
    """Log a run's training rows as an MLflow dataset, sourced at the feature store, with its lineage tags."""
    # An explicit source: given a file URI, MLflow finds LocalArtifactDatasetSource twice and warns that it is
    # ambiguous (mlflow/mlflow#9702).
    source = LocalArtifactDatasetSource(Path(store_path).resolve().as_uri())
    with warnings.catch_warnings():
        # The hint that integer columns cannot hold missing values is about serving signatures; this schema only
        # records the training rows.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=source, name=name, targets=targets)
        mlflow.log_input(dataset, context="training", tags={"feature_version": feature_version, "snapshot": snapshot})


def log_unavailable_groups(unavailable: list[dict], say) -> list[dict]:
    """Log the feature groups the data cannot feed (``unavailable_feature_groups.json`` and the tag
    ``salesml.unavailable_feature_groups``), tell ``say``, and return them as the run's JSON reports them."""
    groups = [{k: g[k] for k in ("group", "tables", "reason", "columns")} for g in unavailable]
    if groups:
        mlflow.log_dict(groups, "unavailable_feature_groups.json")
        mlflow.set_tag("salesml.unavailable_feature_groups", ",".join(g["group"] for g in groups))
        say("unavailable feature groups (missing in the view, not model features): "
            + "; ".join(f"{g['group']} ({g['reason']})" for g in groups))
    return [{k: g[k] for k in ("group", "tables", "reason")} for g in groups]

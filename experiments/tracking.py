"""MLflow set-up shared by tracked runs and registry commands (plots are in ``experiments.plots``)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import mlflow
from mlflow import MlflowClient

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

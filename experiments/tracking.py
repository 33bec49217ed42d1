"""MLflow set-up shared by tracked runs and registry commands (plots are in ``experiments.plots``)."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from functools import cached_property
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.data.sources import LocalArtifactDatasetSource

from experiments.registry import TAG_CODE_VERSION, TAG_FEATURE_VERSION, TAG_TASK, TAG_TRAINER, TAG_WINDOW
from salesml.settings import Settings

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


#: Run artifact naming the best trial of the run's study (see ``log_best_trial``).
BEST_TRIAL = "study/best_trial.json"


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


#: Rows a logged dataset's schema is inferred from.
SCHEMA_ROWS = 1000


class SampledSchemaDataset(PandasDataset):
    """A pandas dataset whose schema is inferred from its first ``SCHEMA_ROWS`` rows.

    MLflow infers a pandas dataset's schema value by value over every row, and its digest maps ``type`` over every
    cell (mlflow/mlflow#13085, open): about 3 s for one training run's 43,000 x 66 rows, every run. The columns'
    dtypes decide the schema, and the digest is given from the rows' lineage instead.
    """

    @cached_property
    def schema(self):
        """The schema of the dataset's first rows and of each column's first value (``infer_signature``), a column
        required where no row of the whole frame lacks it, as MLflow's own inference says."""
        from mlflow.models import infer_signature
        from mlflow.types import ColSpec, Schema

        df = self.df
        head = df.head(SCHEMA_ROWS)
        firsts = [df[c].first_valid_index() for c in head.columns[head.isna().all()]]
        sample = pd.concat([head, df.loc[[i for i in dict.fromkeys(firsts) if i is not None]]])
        missing = df.isna().any()
        return Schema([ColSpec(c.type, c.name, required=not bool(missing[c.name]))
                       for c in infer_signature(sample).inputs.inputs])


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
        # The digest MLflow would compute reads every cell; the store snapshot, the feature version and the
        # frame's shape and columns fingerprint the same rows.
        digest = hashlib.sha256(json.dumps([snapshot, feature_version, list(map(str, frame.columns)),
                                            len(frame)]).encode()).hexdigest()[:8]
        dataset = SampledSchemaDataset(df=frame, source=source, name=name, targets=targets, digest=digest)
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


def name_study(kind: str, task: str, feature_version: str, objective: Mapping) -> str:
    """The Optuna study of a (task, data snapshot) and objective: a study's trials are comparable only on the same
    data and search space, so a digest of ``objective`` (features, split, search settings) is part of the name."""
    digest = hashlib.sha256(json.dumps(objective, sort_keys=True).encode()).hexdigest()[:8]
    return f"{kind}.{task}.{feature_version.split('@')[-1][:16]}.{digest}"


def log_run_context(task: str, feature_version: str, trainer: str, window: str, config) -> None:
    """Tag the active run with its lineage (task, feature version, trainer, code version, data window) and log the
    config's scalar settings as ``config.*`` parameters."""
    mlflow.set_tags({TAG_TASK: task, TAG_FEATURE_VERSION: feature_version, TAG_TRAINER: trainer,
                     TAG_CODE_VERSION: code_version(), TAG_WINDOW: window, **getattr(config, "run_tags", {})})
    mlflow.log_params({f"config.{k}": v for k, v in config.model_dump(mode="json").items()
                       if not isinstance(v, (list, dict, tuple))})


def log_best_trial(storage_url: str, study_name: str) -> dict | None:
    """Log the best finished trial of a study as ``study/best_trial.json`` (its number, value and Optuna
    parameters): the monthly loop enqueues a champion's parameters as the first trial of the next month's study.

    Returns:
        What was logged, or ``None`` when the study has no completed trial.
    """
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage_url)
    try:
        best = study.best_trial
    except ValueError:  # no completed trial
        return None
    record = {"study": study_name, "number": best.number, "value": best.value, "params": best.params}
    mlflow.log_dict(record, BEST_TRIAL)
    return record


def read_best_trial(client: MlflowClient, run_id: str) -> dict | None:
    """The ``study/best_trial.json`` a training run logged, or ``None`` when it logged none (baselines, runs
    from before the loop)."""
    with tempfile.TemporaryDirectory(prefix="salesml-best-") as scratch:
        try:
            path = client.download_artifacts(run_id, BEST_TRIAL, scratch)
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            return None
        return json.loads(Path(path).read_text())


def log_pyfunc_model(model, code: Path, folder_name: str, example, requirements: Sequence[str],
                     digests_artifact: bool = False) -> tuple[dict[str, str], str]:
    """Save ``model`` in its native files and log it as a pyfunc from ``code`` with them as the ``model_dir``
    artifact (and, with ``digests_artifact``, their SHA-256 as ``digests``), pinning ``requirements`` to the
    installed versions.

    Returns:
        The files' SHA-256 digests and the logged model's URI.
    """
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / folder_name
        digests = model.save(folder)
        artifacts = {"model_dir": str(folder)}
        if digests_artifact:
            (Path(tmp) / "digests.json").write_text(json.dumps(digests))
            artifacts["digests"] = str(Path(tmp) / "digests.json")
        with warnings.catch_warnings():
            # The hint is about integer columns in a serving signature; these examples are ids and a horizon.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
            info = mlflow.pyfunc.log_model(name="model", python_model=str(code), artifacts=artifacts,
                                           input_example=example,
                                           pip_requirements=[f"{n}=={metadata.version(n)}" for n in requirements])
    return digests, info.model_uri

"""Reading registered model versions back: download, check every file against its registered SHA-256, load."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from experiments.registry import EVALUATION_FILES, TAG_SHA_PREFIX

if TYPE_CHECKING:
    from training.models import RiskModel


class RegistryError(LookupError):
    """A model, version or alias that does not exist, or an artifact that fails its checks."""


def get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """A registered version.

    Raises:
        RegistryError: naming the model and version.
    """
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"no version {version} of model {name!r}") from None


def get_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points to, or ``None``."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _first_registered(client: MlflowClient, names: list[str]) -> str | None:
    """The first of ``names`` that is a registered model, or ``None``."""
    for name in dict.fromkeys(names):
        try:
            client.get_registered_model(name)
        except MlflowException:
            continue
        return name
    return None


def resolve_model_name(client: MlflowClient, name: str) -> str:
    """The registered model a user named: the name itself when registered, else its spelling in the other
    naming (``churn.<task>`` was the name of risk models before the task registry, and stores from then keep it).
    """
    from training.registry import LEGACY_PREFIXES, canonical_model_name

    prefix, _, task = name.partition(".")
    candidates = [name, canonical_model_name(name)]
    candidates += [f"{old}.{task}" for old, new in LEGACY_PREFIXES.items() if new == prefix]
    return _first_registered(client, candidates) or name


def task_model_name(client: MlflowClient, task: str) -> str:
    """The registered model of a task: ``<kind>.<task>`` for a declared task, else the one registered name that
    ends in ``.<task>`` (an imported task table's kind is known to the store, not to the registry); the name
    before the registry, ``churn.<task>``, is found too.

    Raises:
        RegistryError: when no model of the task is registered.
    """
    from training.registry import TASKS

    if task in TASKS:
        names = [TASKS[task].model_name, f"churn.{task}"]
    else:
        names = [m.name for m in client.search_registered_models() if m.name.partition(".")[2] == task]
        names.sort(key=lambda n: n.startswith("churn."))  # today's spelling first
    found = _first_registered(client, names)
    if found is None:
        raise RegistryError(f"no model of task {task!r} is registered: train one with `salesml train {task}`")
    return found


def expected_digests(version: ModelVersion) -> dict[str, str]:
    """The SHA-256 of each artifact file recorded at registration."""
    return {k[len(TAG_SHA_PREFIX):]: v for k, v in version.tags.items() if k.startswith(TAG_SHA_PREFIX)}


def load_version_model(client: MlflowClient, name: str, version: str, folder: Path | None = None
                       ) -> tuple[RiskModel, ModelVersion]:
    """Download a version's artifact and load it, refusing files whose SHA-256 differs from the registered one.

    Args:
        client: the MLflow client.
        name: the registered model.
        version: its version.
        folder: where to keep the downloaded files; by default they go to a temporary folder removed once the
            model is loaded (both boosters read their file whole).

    Raises:
        RegistryError: when the version does not exist, has no digests, or a file does not match.
    """
    info = get_version(client, name, version)
    digests = expected_digests(info)
    if not digests:
        raise RegistryError(f"{name} version {version} has no registered SHA-256 tags; refusing to load it")
    if folder is not None:
        return _download_model(Path(folder), name, version, digests), info
    # A kept folder per load (every serving start, batch run and promotion gate) piled up in /tmp.
    with tempfile.TemporaryDirectory(prefix="salesml-model-") as scratch:
        return _download_model(Path(scratch), name, version, digests), info


def load_champion(client: MlflowClient, task: str) -> tuple[RiskModel, ModelVersion]:
    """The champion of a task's model, loaded and checked (see ``load_version_model``).

    Raises:
        RegistryError: when the task has no registered model or no champion, or its artifact fails its checks.
    """
    from experiments.registry import CHAMPION

    name = task_model_name(client, task)
    champion = get_alias(client, name, CHAMPION)
    if champion is None:
        raise RegistryError(f"{name} has no champion: promote a version first")
    return load_version_model(client, name, str(champion.version))


def load_split(client: MlflowClient, run_id: str) -> dict:
    """The description of the split a training run logged (``split.json``: for a timed split its ``train``,
    ``validation`` and ``test`` months), or ``{}`` when the run logged none."""
    import json

    with tempfile.TemporaryDirectory(prefix="salesml-split-") as scratch:
        try:
            return json.loads(Path(client.download_artifacts(run_id, "split.json", scratch)).read_text())
        except (MlflowException, OSError):
            return {}


def load_evaluation(client: MlflowClient, info: ModelVersion) -> dict:
    """The evaluation data a version's training run logged (read-only: nothing is rebuilt or stored).

    Returns:
        ``window`` (the test rows with every column), ``reference`` (sampled training rows), ``recent`` (the
        newest cutoff's rows, or ``None``) as frames, ``split`` (the split's description) and ``documents`` (the
        JSON files of the run's evaluation folder, by name: ``windows``, ``by_step``, ``calibration``).

    Raises:
        RegistryError: when the run logged no evaluation data (versions registered before runs did).
    """
    import json

    import pandas as pd

    frames: dict = {}
    with tempfile.TemporaryDirectory(prefix="salesml-evaluation-") as scratch:
        try:
            folder = Path(client.download_artifacts(info.run_id, "evaluation", scratch))
        except (MlflowException, OSError):
            folder = Path(scratch) / "missing"
        for key, path in EVALUATION_FILES.items():
            local = folder / path.name
            frames[key] = pd.read_parquet(local) if local.is_file() else None
        frames["documents"] = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    frames["split"] = load_split(client, info.run_id)
    if frames["window"] is None or frames["reference"] is None:
        raise RegistryError(f"{info.name} version {info.version} has no evaluation data in its run (it was "
                            "registered before training runs logged it): train a new version to audit")
    return frames


def _download_model(target: Path, name: str, version: str, digests: dict[str, str]) -> RiskModel:
    # Imported here, not at the top: it brings in LightGBM, XGBoost and scikit-learn (about a second), which the
    # registry lookups above (reviews, promotions, listings) do not need.
    from training.registry import canonical_model_name, get_kind, resolve

    kind = get_kind(canonical_model_name(name).partition(".")[0])
    # MLflow's tracking URI is the one configure_mlflow set.
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(target)))
    found = next(local.rglob(kind.artifact_file), None)
    if found is None:
        raise RegistryError(f"{name} version {version} has no {kind.artifact_file} in its artifact")
    try:
        return resolve(kind.artifact_loader)(found.parent, digests)
    except ValueError as exc:
        raise RegistryError(f"{name} version {version}: {exc}") from None

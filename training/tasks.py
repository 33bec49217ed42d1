"""Training tasks: the typed training config of risk models, and a task's rows.

Tasks are declared in ``training.registry``: a feature view (``opportunity_loss``, ``customer_churn``) or a task
table imported from a dataset or a mapping (``telco_churn``, ``ibm_sales_win_loss``, any bring-your-own name).
``resolve_task`` turns the name into a ``TaskSpec`` (the definition and its columns); ``load_task_data`` (a
pipeline: it reads the feature store) returns the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, Field, ValidationError

from features.pipeline import (
    build_view,
    event_source,
    latest_event,
    materialize,
    resolve_cutoffs,
    snapshot_hash,
)
from features.store import FeatureStore
from features.views import ViewConfig, get_view
from training.configs import TaskConfig, with_home  # noqa: F401 (with_home: part of this module's API)
from training.registry import MIN_DEALS_PER_OUTCOME, Task, get_task


class RiskConfig(TaskConfig):
    """Training config of a risk model: deal loss, churn, any binary outcome (``experiments/configs/<task>.yaml``)."""

    cv_folds: int = Field(5, ge=2, description="Folds for tuning and calibration on untimed data.")
    test_size: float = Field(0.2, gt=0, lt=1, description="Held-out share on untimed data (stratified).")
    split_seed: int = Field(42, description="random_state of the untimed train/test split.")
    test_cutoffs: int = Field(3, ge=1, description="Last labelled cutoffs held out for test (timed data).")
    validation_cutoffs: int = Field(3, ge=1, description="Cutoffs before the test window for validation.")
    embargo_cutoffs: int | None = Field(None, ge=0, description="Cutoffs dropped between training and validation "
                                        "(default: the label horizon in months).")
    early_warning_precision: float = Field(0.6, gt=0, lt=1, description="Precision the alert threshold targets.")
    early_warning_days: int = Field(30, ge=1)
    reasons: int = Field(3, ge=1, le=10, description="Reason codes per prediction.")
    min_deals_per_outcome: int = Field(MIN_DEALS_PER_OUTCOME, description="Outcomes of each kind a task that "
                                       "declares a minimum needs (opportunity scoring: won and lost deals).")
    monotone: dict[str, Literal["increasing", "decreasing"]] = Field(
        default_factory=dict, description="Features whose effect on risk must be monotone (booster constraints).")


def load_config(path: Path | None, model: type[BaseModel] = RiskConfig, **overrides: object) -> BaseModel:
    """Read a training config YAML into ``model`` (the kind's typed config: ``RiskConfig``, ``DemandConfig``) and
    apply command-line overrides (``None`` values are ignored).

    Raises:
        ValueError: naming the file and the invalid fields.
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a training config is a YAML mapping")
    given = {k: v for k, v in overrides.items() if v is not None}
    data.update(given)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Name where each bad value came from: a command-line option, or the field in the file.
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "config"
            top = str(error["loc"][0]) if error["loc"] else ""
            where = f"--{top.replace('_', '-')}" if top in given else f"{path or 'config'}: {field}"
            problems.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
        raise ValueError("; ".join(problems)) from None


@dataclass
class TaskSpec:
    """A resolved training task: its registry definition and its columns."""

    name: str
    kind: Literal["view", "table"]
    source: str
    label: str
    id_column: str
    time_column: str | None
    numeric: list[str]
    categorical: list[str]
    sensitive: list[str]
    keys: list[str] = field(default_factory=list)
    definition: Task | None = None

    @property
    def features(self) -> list[str]:
        """All model features."""
        return self.numeric + self.categorical

    @property
    def timed(self) -> bool:
        """Whether the rows are split by time."""
        return self.time_column is not None


@dataclass
class TaskData:
    """The rows of a task, and where they came from."""

    spec: TaskSpec
    frame: pd.DataFrame
    feature_version: str
    snapshot: str
    window: str
    outcomes: pd.DataFrame | None = None
    oracle: pd.DataFrame | None = None
    source_rows: int = 0
    recent: pd.DataFrame | None = None
    unavailable: list[dict] = field(default_factory=list)


def resolve_task(name: str, store: FeatureStore, config: TaskConfig) -> TaskSpec:
    """The spec of a task name: its registry definition and the columns it learns from.

    Raises:
        UnknownTaskError: when the name is neither a declared task nor an imported task table.
    """
    task = get_task(name, store)
    if task.data.source == "view":
        view = get_view(task.data.name)
        if task.data.name == "customer":
            from features.pipeline import _categories

            columns = view.columns(ViewConfig(horizon_days=config.horizon_days), _categories(store))
        else:
            columns = view.columns(ViewConfig(horizon_days=config.horizon_days))
        spec = _spec_from_columns(name, "view", task.data.name, task.data.label.format(h=config.horizon_days),
                                  task.data.id_column, task.data.time_column, columns, config)
        spec.definition = task
        return spec
    spec = store.task_spec(name)
    excluded = set(config.exclude_features)
    numeric, categorical = [], []
    for feature in spec["features"]:
        if feature["name"] in excluded:
            continue
        (categorical if feature["type"] in ("categorical", "string") else numeric).append(feature["name"])
    sensitive = [s["name"] for s in spec["sensitive"]]
    if config.sensitive_as_features:
        for s in spec["sensitive"]:
            (categorical if s["type"] in ("categorical", "string") else numeric).append(s["name"])
    return TaskSpec(name, "table", spec["table"], task.data.label, task.data.id_column, task.data.time_column,
                    numeric, categorical, sensitive, keys=["row_id"], definition=task)


def _spec_from_columns(name: str, kind: str, source: str, label: str, id_column: str, time_column: str,
                       columns: list, config: TaskConfig) -> TaskSpec:
    excluded = set(config.exclude_features)
    numeric: list[str] = []
    categorical: list[str] = []
    sensitive, keys = [], []
    for column in columns:
        if column.role == "key":
            keys.append(column.name)
            continue
        if column.role == "label" or column.name in excluded:
            continue
        if column.role == "sensitive":
            sensitive.append(column.name)
            if not config.sensitive_as_features:
                continue
        # split into numeric and categorical once the rows are loaded (by dtype)
        numeric.append(column.name)
    return TaskSpec(name, kind, source, label, id_column, time_column, numeric, categorical, sensitive, keys)


def task_cutoffs(store: FeatureStore, task: Task, as_of: date, start: date | None = None) -> list[date]:
    """The month ends a view task trains on: from the month after its first event (or ``start``) to ``as_of``
    (what ``salesml demo`` materialises too, so that training reuses those rows)."""
    table, column = event_source(store, task.data.events)
    first = store.table(table).aggregate(first=store.table(table)[column].min()).execute()["first"].iloc[0]
    start = start or (pd.Timestamp(first) + pd.offsets.MonthBegin(1)).date()
    return resolve_cutoffs(as_of, "monthly", start, as_of)


def load_task_data(store: FeatureStore, spec: TaskSpec, config: TaskConfig) -> TaskData:
    """Load a task's labelled rows: a feature view built at every month end, or an imported task table.

    View tasks are materialised in the feature store so that the model's lineage points at a stored version.
    """
    definition = spec.definition or get_task(spec.name, store)
    if spec.kind == "view":
        as_of = config.as_of or latest_event(store, definition.data.events)
        cutoffs = task_cutoffs(store, definition, as_of, config.start)
        built = build_view(store, spec.source, as_of, cutoffs, config=ViewConfig(horizon_days=config.horizon_days),
                           threads=config.threads)
        materialize(store, built)
        frame = built.frame[built.frame[spec.label].notna()].reset_index(drop=True)
        # Columns of unavailable groups are missing everywhere: nothing to learn from, so not model features.
        empty = {c for g in built.unavailable for c in g["columns"]}
        spec.numeric = [c for c in spec.numeric if c not in empty]
        spec.categorical = [c for c in spec.categorical if c not in empty]
        features = spec.features
        spec.categorical = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c].dtype)
                            and not pd.api.types.is_bool_dtype(frame[c].dtype)]
        spec.numeric = [c for c in features if c not in spec.categorical]
        outcomes = None
        if definition.outcomes is not None and store.has_table(definition.outcomes.table):
            known = definition.outcomes
            outcomes = store.table(known.table).select(known.id_column, known.time_column, known.column).execute()
        oracle = _oracle(config, definition)
        window = f"{frame['cutoff'].min():%Y-%m-%d}..{frame['cutoff'].max():%Y-%m-%d}" if len(frame) else ""
        recent = built.frame[built.frame["cutoff"] == built.frame["cutoff"].max()].reset_index(drop=True)
        return TaskData(spec, frame, built.version, built.snapshot, window, outcomes, oracle, len(built.frame), recent,
                        built.unavailable)
    table = store.table(spec.source)
    frame = table.execute()
    order = "source_row" if "source_row" in frame.columns else "row_id"
    frame = frame.sort_values(order, kind="stable").reset_index(drop=True)
    frame = frame[frame["label"].notna()].reset_index(drop=True)
    snapshot = snapshot_hash(store)
    window = ""
    if spec.timed:
        window = f"{frame['event_time'].min():%Y-%m-%d}..{frame['event_time'].max():%Y-%m-%d}"
    return TaskData(spec, frame, f"{spec.source}@{snapshot[:16]}", snapshot, window, source_rows=len(frame))


def _oracle(config: TaskConfig, task: Task) -> pd.DataFrame | None:
    """Ground-truth probabilities on the simulator; ``None`` off it (no ground_truth configured or present)."""
    if not config.ground_truth or task.oracle is None:
        return None
    path = Path(config.ground_truth) / task.oracle.file
    if not path.is_file():
        return None
    truth = pd.read_parquet(path)
    return truth.rename(columns={"month_end": "cutoff", task.oracle.column: "oracle"})[
        [task.oracle.id_column, "cutoff", "oracle"]]



"""The task registry: every kind of model salesml trains and every task of each kind, declared once.

A **kind** says how its models go through the loop: its typed training config, its pure trainer, the metrics it
is judged by (which one the gate compares by default, and in which direction), its artifact format and loader,
its MLflow pyfunc, its serving endpoint with request and response schemas and scoring function, the fields of
its inference-log records, and the audit checks that apply to it. A **task** says what one model learns from:
its kind, its data (a feature view or an imported task table, the entity id, the time column, the label, the
table whose owner column scopes a record) and its optional facts (realised outcomes for early warning, a minimum
of outcomes, a baseline, simulator ground truth).

Training, tracking, the gate, serving, batch scoring, the inference log, the dashboard and the CLI read these
definitions; they do not branch on task names. Adding a kind (demand, segments, value, pricing) means adding a
``Kind`` and its tasks here.

Parts that live in later stages (the pyfunc file, serving schemas and scoring functions) are named by reference
(``module:attribute``) and resolved by the stage that uses them, so the dependency arrows of DESIGN.md hold:
training never imports experiments, monitoring or serving.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from features.store import FeatureStore

#: The kinds salesml knows, in the order of the roadmap; only those in ``KINDS`` are implemented.
KIND_NAMES = ("risk", "demand", "segments", "value", "pricing")
#: The audit checks the gate knows (``monitoring.gate`` implements each).
CHECK_NAMES = ("performance", "fairness", "proxies", "drift", "explanations", "baselines", "intervals",
               "monotone_price", "calibration", "stability")
#: The checks of risk models.
RISK_CHECKS = ("performance", "fairness", "proxies", "drift", "explanations")


class UnknownTaskError(ValueError):
    """A task or kind name the registry does not know (the message lists the known ones)."""


@dataclass(frozen=True)
class Metric:
    """A figure a kind's models are judged by.

    Attributes:
        name: as the policy and MLflow spell it (``roc_auc``).
        higher_is_better: the direction the gate compares in.
        description: one line for reports and ``--help``.
        compute: ``(y, prediction) -> value``.
    """

    name: str
    higher_is_better: bool
    description: str
    compute: Callable[[np.ndarray, np.ndarray], float]

    def improvement(self, candidate: float, champion: float) -> float:
        """How much better the candidate is than the champion (negative: worse), whatever the direction."""
        return candidate - champion if self.higher_is_better else champion - candidate

    def meets(self, value: float, bound: float) -> bool:
        """Whether ``value`` is on the good side of ``bound`` (a floor, or a ceiling for lower-is-better)."""
        return value >= bound if self.higher_is_better else value <= bound


def roc_auc_or_nan(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, or NaN when the rows hold a single class (a small group in an audit window)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=int)
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def _pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, dtype=int)
    return float(average_precision_score(y, p)) if y.sum() > 0 else float("nan")


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(np.asarray(y, dtype=int), np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=float) - np.asarray(y, dtype=float)) ** 2))


@dataclass(frozen=True)
class Serving:
    """How a kind is served.

    Attributes:
        endpoint: the path of its scoring endpoint.
        legacy_endpoints: older paths kept as documented aliases.
        request_schema, response_schema: ``module:attribute`` of the pydantic models (in ``serving``).
        score: ``module:attribute`` of the scoring function that takes the model as an argument.
        id_fields: record fields that name an entity of the kind's tasks.
        log_fields: the result fields the inference log keeps in columns of their own (the rest go in ``outputs``).
        prediction: the result field that is the model's figure (monitoring compares it with outcomes).
    """

    endpoint: str
    request_schema: str
    response_schema: str
    score: str
    prediction: str
    legacy_endpoints: tuple[str, ...] = ()
    log_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Kind:
    """A kind of model and how it goes through the loop.

    ``config``, ``trainer``, ``artifact_loader`` and ``tracked_run`` are ``module:attribute`` references (the typed
    config, the pure trainer, the artifact loader ``(folder, expected digests) -> model``, and the MLflow-tracked
    pipeline that wraps the trainer and registers a version); ``pyfunc`` is the models-from-code file in
    ``experiments/``; ``artifact_file`` is the file that marks the artifact's folder.
    """

    name: str
    description: str
    config: str
    trainer: str
    metrics: Mapping[str, Metric]
    gate_metric: str
    artifact_format: str
    artifact_loader: str
    pyfunc: str
    tracked_run: str
    serving: Serving
    checks: tuple[str, ...]
    artifact_file: str = "model.json"

    def metric(self, name: str | None = None) -> Metric:
        """A metric of this kind by name (the gate's default when ``None``).

        Raises:
            UnknownTaskError: naming the kind's metrics.
        """
        name = name or self.gate_metric
        if name not in self.metrics:
            raise UnknownTaskError(f"unknown metric {name!r} for {self.name} models; known: "
                                   f"{', '.join(self.metrics)}")
        return self.metrics[name]


@dataclass(frozen=True)
class Outcomes:
    """Where a task's realised outcomes are (deals closed won or lost), for early warning and outcome counts."""

    table: str
    id_column: str
    time_column: str
    column: str
    positive: str
    negative: str


@dataclass(frozen=True)
class Oracle:
    """Simulator ground truth of a task: a file in the ``ground_truth`` folder, its id and probability columns."""

    file: str
    id_column: str
    column: str


@dataclass(frozen=True)
class Data:
    """What a task learns from.

    Attributes:
        source: ``view`` (a point-in-time feature view built at every month end) or ``table`` (an imported task
            table).
        name: the view or task table.
        id_column: the entity id a record is scored by.
        label: the label column (``{h}`` is the horizon in days).
        time_column: the time a row is as of (``None``: untimed rows, split at random).
        entity: what a row is, for people (``opportunity``, ``account``, ``record``).
        events: the (table, time column) pairs whose newest row is the default as-of date: the first the store
            holds with rows (a CRM export without activities falls back to the deals' creation dates).
        owners: the table holding ``id_column`` and ``owner_rep_id``, whose owner scopes a record.
    """

    source: Literal["view", "table"]
    name: str
    id_column: str
    label: str
    time_column: str | None
    entity: str
    events: tuple[tuple[str, str], ...] = ()
    owners: str | None = None


@dataclass(frozen=True)
class Task:
    """A task: its kind, its data and its optional facts."""

    name: str
    kind: str
    data: Data
    description: str
    outcomes: Outcomes | None = None
    min_outcomes: int | None = None
    baseline: str | None = None
    oracle: Oracle | None = None
    declared: bool = True

    @property
    def model_name(self) -> str:
        """The registered model: ``<kind>.<task>``."""
        return model_name(self.kind, self.name)

    def definition(self) -> Kind:
        """The task's kind."""
        return get_kind(self.kind)


#: Salesforce documents 200 won and 200 lost deals as the minimum for opportunity scoring.
MIN_DEALS_PER_OUTCOME = 200

RISK = Kind(
    name="risk",
    description="a calibrated probability that a deal is lost or a customer churns, with reasons and actions",
    config="training.tasks:RiskConfig",
    trainer="training.risk:train_risk_model",
    metrics={m.name: m for m in (
        Metric("roc_auc", True, "ROC AUC: how well the score ranks positives above negatives", roc_auc_or_nan),
        Metric("pr_auc", True, "PR AUC (average precision): ranking quality where positives are rare", _pr_auc),
        Metric("log_loss", False, "log loss of the calibrated probability", _log_loss),
        Metric("brier", False, "Brier score of the calibrated probability", _brier),
    )},
    gate_metric="roc_auc",
    artifact_format="LightGBM text or XGBoost JSON booster, preprocessing and calibrator as JSON",
    artifact_loader="training.models:load_artifact",
    pyfunc="pyfunc_risk.py",
    tracked_run="experiments.risk_run:run_risk_training",
    serving=Serving(endpoint="/risk/score", legacy_endpoints=("/churn/score",),
                    request_schema="serving.schemas:ScoreRequest", response_schema="serving.schemas:ScoreResponse",
                    score="serving.predict:score_request", prediction="probability",
                    log_fields=("probability", "risk_band", "reasons", "actions")),
    checks=RISK_CHECKS,
)


def _wape(y: np.ndarray, yhat: np.ndarray) -> float:
    from training.demand import wape

    return wape(y, yhat)


def _abs_bias(y: np.ndarray, yhat: np.ndarray) -> float:
    from training.demand import bias

    return abs(bias(y, yhat))


DEMAND = Kind(
    name="demand",
    description="units (or revenue) per series and period ahead, p10 / p50 / p90, recomputed for what-if prices",
    config="training.demand:DemandConfig",
    trainer="training.demand:train_demand_model",
    metrics={m.name: m for m in (
        Metric("wape", False, "WAPE: sum of absolute errors over the sum of actuals, pooled over series", _wape),
        Metric("abs_bias", False, "absolute forecast bias: |sum of errors| over the sum of actuals", _abs_bias),
    )},
    gate_metric="wape",
    artifact_format="mlforecast features rebuilt from history.parquet; LightGBM text or XGBoost JSON booster; "
                    "price references and conformal quantiles as JSON",
    artifact_loader="training.demand:load_demand_artifact",
    pyfunc="pyfunc_demand.py",
    tracked_run="experiments.demand_run:run_demand_training",
    serving=Serving(endpoint="/demand/forecast", request_schema="serving.schemas:ForecastRequest",
                    response_schema="serving.schemas:ForecastResponse", score="serving.demand:forecast_request",
                    prediction="p50", log_fields=("p10", "p50", "p90")),
    checks=("performance", "baselines", "intervals", "drift", "explanations", "monotone_price"),
    artifact_file="demand.json",
)

def _mae(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y, dtype=float) - np.asarray(yhat, dtype=float))))


def _spearman(y: np.ndarray, yhat: np.ndarray) -> float:
    from training.value import spearman

    return spearman(y, yhat)


def _top20(y: np.ndarray, yhat: np.ndarray) -> float:
    from training.value import top_share

    return top_share(y, yhat, 0.2)


VALUE = Kind(
    name="value",
    description="expected purchases, spend and discounted lifetime value per account, with P(alive) and a band",
    config="training.value:ValueConfig",
    trainer="training.value:train_value_model",
    metrics={m.name: m for m in (
        Metric("wape", False, "sum of absolute errors of the predicted value of the next horizon over the sum of "
                              "realised value", _wape),
        Metric("mae", False, "mean absolute error of the predicted value of the next horizon", _mae),
        Metric("spearman", True, "Spearman rank correlation of predicted and realised value", _spearman),
        Metric("top20_capture", True, "share of the realised value held by the top 20% of accounts by prediction",
               _top20),
    )},
    gate_metric="wape",
    artifact_format="BG/NBD and Gamma-Gamma parameters as JSON, account summaries as Parquet; with a booster, "
                    "LightGBM text or XGBoost JSON and the accounts' features as Parquet",
    artifact_loader="training.value:load_value_artifact",
    pyfunc="pyfunc_value.py",
    tracked_run="experiments.value_run:run_value_training",
    serving=Serving(endpoint="/value/predict", request_schema="serving.schemas:ValueRequest",
                    response_schema="serving.schemas:ValueResponse", score="serving.value:predict_value_request",
                    prediction="expected_value", log_fields=("expected_value", "ltv", "p_alive", "value_band")),
    checks=("performance", "calibration", "drift"),
    artifact_file="value.json",
)

def _adjusted_rand(labels: np.ndarray, other: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(labels), np.asarray(other)))


SEGMENTS = Kind(
    name="segments",
    description="each customer's segment (HDBSCAN on the customer profile), its name, membership strength and "
                "value, with profiles and month-to-month migration",
    config="training.segments:SegmentsConfig",
    trainer="training.segments:train_segments_model",
    metrics={m.name: m for m in (
        Metric("ari", True, "adjusted Rand index between two labellings of the same accounts (1: the same "
                            "segments)", _adjusted_rand),
    )},
    gate_metric="ari",
    artifact_format="scaler, names and settings as JSON; assignments, profiles and migration as Parquet; the "
                    "HDBSCAN clusterer pickled, opened only after its SHA-256 matches the registry's tag",
    artifact_loader="training.segments:load_segments_artifact",
    pyfunc="pyfunc_segments.py",
    tracked_run="experiments.segments_run:run_segments_training",
    serving=Serving(endpoint="/segments/assign", request_schema="serving.schemas:SegmentsRequest",
                    response_schema="serving.schemas:SegmentsResponse", score="serving.segments:assign_request",
                    prediction="segment", log_fields=("segment", "name", "strength")),
    checks=("stability", "proxies", "drift"),
    artifact_file="segments.json",
)

KINDS: dict[str, Kind] = {RISK.name: RISK, DEMAND.name: DEMAND, VALUE.name: VALUE, SEGMENTS.name: SEGMENTS}

TASKS: dict[str, Task] = {t.name: t for t in (
    Task("opportunity_loss", "risk",
         Data("view", "opportunity", "opportunity_id", "label_lost_{h}d", "cutoff", "opportunity",
              events=(("activities", "occurred_at"), ("opportunities", "created_at")), owners="opportunities"),
         "an open deal is lost within the horizon",
         outcomes=Outcomes("opportunities", "opportunity_id", "closed_at", "outcome", "lost", "won"),
         min_outcomes=MIN_DEALS_PER_OUTCOME, baseline="stage",
         oracle=Oracle("opportunity_loss_probability.parquet", "opportunity_id", "p_loss_90d")),
    Task("customer_churn", "risk",
         Data("view", "customer", "account_id", "label_churn_{h}d", "cutoff", "account",
              events=(("orders", "order_date"),), owners="accounts"),
         "an active customer places no order within the horizon",
         oracle=Oracle("customer_churn_probability.parquet", "account_id", "p_no_order_90d")),
    Task("customer_value", "value",
         Data("view", "customer", "account_id", "label_value_next_{h}d", "cutoff", "account",
              events=(("orders", "order_date"),), owners="accounts"),
         "what each customer will buy: purchases, spend, P(alive) and discounted lifetime value"),
    Task("customer_segments", "segments",
         Data("view", "customer", "account_id", "", "cutoff", "account", events=(("orders", "order_date"),),
              owners="accounts"),
         "which group each active customer belongs to (high-value loyal, price-sensitive, at risk, ...)",
         oracle=Oracle("account_segments.parquet", "account_id", "segment")),
    Task("product_demand", "demand",
         Data("view", "product_week", "product_id", "units", "week_start", "product",
              events=(("orders", "order_date"),)),
         "units of each product sold per week, and how they move with its price",
         oracle=Oracle("product_elasticities.parquet", "product_id", "elasticity")),
    Task("sales_periods", "demand",
         Data("table", "sales_periods", "series_id", "units", "period_start", "series",
              events=(("sales_periods", "period_start"),)),
         "units (or revenue) of each imported sales series per period (Walmart stores, retail products)"),
)}


def model_name(kind: str, task: str) -> str:
    """The registered name of a task's models: ``<kind>.<task>``."""
    return f"{kind}.{task}"


#: Registered names before the registry: ``churn.<task>`` was a risk model.
LEGACY_PREFIXES = {"churn": "risk"}


def canonical_model_name(name: str) -> str:
    """A registered name in today's spelling: ``churn.<task>`` (the old name of risk models) is ``risk.<task>``."""
    prefix, _, task = name.partition(".")
    return model_name(LEGACY_PREFIXES[prefix], task) if prefix in LEGACY_PREFIXES and task else name


def get_kind(name: str) -> Kind:
    """A kind by name.

    Raises:
        UnknownTaskError: naming the known kinds (and saying when a kind is planned but not built yet).
    """
    if name in KINDS:
        return KINDS[name]
    planned = f" ({name} models are planned, not built yet)" if name in KIND_NAMES else ""
    raise UnknownTaskError(f"unknown kind {name!r}{planned}; known: {', '.join(KINDS)}")


def imported_task(name: str, spec: Mapping) -> Task:
    """The definition of a task table imported from a dataset or a mapping (a labelled binary outcome: risk)."""
    return Task(name, spec.get("kind", "risk"),
                Data("table", spec["table"], "row_id", "label", "event_time" if spec.get("timestamp") else None,
                     "record"),
                f"imported task table {spec['table']}", declared=False)


def get_task(name: str, store: FeatureStore | None = None) -> Task:
    """A declared task, or a task table imported into ``store``.

    Raises:
        UnknownTaskError: naming the known tasks.
    """
    if name in TASKS:
        return TASKS[name]
    spec = store.task_spec(name) if store is not None else None
    if spec is None:
        known = ", ".join([*TASKS, *(store.tasks() if store is not None else [])])
        raise UnknownTaskError(f"unknown task {name!r}; known: {known}. Import a dataset or a mapped file first.")
    return imported_task(name, spec)


def tasks_of_kind(kind: str) -> list[Task]:
    """The declared tasks of a kind."""
    return [t for t in TASKS.values() if t.kind == kind]


def resolve(reference: str) -> object:
    """The object a ``module:attribute`` reference names (imported on first use)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass
class TaskCatalogue:
    """Every task a store can train: the declared ones and its imported task tables (for listings)."""

    tasks: list[Task] = field(default_factory=list)

    @classmethod
    def of(cls, store: FeatureStore | None) -> TaskCatalogue:
        """The catalogue of a store (declared tasks only without one)."""
        tasks = list(TASKS.values())
        if store is not None:
            tasks += [imported_task(n, store.task_spec(n)) for n in store.tasks()]
        return cls(tasks)

    def to_dicts(self) -> list[dict]:
        """One row per task: name, kind, model, data, entity, description."""
        return [{"task": t.name, "kind": t.kind, "model": t.model_name, "source": f"{t.data.source} {t.data.name}",
                 "entity": t.data.entity, "description": t.description} for t in self.tasks]

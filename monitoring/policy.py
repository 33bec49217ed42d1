"""The promotion policy, parsed into typed models: which checks run for a task, their thresholds, and whether a
failure blocks or asks for review.

Read from ``monitoring/policy.yaml`` (or a file given on the command line). The ``default`` section applies to
every task, a ``kinds.<kind>`` section to the tasks of a kind, and a ``tasks.<task>`` section to one task; each
overrides the one before it key by key. The checks a kind allows come from the task registry, and so do the
metrics a performance check may name: an unknown check, metric or setting is an error when the policy loads,
naming the file and the place. A check that does not apply to a task is declared so with the reason
(``not_applicable: "..."``), never silently left out.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training.registry import CHECK_NAMES, TASKS, Kind, UnknownTaskError, get_kind

DEFAULT_POLICY = Path(__file__).resolve().parent / "policy.yaml"
LEVELS = ("pass", "review", "fail")
Severity = Literal["fail", "review"]


class PolicyError(ValueError):
    """A policy file that cannot be used (the message names the file and the setting)."""


class CheckPolicy(BaseModel):
    """Settings every check has."""

    model_config = ConfigDict(extra="forbid")
    not_applicable: str | None = Field(None, description="Why this check does not apply to the task (the report "
                                       "says so instead of running it).")
    on_fail: Severity = "fail"


class PerformancePolicy(CheckPolicy):
    """Candidate against the champion on the same evaluation rows."""

    metric: str | None = Field(None, description="A metric of the task's kind (default: the kind's gate metric).")
    min_value: float = Field(0.6, description="Floor (a ceiling for metrics where lower is better).")
    max_degradation: float = Field(0.01, ge=0, description="How much worse than the champion the candidate may be.")
    min_improvement: float = Field(0.0, description="Needed to replace the champion without review.")


class DemographicParityPolicy(BaseModel):
    """Parity of selection rates: always reported; it gates only where the task asks for parity of outcomes."""

    model_config = ConfigDict(extra="forbid")
    gate: bool = False
    min_ratio: float = Field(0.8, gt=0, le=1, description="The four-fifths rule.")
    reason: str = Field("", description="Why this task needs parity of outcomes (required when gate is true).")

    @model_validator(mode="after")
    def _reason_given(self) -> DemographicParityPolicy:
        if self.gate and not self.reason.strip():
            raise ValueError("demographic parity gates only with the reason the task needs parity of outcomes "
                             "(demographic_parity.reason)")
        return self


class AcknowledgedProxy(BaseModel):
    """A feature known to be associated with a sensitive attribute, reviewed and accepted."""

    model_config = ConfigDict(extra="forbid")
    feature: str
    attribute: str
    reason: str = Field(min_length=1)
    by: str = Field(min_length=1, description="Who acknowledged it.")


class FairnessPolicy(CheckPolicy):
    """Fairness of a risk model per sensitive attribute and group, on the audit window's realised outcomes."""

    attributes: list[str] | None = Field(None, description="Sensitive attributes (default: the task's own).")
    min_group_size: int = Field(100, ge=1, description="Smaller groups are reported, not judged.")
    significance: float = Field(0.05, gt=0, lt=1, description="A gap must also be unlikely by chance.")
    calibration_tolerance: float = Field(0.05, gt=0, description="Largest |mean predicted - observed rate| of a "
                                         "group.")
    max_equalized_odds_difference: float = Field(0.10, gt=0, description="Largest gap between groups in the TPR "
                                                 "or FPR the model adds beyond each group's scores recalibrated to "
                                                 "its own outcomes.")
    bootstrap_rounds: int = Field(200, ge=20, description="Bootstrap draws over entities for the standard errors "
                                  "of the error-rate criterion.")
    amplification_tolerance: float = Field(0.10, gt=0, description="How far the predicted-risk ratio of two "
                                           "groups may fall below their observed outcome-rate ratio.")
    demographic_parity: DemographicParityPolicy = Field(default_factory=DemographicParityPolicy)
    proxy_threshold: float = Field(0.5, gt=0, le=1, description="Cramer's V / correlation ratio of a feature with "
                                   "an attribute above which it is a proxy.")
    acknowledged_proxies: list[AcknowledgedProxy] = Field(default_factory=list)
    proxy_on_fail: Severity = "review"
    offer_mitigation: bool = Field(True, description="On failure, register a ThresholdOptimizer variant for the "
                                   "criterion that failed.")

    @model_validator(mode="before")
    @classmethod
    def _older_keys(cls, data: object) -> object:
        # Policies written before demographic parity stopped gating by default named its ratio at the top.
        if isinstance(data, dict) and "min_demographic_parity_ratio" in data:
            data = dict(data)
            parity = dict(data.get("demographic_parity") or {})
            parity.setdefault("min_ratio", data.pop("min_demographic_parity_ratio"))
            data["demographic_parity"] = parity
        return data


class DriftPolicy(CheckPolicy):
    """Data drift (training reference vs recent data) and prediction drift (champion vs candidate)."""

    on_fail: Severity = "review"
    max_drifted_share: float = Field(0.3, ge=0, le=1)
    prediction_drift: Severity = "review"
    sample_rows: int = Field(50_000, ge=100, description="Rows per side at most (Evidently slows down on large "
                             "frames).")
    production_days: int = Field(30, ge=1)
    min_production_rows: int = Field(200, ge=1)


class ExplanationsPolicy(CheckPolicy):
    """SHAP importance and monotone expectations."""

    on_fail: Severity = "review"
    monotone: dict[str, Literal["increasing", "decreasing"]] = Field(default_factory=dict)
    max_violation_share: float = Field(0.05, ge=0, le=1)


class BaselinesPolicy(CheckPolicy):
    """A demand model against the statsforecast baselines of its own run, on the same test windows."""

    max_ratio: float = Field(1.0, gt=0, description="Largest candidate WAPE / best baseline WAPE.")


class IntervalsPolicy(CheckPolicy):
    """Coverage of the p10-p90 (80%) interval on the test windows."""

    on_fail: Severity = "review"
    min_coverage: float = Field(0.75, ge=0, le=1)
    max_coverage: float = Field(0.85, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> IntervalsPolicy:
        if self.min_coverage > self.max_coverage:
            raise ValueError("min_coverage is above max_coverage")
        return self


class MonotonePricePolicy(CheckPolicy):
    """Demand never rises with the product's own price: forecasts along higher price paths, per series."""

    price_factors: list[float] = Field(default_factory=lambda: [0.8, 0.9, 1.0, 1.1, 1.25], min_length=2,
                                       description="Price paths tried, as multiples of the last price.")
    max_violation_share: float = Field(0.0, ge=0, le=1, description="Share of series and steps where a higher "
                                       "price raises p50.")


class ProxiesPolicy(CheckPolicy):
    """Association of what a model outputs or reads with each sensitive attribute, judged on its own (segments:
    Cramer's V between segment membership and the attribute). Risk models judge proxies with their fairness
    section's settings instead."""

    on_fail: Severity = "review"
    attributes: list[str] | None = Field(None, description="Sensitive attributes (default: the task's own).")
    proxy_threshold: float = Field(0.5, gt=0, le=1, description="Cramer's V above which the segmentation proxies "
                                   "the attribute.")
    acknowledged_proxies: list[AcknowledgedProxy] = Field(default_factory=list)

    @property
    def proxy_on_fail(self) -> str:
        """The severity ``audit_proxies`` reads."""
        return self.on_fail


class StabilityPolicy(CheckPolicy):
    """A segmentation's stability under resampling, and its density-based validity against the champion's."""

    on_fail: Severity = "review"
    min_bootstrap_ari: float = Field(0.85, ge=0, le=1, description="Mean ARI of bootstrap refits against the "
                                     "full model's segments.")
    max_noise_share: float = Field(0.15, ge=0, le=1, description="Largest share of accounts left unassigned.")
    max_dbcv_degradation: float = Field(0.05, ge=0, description="How much lower than the champion's the DBCV may "
                                        "be, both computed on the candidate's accounts.")


class CalibrationPolicy(CheckPolicy):
    """A value model's expected repeat purchases against the actual ones in its run's holdout."""

    on_fail: Severity = "review"
    max_total_error: float = Field(0.15, gt=0, description="Largest |expected - actual| / actual of the holdout's "
                                   "repeat purchases summed over accounts.")
    max_group_error: float = Field(0.3, gt=0, description="Largest |expected - actual| / actual per "
                                   "calibration-period purchase count, in groups with at least "
                                   "min_group_purchases actual purchases.")
    min_group_purchases: int = Field(50, ge=1, description="Groups with fewer actual holdout purchases are "
                                     "reported, not judged: their relative error is mostly chance.")


class MonitoringPolicy(BaseModel):
    """What production monitoring alerts on (``salesml monitor``), and whether an alert retrains early."""

    model_config = ConfigDict(extra="forbid")
    metric: str | None = Field(None, description="The live metric judged (default: the kind's: roc_auc, wape, "
                               "wape, migration_share).")
    min_outcomes: int = Field(100, ge=1, description="Months with fewer labelled scores are reported, not judged.")
    max_degradation: float = Field(0.05, ge=0, description="How far a live metric where higher is better (ROC AUC) "
                                   "may fall below its training-time value.")
    max_relative_degradation: float = Field(0.10, ge=0, description="How far a live metric where lower is better "
                                            "(WAPE) may rise above its training-time value, relative to it.")
    max_calibration_error: float = Field(0.10, gt=0, description="Largest expected calibration error of live risk "
                                         "scores (or of P(alive) against an order in the horizon).")
    min_coverage: float = Field(0.70, ge=0, le=1, description="Demand: least live coverage of the 80% interval.")
    max_coverage: float = Field(0.90, ge=0, le=1, description="Demand: most live coverage of the 80% interval.")
    max_drifted_share: float = Field(0.30, ge=0, le=1, description="Share of features drifted from the champion's "
                                     "training reference above which drift alerts.")
    max_migration_share: float = Field(0.30, ge=0, le=1, description="Segments: share of accounts changing segment "
                                       "from one month to the next above which it alerts.")
    window_days: int = Field(30, ge=1, description="Days of logged scores the drift is computed on.")
    drift_reference: Literal["newest_month", "training"] = Field(
        "newest_month", description="What drift compares with: the newest month the champion was trained on (risk; "
        "features that trend with time do not alarm), or its sampled training rows.")
    drift_segments: list[str] = Field(default_factory=lambda: ["region"], description="Columns each of whose "
                                      "values gets its own drift figure: a change confined to one region alerts "
                                      "even when it moves too few rows to shift the whole population.")
    min_segment_rows: int = Field(100, ge=10, description="A segment's drift is computed when both sides hold at "
                                  "least this many rows.")
    early_outcome_days: int = Field(21, ge=1, description="Risk: scores at least this many days old whose horizon "
                                    "has not passed are judged on the losses landed so far, by segment "
                                    "(drift_segments).")
    max_early_loss_ratio: float = Field(1.5, gt=1, description="Risk: a segment whose early losses exceed its "
                                        "share of the predicted risk by this factor alerts (early_outcomes) ...")
    early_outcome_significance: float = Field(0.01, gt=0, lt=1, description="... when so many losses are this "
                                              "unlikely by chance (binomial, Bonferroni over the segments).")
    retrain_on_alert: bool = Field(True, description="Retrain the task at once (reason: the alerts) when an alert "
                                   "fires, instead of waiting for the month's run.")


CHECK_POLICIES: dict[str, type[CheckPolicy]] = {"performance": PerformancePolicy, "fairness": FairnessPolicy,
                                                "drift": DriftPolicy, "explanations": ExplanationsPolicy,
                                                "baselines": BaselinesPolicy, "intervals": IntervalsPolicy,
                                                "monotone_price": MonotonePricePolicy,
                                                "calibration": CalibrationPolicy, "proxies": ProxiesPolicy,
                                                "stability": StabilityPolicy}
#: Checks that run as part of another check's section (proxies are judged with the fairness settings).
PART_OF = {"proxies": "fairness"}


class Policy(BaseModel):
    """The effective policy of one task."""

    model_config = ConfigDict(extra="forbid")
    task: str
    kind: str
    auto_promote: bool = False
    checks: dict[str, CheckPolicy]
    monitoring: MonitoringPolicy = Field(default_factory=MonitoringPolicy)

    def check(self, name: str) -> CheckPolicy | None:
        """A check's settings, or ``None`` when the policy does not run it (proxies without a section of their
        own are judged with the fairness settings)."""
        return self.checks.get(name) or self.checks.get(PART_OF.get(name, name))

    def running(self) -> list[str]:
        """The checks that run, in the gate's order (those declared not applicable are left out)."""
        out = []
        for name in CHECK_NAMES:
            section = self.check(name)
            if section is not None and section.not_applicable is None:
                out.append(name)
        return out

    def not_applicable(self) -> dict[str, str]:
        """Checks declared not applicable, with their reasons."""
        return {name: c.not_applicable for name, c in self.checks.items() if c.not_applicable is not None}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse(task: str, kind: Kind, merged: dict, where: str) -> Policy:
    checks_in = merged.get("checks") or {}
    if not isinstance(checks_in, dict):
        raise PolicyError(f"{where}: checks must be a mapping of check name to settings")
    checks: dict[str, CheckPolicy] = {}
    for name, section in checks_in.items():
        if name not in CHECK_POLICIES:
            raise PolicyError(f"{where}: checks.{name}: unknown check; known: {', '.join(CHECK_POLICIES)}")
        declared_away = isinstance(section, dict) and section.get("not_applicable")
        if name not in kind.checks and not declared_away:
            raise PolicyError(f"{where}: checks.{name}: {kind.name} models have no {name} check (theirs: "
                              f"{', '.join(kind.checks)}); declare it `not_applicable` only where it could apply")
        try:
            checks[name] = CHECK_POLICIES[name].model_validate(section or {})
        except ValidationError as exc:
            problems = "; ".join(f"checks.{name}.{'.'.join(str(p) for p in e['loc']) or name}: {e['msg']}"
                                 f" (got {e.get('input')!r})" for e in exc.errors())
            raise PolicyError(f"{where}: {problems}") from None
    performance = checks.get("performance")
    if isinstance(performance, PerformancePolicy) and performance.not_applicable is None:
        try:
            kind.metric(performance.metric)
        except UnknownTaskError as exc:
            raise PolicyError(f"{where}: checks.performance.metric: {exc}") from None
    extra = set(merged) - {"checks", "auto_promote", "monitoring"}
    if extra:
        raise PolicyError(f"{where}: unknown setting(s) {', '.join(sorted(extra))}; known: auto_promote, checks, "
                          "monitoring")
    try:
        monitoring = MonitoringPolicy.model_validate(merged.get("monitoring") or {})
    except ValidationError as exc:
        problems = "; ".join(f"monitoring.{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                             for e in exc.errors())
        raise PolicyError(f"{where}: {problems}") from None
    if monitoring.metric is not None and monitoring.metric not in ("migration_share", "calibration_error"):
        try:
            kind.metric(monitoring.metric)
        except UnknownTaskError as exc:
            raise PolicyError(f"{where}: monitoring.metric: {exc}") from None
    return Policy(task=task, kind=kind.name, auto_promote=bool(merged.get("auto_promote", False)), checks=checks,
                  monitoring=monitoring)


def _read(path: Path) -> dict:
    if not path.is_file():
        raise PolicyError(f"policy file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or "default" not in data:
        raise PolicyError(f"{path}: the policy needs a `default` section")
    unknown = set(data) - {"default", "kinds", "tasks"}
    if unknown:
        raise PolicyError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; known: default, kinds, tasks")
    return data


def load_policy(task: str, path: Path | None = None, kind: str | None = None) -> Policy:
    """The effective policy of ``task``: default, then its kind's section, then its own, merged in that order.

    The whole file is validated, every kind and task section, so a mistake anywhere is found when any task's
    policy loads.

    Args:
        task: the task.
        path: the policy file (default ``monitoring/policy.yaml``).
        kind: the task's kind (default: the registry's, or risk for an imported task table).

    Raises:
        PolicyError: naming the file and the bad setting (an unknown check, metric or key, a bad value).
    """
    path = Path(path or DEFAULT_POLICY)
    data = _read(path)
    kinds = data.get("kinds") or {}
    tasks = data.get("tasks") or {}
    for name in kinds:
        try:
            get_kind(name)
        except UnknownTaskError as exc:
            raise PolicyError(f"{path}: kinds.{name}: {exc}") from None

    def effective(task_name: str, kind_name: str) -> Policy:
        merged = _merge(_merge(data["default"], kinds.get(kind_name) or {}), tasks.get(task_name) or {})
        where = f"{path}: tasks.{task_name}" if task_name in tasks else f"{path}: default"
        return _parse(task_name, get_kind(kind_name), merged, where)

    for name in tasks:
        effective(name, TASKS[name].kind if name in TASKS else "risk")
    return effective(task, kind or (TASKS[task].kind if task in TASKS else "risk"))


def worst(statuses: list[str]) -> str:
    """The most severe of pass / review / fail."""
    return max(statuses or ["pass"], key=LEVELS.index)


def gate_of(statuses: list[str]) -> str:
    """The gate of a set of check statuses: FAIL if any blocks, REVIEW if any needs a look, else PASS."""
    return worst(statuses).upper()

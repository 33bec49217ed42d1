"""Audit a candidate version and set its gate.

A pipeline over the registry: ``audit_version`` runs the checks the policy names (performance against the champion,
fairness, proxies, drift, explanations), stores the report and JSON as artifacts of the version (and under
``SALESML_HOME/reports``), writes a summary to its tags and appends the audit to ``SALESML_HOME/audit.log``.
Validators' decisions and the aliases are in ``monitoring.review``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.registered import get_alias, load_version_model
from experiments.registry import (
    CHAMPION,
    TAG_AUDITED_AT,
    TAG_GATE,
    TAG_REPORT,
    TAG_TASK,
    TAG_TRAINER,
    TAG_VARIANT_OF,
    TAG_WINDOW,
)
from experiments.risk_run import register_threshold_variant
from experiments.tracking import configure_mlflow
from features.production import recent_production_rows
from features.store import FeatureStore
from monitoring.audits import (
    CheckResult,
    audit_drift,
    audit_explanations,
    audit_fairness,
    audit_performance,
    audit_proxies,
)
from monitoring.policy import gate_of, load_policy
from monitoring.report import render_report
from monitoring.review import append_audit_log, now_iso, promote
from salesml.access import Principal
from salesml.settings import Settings
from training.models import GROUP_THRESHOLDS, alert_thresholds
from training.risk import split_rows
from training.tasks import RiskConfig, load_config, load_task_data, resolve_task, with_home

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def task_config(task: str) -> RiskConfig:
    """The training config of a task (its YAML when it exists)."""
    path = CONFIGS / f"{task}.yaml"
    return load_config(path if path.is_file() else None, task=task)


# ------------------------------------------------------------------------------------------------ audit


@dataclass
class AuditOutcome:
    """An audit's gate, checks, JSON and report path."""

    gate: str
    checks: list[CheckResult]
    result: dict
    report: Path


def _window_rows(frame: pd.DataFrame, window: str, time_column: str | None) -> pd.DataFrame:
    if not window or not time_column or ".." not in window:
        return frame.iloc[0:0]
    start, end = (pd.Timestamp(x) for x in window.split(".."))
    times = pd.to_datetime(frame[time_column])
    return frame[(times >= start) & (times <= end)]


def audit_version(settings: Settings, name: str, version: str, policy_path: Path | None = None,
                  config: RiskConfig | None = None) -> AuditOutcome:
    """Run every audit the policy names on a registered version and record the outcome.

    The candidate and the current champion are scored on the same latest labelled window (the task's test
    window on today's data). Drift compares the candidate's training rows with production data: the last
    ``production_days`` of the inference log when it holds at least ``min_production_rows`` records, else the most
    recent month in the feature store.

    Returns:
        The gate, the checks, the JSON result and the path of the HTML report.
    """
    client = configure_mlflow(settings)
    candidate, info = load_version_model(client, name, version)
    task = info.tags.get(TAG_TASK) or candidate.metadata.get("task")
    policy = load_policy(task, policy_path)
    config = with_home(config or task_config(task), settings.home)
    with FeatureStore.from_settings(settings) as store:
        spec = resolve_task(task, store, config)
        data = load_task_data(store, spec, config)
    split = split_rows(data, config)
    frame = data.frame
    window = frame.iloc[split.test]
    y = window[spec.label].astype(int).to_numpy()
    p_candidate = candidate.predict_proba(window)
    champion_info = get_alias(client, name, CHAMPION)
    champion = None
    if champion_info is not None and str(champion_info.version) != str(version):
        champion, _ = load_version_model(client, name, str(champion_info.version))
    p_champion = champion.predict_proba(window) if champion is not None else None

    checks: list[CheckResult] = []
    settings_checks = policy["checks"]
    if "performance" in settings_checks:
        checks.append(audit_performance(y, p_candidate, p_champion, settings_checks["performance"]))
    if "fairness" in settings_checks:
        fairness = settings_checks["fairness"]
        attributes = fairness.get("attributes") or spec.sensitive
        checks.append(audit_fairness(window, y, p_candidate, alert_thresholds(candidate, window),
                                     list(attributes), fairness, config.seed, spec.id_column))
        checks.append(audit_proxies(window, list(attributes), window[candidate.features], fairness))
    if "drift" in settings_checks:
        reference = _window_rows(frame, info.tags.get(TAG_WINDOW, ""), spec.time_column)
        if spec.timed:
            reference = reference if len(reference) else frame.iloc[split.train]
            current = data.recent if data.recent is not None and len(data.recent) else window
            source = "feature store: the latest month"
        else:
            reference, current = frame.iloc[split.train], window
            source = "held-out test split"
        drift_policy = settings_checks["drift"]
        logged = recent_production_rows(settings.logs_dir, task, int(drift_policy.get("production_days", 30)))
        missing = [c for c in candidate.features if c not in logged.columns]
        if len(logged) >= int(drift_policy.get("min_production_rows", 200)) and not missing:
            current = logged[candidate.features].reset_index(drop=True)
            source = (f"inference log: {len(logged)} scored records, {logged['time'].min():%Y-%m-%d} to "
                      f"{logged['time'].max():%Y-%m-%d}")
        elif len(logged):
            source += (f" (the inference log has {len(logged)} recent records, fewer than "
                       f"{drift_policy.get('min_production_rows', 200)}" + (f", and lacks {missing[:3]})" if missing
                                                                            else ")"))
        numeric = [c for c in candidate.features if c in candidate.preprocessor.numeric]
        categorical = [c for c in candidate.features if c in candidate.preprocessor.categorical]
        drift = audit_drift(reference, current, numeric, categorical,
                            candidate.predict_proba(current) if champion is not None else None,
                            champion.predict_proba(current) if champion is not None else None,
                            drift_policy, config.seed)
        drift.figures["current_source"] = source
        checks.append(drift)
    if "explanations" in settings_checks:
        explain = settings_checks["explanations"]
        checks.append(audit_explanations(candidate, window, explain.get("monotone") or {}, explain, config.seed))
    _offer_mitigation(settings, name, str(version), candidate, checks, policy, window)
    gate = gate_of([c.status for c in checks])
    context = {"task": task, "trainer": info.tags.get(TAG_TRAINER, ""), "training window": info.tags.get(TAG_WINDOW, ""),
               "audit window": f"{len(window)} labelled rows ({split.description.get('test', 'held-out test split')})",
               "champion": str(champion_info.version) if champion_info is not None else "none",
               "feature version": data.feature_version, "audited at": now_iso()}
    report_html = render_report(name, str(version), gate, checks, context)
    result = {"model": name, "version": str(version), "gate": gate, "checks": [c.to_dict() for c in checks]}
    folder = settings.home / "reports" / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / "audit.html"
    report.write_text(report_html)
    result["report"] = str(report)
    (folder / "audit.json").write_text(json.dumps(result, indent=1))
    client.log_artifact(info.run_id, str(report), f"audit/v{version}")
    client.log_artifact(info.run_id, str(folder / "audit.json"), f"audit/v{version}")
    tags = {TAG_GATE: gate, TAG_REPORT: str(report), TAG_AUDITED_AT: now_iso()}
    tags.update({f"salesml.audit.{c.name}": c.status for c in checks})
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    append_audit_log(settings, {"action": "audit", "model": name, "version": str(version), "gate": gate,
                                "checks": {c.name: c.status for c in checks}})
    if gate == "PASS" and policy.get("auto_promote"):
        result["promoted"] = promote(settings, name, str(version), Principal("policy:auto_promote",
                                                                             "model_validator", "all", ""))
    return AuditOutcome(gate, checks, result, report)


def _offer_mitigation(settings: Settings, name: str, version: str, candidate, checks: list[CheckResult],
                      policy: dict, window: pd.DataFrame) -> None:
    """When fairness fails, register the ThresholdOptimizer variant as a separate candidate (unless the policy
    says ``offer_mitigation: false``, or the candidate already is such a variant)."""
    fairness = next((c for c in checks if c.name == "fairness"), None)
    if fairness is None or fairness.status != "fail" or candidate.metadata.get(GROUP_THRESHOLDS):
        return
    mitigation = fairness.figures.get("mitigation") or {}
    if "thresholds" not in mitigation or not policy["checks"]["fairness"].get("offer_mitigation", True):
        return
    client = configure_mlflow(settings)
    earlier = sorted((v for v in client.search_model_versions(f"name='{name}'")
                      if v.tags.get(TAG_VARIANT_OF) == version), key=lambda v: int(v.version))
    if earlier:  # a re-audit offers the variant it offered before
        mitigation["candidate_version"] = str(earlier[0].version)
        fairness.reason += f"; its ThresholdOptimizer variant is version {earlier[0].version}"
        return
    variant = register_threshold_variant(settings, name, version, mitigation,
                                         window[candidate.features].head(5).reset_index(drop=True))
    mitigation["candidate_version"] = variant
    fairness.reason += (f"; a ThresholdOptimizer variant (one threshold per {mitigation['attribute']}) is offered "
                        f"as version {variant}: audit it with `salesml audit {name} {variant}`")
    append_audit_log(settings, {"action": "offer_mitigation", "model": name, "version": variant,
                                "variant_of": version, "attribute": mitigation["attribute"]})

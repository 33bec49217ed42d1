"""Audit a candidate version, gate it, record validators' decisions, and move the MLflow aliases.

Pipelines over the registry: ``audit_version`` runs the checks the policy names and stores the report and JSON as
artifacts of the version (and under ``SALESML_HOME/reports``), with a summary in its tags. ``review`` records an
approval or rejection by a model validator; ``promote`` and ``rollback`` move the ``champion`` and ``previous``
aliases. Every decision is appended to ``SALESML_HOME/audit.log`` and written to the version's tags.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from experiments.churn_run import register_threshold_variant
from experiments.registered import get_alias, get_version, load_version_model
from experiments.registry import (
    CHAMPION,
    PREVIOUS,
    TAG_AUDITED_AT,
    TAG_DECIDED_AT,
    TAG_DECIDED_BY,
    TAG_DECISION,
    TAG_DECISION_REASON,
    TAG_GATE,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_REPORT,
    TAG_TASK,
    TAG_TRAINER,
    TAG_VARIANT_OF,
    TAG_WINDOW,
)
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
from salesml.access import AccessError, Principal
from salesml.settings import Settings
from training.churn import split_rows
from training.models import GROUP_THRESHOLDS, alert_thresholds
from training.tasks import ChurnConfig, load_config, load_task_data, resolve_task, with_home

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


class GateError(PermissionError):
    """A review or promotion the rules do not allow (the message says which rule)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def append_audit_log(settings: Settings, entry: dict) -> None:
    """Append one decision to the append-only audit log (a JSON line, flushed to disk)."""
    settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": _now(), **entry}, sort_keys=True)
    with open(settings.audit_log, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_audit_log(settings: Settings) -> list[dict]:
    """Every entry of the audit log, oldest first."""
    if not settings.audit_log.exists():
        return []
    return [json.loads(line) for line in settings.audit_log.read_text().splitlines() if line.strip()]


def task_config(task: str) -> ChurnConfig:
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
                  config: ChurnConfig | None = None) -> AuditOutcome:
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
    with FeatureStore(settings.feature_store_path, threads=settings.threads) as store:
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
               "feature version": data.feature_version, "audited at": _now()}
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
    tags = {TAG_GATE: gate, TAG_REPORT: str(report), TAG_AUDITED_AT: _now()}
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


# ------------------------------------------------------------------------------------------------ review


def _require_validator(principal: Principal) -> None:
    if principal.role != "model_validator":
        raise AccessError(f"{principal.name} has role {principal.role}; only a model_validator may do this")


def review(settings: Settings, name: str, version: str, decision: str, reason: str, principal: Principal) -> dict:
    """Approve or reject an audited version.

    Raises:
        AccessError: when the principal is not a model validator.
        GateError: when a validator approves a version they trained, the version was not audited, or no reason is
            given.
    """
    if decision not in ("approve", "reject"):
        raise ValueError("decision must be approve or reject")
    _require_validator(principal)
    if not reason or not reason.strip():
        raise GateError("a decision needs a reason (--reason TEXT)")
    client = configure_mlflow(settings)
    info = get_version(client, name, version)
    gate = info.tags.get(TAG_GATE, "pending")
    if gate == "pending":
        raise GateError(f"{name} version {version} has not been audited: run `salesml audit {name} {version}` first")
    if decision == "approve" and info.tags.get(TAG_TRAINER) == principal.name:
        raise GateError(f"{principal.name} trained {name} version {version} and cannot approve it")
    at = _now()
    for key, value in {TAG_DECISION: "approved" if decision == "approve" else "rejected",
                       TAG_DECIDED_BY: principal.name, TAG_DECIDED_AT: at, TAG_DECISION_REASON: reason}.items():
        client.set_model_version_tag(name, str(version), key, value)
    entry = {"action": decision, "model": name, "version": str(version), "principal": principal.name,
             "role": principal.role, "reason": reason, "gate": gate}
    append_audit_log(settings, entry)
    return {**entry, "at": at}


def list_candidates(settings: Settings, prefix: str = "") -> list[dict]:
    """Every registered version with its gate, review decision and aliases, newest first."""
    client = configure_mlflow(settings)
    rows = []
    for model in client.search_registered_models():
        if prefix and not model.name.startswith(prefix):
            continue
        aliases = {str(v): k for k, v in (model.aliases or {}).items()}
        for v in client.search_model_versions(f"name='{model.name}'"):
            rows.append({"model": model.name, "version": str(v.version), "gate": v.tags.get(TAG_GATE, "pending"),
                         "decision": v.tags.get(TAG_DECISION), "trainer": v.tags.get(TAG_TRAINER),
                         "alias": aliases.get(str(v.version)), "report": v.tags.get(TAG_REPORT),
                         "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(
                             timespec="seconds")})
    return sorted(rows, key=lambda r: (r["model"], -int(r["version"])))


def show_audit(settings: Settings, name: str, version: str) -> dict:
    """The stored audit JSON of a version (with its review decision).

    Raises:
        GateError: when the version has not been audited.
    """
    client = configure_mlflow(settings)
    info = get_version(client, name, version)
    path = settings.home / "reports" / name / str(version) / "audit.json"
    if not path.is_file():
        try:
            path = Path(client.download_artifacts(info.run_id, f"audit/v{version}/audit.json",
                                                  tempfile.mkdtemp(prefix="salesml-audit-")))
        except Exception as exc:  # noqa: BLE001 - no artifact: not audited
            raise GateError(f"{name} version {version} has not been audited") from exc
    result = json.loads(path.read_text())
    result["decision"] = {"decision": info.tags.get(TAG_DECISION), "by": info.tags.get(TAG_DECIDED_BY),
                          "at": info.tags.get(TAG_DECIDED_AT), "reason": info.tags.get(TAG_DECISION_REASON)}
    return result


# ------------------------------------------------------------------------------------------------ promotion


def _between_tag_and_alias_steps() -> None:
    """A seam between promotion's two steps (tests inject a crash here)."""


def promote(settings: Settings, name: str, version: str, principal: Principal) -> dict:
    """Make a version the champion, moving the old champion to ``previous``.

    Allowed when the gate is PASS, or REVIEW with an approval. The version's tags are written first, then the
    aliases; each alias update is one registry write, so a reader sees the old champion or the new one, never
    none, and a crash between the steps leaves the champion unchanged (rerunning completes it).

    Raises:
        AccessError: when the principal is not a model validator.
        GateError: when the gate or the review does not allow it.
    """
    _require_validator(principal)
    client = configure_mlflow(settings)
    info = get_version(client, name, version)
    gate = info.tags.get(TAG_GATE, "pending")
    decision = info.tags.get(TAG_DECISION)
    if gate == "FAIL" or gate == "pending":
        raise GateError(f"{name} version {version} cannot be promoted: its gate is {gate}")
    if decision == "rejected":
        raise GateError(f"{name} version {version} was rejected by {info.tags.get(TAG_DECIDED_BY)}")
    if gate == "REVIEW" and decision != "approved":
        raise GateError(f"{name} version {version} needs a validator's approval first (gate REVIEW): "
                        f"salesml review approve {name} {version} --reason ...")
    current = get_alias(client, name, CHAMPION)
    if current is not None and str(current.version) == str(version):
        return {"model": name, "champion": str(version), "previous": _version_of(client, name, PREVIOUS),
                "changed": False}
    at = _now()
    client.set_model_version_tag(name, str(version), TAG_PROMOTED_BY, principal.name)
    client.set_model_version_tag(name, str(version), TAG_PROMOTED_AT, at)
    _between_tag_and_alias_steps()
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(current.version))
    client.set_registered_model_alias(name, CHAMPION, str(version))
    entry = {"action": "promote", "model": name, "version": str(version), "principal": principal.name,
             "role": principal.role, "previous": str(current.version) if current is not None else None, "gate": gate}
    append_audit_log(settings, entry)
    return {"model": name, "champion": str(version), "previous": entry["previous"], "changed": True}


def _version_of(client: MlflowClient, name: str, alias: str) -> str | None:
    found = get_alias(client, name, alias)
    return str(found.version) if found is not None else None


def rollback(settings: Settings, name: str, principal: Principal, reason: str = "") -> dict:
    """Restore the ``previous`` version as champion (the demoted one becomes ``previous``).

    Raises:
        GateError: when there is no previous version.
    """
    _require_validator(principal)
    client = configure_mlflow(settings)
    previous = get_alias(client, name, PREVIOUS)
    if previous is None:
        raise GateError(f"{name} has no previous champion to roll back to")
    current = get_alias(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, str(previous.version))
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(current.version))
    entry = {"action": "rollback", "model": name, "version": str(previous.version), "principal": principal.name,
             "role": principal.role, "demoted": str(current.version) if current is not None else None,
             "reason": reason}
    append_audit_log(settings, entry)
    return {"model": name, "champion": entry["version"], "previous": entry["demoted"]}


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

from experiments.registered import get_alias, load_evaluation, load_version_model, resolve_model_name
from experiments.registry import (
    CHAMPION,
    TAG_AUDITED_AT,
    TAG_FEATURE_VERSION,
    TAG_GATE,
    TAG_REPORT,
    TAG_TASK,
    TAG_TASK_KIND,
    TAG_TRAINER,
    TAG_VARIANT_OF,
    TAG_WINDOW,
)
from experiments.risk_run import register_threshold_variant
from experiments.tracking import configure_mlflow
from features.production import recent_production_rows
from monitoring.audits import (
    CheckResult,
    audit_drift,
    audit_explanations,
    audit_fairness,
    audit_performance,
    audit_proxies,
    fairness_against_champion,
)
from monitoring.policy import Policy, gate_of, load_policy
from monitoring.report import render_report
from monitoring.review import append_audit_log, now_iso, promote
from salesml.access import Principal
from salesml.settings import Settings
from training.models import GROUP_THRESHOLDS, alert_thresholds
from training.registry import TASKS, canonical_model_name, get_kind
from training.tasks import RiskConfig, load_config

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


def audit_version(settings: Settings, name: str, version: str, policy_path: Path | None = None,
                  config: RiskConfig | None = None) -> AuditOutcome:
    """Run every audit the policy names for the version's task and kind, and record the outcome.

    The candidate and the current champion are scored on the same rows: the evaluation window the candidate's
    training run logged (its test rows, with every column), read from the registry. Nothing is written to the
    feature store. Drift compares the run's training reference with production data: the last
    ``production_days`` of the inference log when it holds at least ``min_production_rows`` records, else the
    task's view at the store's latest data, built read-only (``latest_rows``).

    Raises:
        RegistryError: when the version does not exist or its run logged no evaluation data.
        PolicyError: when the policy file is invalid.

    Returns:
        The gate, the checks, the JSON result and the path of the HTML report.
    """
    client = configure_mlflow(settings)
    name = resolve_model_name(client, name)
    candidate, info = load_version_model(client, name, version)
    task = info.tags.get(TAG_TASK) or candidate.metadata.get("task")
    kind = get_kind(info.tags.get(TAG_TASK_KIND) or canonical_model_name(name).partition(".")[0])
    policy = load_policy(task, policy_path, kind.name)
    evaluation = load_evaluation(client, info)
    if kind.name == "demand":
        checks, audit_window = _demand_checks(settings, client, name, str(version), candidate, info, policy,
                                              evaluation, task)
    elif kind.name == "segments":
        checks, audit_window = _segments_checks(settings, client, name, str(version), candidate, info, policy,
                                                evaluation, task)
    elif kind.name == "value":
        checks, audit_window = _value_checks(settings, client, name, str(version), candidate, info, policy,
                                             evaluation, task)
    else:
        checks, audit_window = _risk_checks(settings, client, name, str(version), candidate, info, policy,
                                            evaluation, task, kind, config)
    gate = gate_of([c.status for c in checks])
    context = {"task": task, "kind": kind.name, "trainer": info.tags.get(TAG_TRAINER, ""),
               "training window": info.tags.get(TAG_WINDOW, ""),
               "audit window": audit_window["window"],
               "champion": audit_window["champion"], "feature version": info.tags.get(TAG_FEATURE_VERSION, ""),
               "audited at": now_iso()}
    context.update({f"{check} (not applicable)": why for check, why in policy.not_applicable().items()})
    report_html = render_report(name, str(version), gate, checks, context)
    result = {"model": name, "version": str(version), "gate": gate, "checks": [c.to_dict() for c in checks]}
    if policy.not_applicable():
        result["not_applicable"] = policy.not_applicable()
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
    if gate == "PASS" and policy.auto_promote:
        result["promoted"] = promote(settings, name, str(version), Principal("policy:auto_promote",
                                                                             "model_validator", "all", ""))
    return AuditOutcome(gate, checks, result, report)


def _risk_checks(settings: Settings, client, name: str, version: str, candidate, info, policy: Policy,
                 evaluation: dict, task: str, kind, config: RiskConfig | None) -> tuple[list[CheckResult], dict]:
    """The checks of a risk version on its run's evaluation window (and the audit context's window lines)."""
    config = config or task_config(task)
    window, split = evaluation["window"], evaluation["split"]
    meta = candidate.metadata
    label, entity, time_column = meta["label"], meta.get("id_column"), meta.get("time_column")
    y = window[label].astype(int).to_numpy()
    p_candidate = candidate.predict_proba(window)
    champion_info = get_alias(client, name, CHAMPION)
    champion, champion_note = None, "none"
    if champion_info is not None and str(champion_info.version) != str(version):
        champion, _ = load_version_model(client, name, str(champion_info.version))
        lacking = [f for f in champion.features if f not in window.columns]
        champion_note = str(champion_info.version)
        if lacking:  # a champion of other features cannot be scored on these rows
            champion_note += f" (not comparable: it reads {', '.join(lacking[:5])}, which the candidate's rows lack)"
            champion = None
    p_champion = champion.predict_proba(window) if champion is not None else None
    sensitive = list(meta.get("sensitive") or [])

    checks: list[CheckResult] = []
    running = policy.running()
    if "performance" in running:
        performance = policy.check("performance")
        checks.append(audit_performance(y, p_candidate, p_champion, performance, kind.metric(performance.metric)))
    fairness = policy.check("fairness")
    attributes = list((fairness.attributes if fairness is not None else None) or sensitive)
    if "fairness" in running:
        fair = audit_fairness(window, y, p_candidate, alert_thresholds(candidate, window), attributes, fairness,
                              config.seed, entity)
        if fair.status == "fail" and p_champion is not None:
            fair = fairness_against_champion(fair, audit_fairness(
                window, y, p_champion, alert_thresholds(champion, window), attributes, fairness, config.seed, entity))
        checks.append(fair)
    if "proxies" in running:
        checks.append(audit_proxies(window, attributes, window[candidate.features], fairness))
    if "drift" in running:
        drift_policy = policy.check("drift")
        reference = evaluation["reference"]
        if time_column:
            current, source = latest_rows(settings, task, evaluation["recent"], window)
        else:
            current, source = window, "held-out test rows"
        logged = recent_production_rows(settings.logs_dir, task, drift_policy.production_days)
        missing = [c for c in candidate.features if c not in logged.columns]
        if len(logged) >= drift_policy.min_production_rows and not missing:
            current = logged[candidate.features].reset_index(drop=True)
            source = (f"inference log: {len(logged)} scored records, {logged['time'].min():%Y-%m-%d} to "
                      f"{logged['time'].max():%Y-%m-%d}")
        elif len(logged):
            source += (f" (the inference log has {len(logged)} recent records, fewer than "
                       f"{drift_policy.min_production_rows}" + (f", and lacks {missing[:3]})" if missing else ")"))
        numeric = [c for c in candidate.features if c in candidate.preprocessor.numeric]
        categorical = [c for c in candidate.features if c in candidate.preprocessor.categorical]
        drift = audit_drift(reference, current, numeric, categorical,
                            candidate.predict_proba(current) if champion is not None else None,
                            champion.predict_proba(current) if champion is not None else None,
                            drift_policy, config.seed)
        drift.figures["current_source"] = source
        checks.append(drift)
    if "explanations" in running:
        explain = policy.check("explanations")
        checks.append(audit_explanations(candidate, window, explain.monotone, explain, config.seed))
    _offer_mitigation(settings, name, str(version), candidate, checks, policy, window)
    return checks, {"window": f"{len(window)} labelled rows logged by the training run "
                              f"({split.get('test', 'held-out test split')})", "champion": champion_note}


def _demand_checks(settings: Settings, client, name: str, version: str, candidate, info, policy: Policy,
                   evaluation: dict, task: str) -> tuple[list[CheckResult], dict]:
    """The checks of a demand version: against the champion on the latest test window, the baselines of its
    run, interval coverage, drift of the target and the inputs, explanations and the price response."""
    from monitoring.demand_audits import (
        audit_baselines,
        audit_demand_explanations,
        audit_intervals,
        audit_monotone_price,
    )

    window, reference, recent = evaluation["window"], evaluation["reference"], evaluation["recent"]
    metrics = client.get_run(info.run_id).data.metrics
    latest = window[window["origin"] == window["origin"].max()].reset_index(drop=True)
    origin = pd.Timestamp(latest["origin"].iloc[0])
    champion_info = get_alias(client, name, CHAMPION)
    champion, champion_note = None, "none"
    p_champion = None
    if champion_info is not None and str(champion_info.version) != str(version):
        champion, _ = load_version_model(client, name, str(champion_info.version))
        champion_note = str(champion_info.version)
        history = reference[reference["ds"] <= origin]
        ids = sorted(set(latest["unique_id"]) & set(champion.history_["unique_id"]))
        if len(ids) < latest["unique_id"].nunique():
            champion_note += " (not comparable: it does not forecast every series of the window)"
            champion = None
        else:
            h = int(latest["step"].max())
            prices = None
            if champion.roles_["price"] and champion.roles_["price"][0] in latest.columns:
                column = champion.roles_["price"][0]
                prices = {u: g.sort_values("step")[column].to_numpy() for u, g in latest.groupby("unique_id")}
            forecast = champion.forecast(h, prices=prices, ids=ids, history=history[history["unique_id"].isin(ids)])
            p_champion = latest[["unique_id", "ds"]].merge(forecast, on=["unique_id", "ds"], how="left")["p50"]
            p_champion = p_champion.fillna(0.0).to_numpy()
            if champion.history_["ds"].max() > origin:
                champion_note += (f" (trained on data up to {champion.history_['ds'].max():%Y-%m-%d}, past the window's"
                                  " origin: its figure is optimistic)")
    kind = get_kind("demand")
    checks: list[CheckResult] = []
    running = policy.running()
    if "performance" in running:
        performance = policy.check("performance")
        checks.append(audit_performance(latest["y"].to_numpy(), latest["p50"].to_numpy(), p_champion, performance,
                                        kind.metric(performance.metric)))
    if "baselines" in running:
        checks.append(audit_baselines(metrics, policy.check("baselines")))
    if "intervals" in running:
        checks.append(audit_intervals(metrics, policy.check("intervals")))
    if "drift" in running:
        drift_policy = policy.check("drift")
        inputs = [c for c in ("y", *candidate.roles_["price"], *candidate.roles_["competitor"],
                              *candidate.roles_["planned"], *candidate.roles_["observed"]) if c in reference.columns]
        current = recent if recent is not None and len(recent) else latest
        drift = audit_drift(reference, current, inputs, [], None, None, drift_policy, 0)
        drift.figures["current_source"] = (f"the test windows' actual rows ({len(current)} series-periods after "
                                           f"{origin:%Y-%m-%d})")
        checks.append(drift)
    if "explanations" in running:
        checks.append(audit_demand_explanations(candidate, policy.check("explanations")))
    if "monotone_price" in running:
        checks.append(audit_monotone_price(candidate, policy.check("monotone_price"), candidate.horizon))
    return checks, {"window": f"the latest test window: {latest['unique_id'].nunique()} series x "
                              f"{int(latest['step'].max())} periods after {origin:%Y-%m-%d}",
                    "champion": champion_note}


def _value_checks(settings: Settings, client, name: str, version: str, candidate, info, policy: Policy,
                  evaluation: dict, task: str) -> tuple[list[CheckResult], dict]:
    """The checks of a value version: its error against the champion's on the same holdout (the champion's
    parameters or booster applied to the accounts as they were at the holdout's cutoff), the calibration of its
    expected purchases, and drift of the customer view's features."""
    from monitoring.value_audits import audit_purchase_calibration
    from training.value import ID

    window, reference = evaluation["window"], evaluation["reference"]
    documents = evaluation.get("documents", {})
    windows = documents.get("windows", {})
    metrics = client.get_run(info.run_id).data.metrics
    label = next(c for c in window.columns if c.startswith("label_value_next_"))
    y = window[label].to_numpy(float)
    cutoff = windows.get("test_cutoff", f"{pd.Timestamp(window['cutoff'].max()):%Y-%m-%d}")
    champion_info = get_alias(client, name, CHAMPION)
    champion_note, p_champion = "none", None
    if champion_info is not None and str(champion_info.version) != str(version):
        champion, _ = load_version_model(client, name, str(champion_info.version))
        champion_note = str(champion_info.version)
        lacking = [f for f in (champion.booster.preprocessor.numeric + champion.booster.preprocessor.categorical
                               if champion.booster is not None else []) if f not in window.columns]
        if lacking:
            champion_note += f" (not comparable: it reads {', '.join(lacking[:5])}, which the candidate's rows lack)"
        else:
            p_champion = champion.predict_rows(window, candidate.horizon_days)
            if champion.clv.as_of > pd.Timestamp(cutoff):
                champion_note += (f" (fitted on data up to {champion.clv.as_of:%Y-%m-%d}, past the holdout's cutoff "
                                  f"{cutoff}: its figure is optimistic)")
    kind = get_kind("value")
    checks: list[CheckResult] = []
    running = policy.running()
    if "performance" in running:
        performance = policy.check("performance")
        checks.append(audit_performance(y, window["prediction"].to_numpy(float), p_champion, performance,
                                        kind.metric(performance.metric)))
    if "calibration" in running:
        table = pd.DataFrame(documents.get("calibration", {}).get("by_frequency", []))
        checks.append(audit_purchase_calibration(metrics, table, policy.check("calibration")))
    if "drift" in running:
        drift_policy = policy.check("drift")
        features = [c for c in reference.columns if c in window.columns and c not in (ID, "cutoff", "owner_rep_id")
                    and not c.startswith("label_")]
        numeric = [c for c in features if pd.api.types.is_numeric_dtype(reference[c])
                   and not pd.api.types.is_bool_dtype(reference[c])]
        categorical = [c for c in features if c not in numeric]
        current, source = latest_rows(settings, task, evaluation["recent"], window)
        drift = audit_drift(reference, current, numeric, categorical, None, None, drift_policy, 0)
        drift.figures["current_source"] = source
        checks.append(drift)
    return checks, {"window": f"{len(window)} active accounts at {cutoff}, judged on the next "
                              f"{windows.get('horizon_days', candidate.horizon_days)} days", "champion": champion_note}


def _segments_checks(settings: Settings, client, name: str, version: str, candidate, info, policy: Policy,
                     evaluation: dict, task: str) -> tuple[list[CheckResult], dict]:
    """The checks of a segmentation: stability, and DBCV against the champion's segments of the same accounts;
    segment membership as a proxy of each sensitive attribute; drift of the customer view's features."""
    from sklearn.metrics import adjusted_rand_score

    from monitoring.segment_audits import audit_segment_proxies, audit_stability
    from training.segments import sampled_validity

    window, reference = evaluation["window"], evaluation["reference"]
    documents = evaluation.get("documents", {})
    metrics = client.get_run(info.run_id).data.metrics
    champion_info = get_alias(client, name, CHAMPION)
    champion_note, versus = "none", None
    if champion_info is not None and str(champion_info.version) != str(version):
        champion, _ = load_version_model(client, name, str(champion_info.version))
        champion_note = str(champion_info.version)
        lacking = [c for c in [*champion.scaler.numeric, *champion.scaler.categorical] if c not in window.columns]
        if lacking:
            champion_note += f" (not comparable: it reads {', '.join(lacking[:5])}, which the candidate's rows lack)"
        else:
            theirs = champion.assign(window)["segment"].to_numpy()
            x = candidate.scaler.transform(window)
            versus = {"version": champion_note, "candidate_dbcv": sampled_validity(x, window["segment"].to_numpy())[0],
                      "dbcv": sampled_validity(x, theirs)[0],
                      "ari_with_candidate": float(adjusted_rand_score(window["segment"], theirs))}
    checks: list[CheckResult] = []
    running = policy.running()
    if "proxies" in running:
        proxies = policy.check("proxies")
        attributes = list(proxies.attributes or documents.get("windows", {}).get("sensitive") or [])
        checks.append(audit_segment_proxies(window, window["segment"].to_numpy(), attributes, proxies))
    if "drift" in running:
        drift_policy = policy.check("drift")
        current, source = latest_rows(settings, task, evaluation["recent"], window)
        features = [c for c in candidate.scaler.numeric if c in current.columns]
        categorical = [c for c in candidate.scaler.categorical if c in current.columns]
        drift = audit_drift(reference, current, features, categorical, None, None, drift_policy, 0)
        drift.figures["current_source"] = source
        checks.append(drift)
    if "stability" in running:
        checks.append(audit_stability(metrics, policy.check("stability"), versus))
    cutoff = evaluation.get("split", {}).get("cutoff", "the latest month end")
    return checks, {"window": f"{len(window)} active accounts at {cutoff}", "champion": champion_note}


def latest_rows(settings: Settings, task: str, recent: pd.DataFrame | None, window: pd.DataFrame
                ) -> tuple[pd.DataFrame, str]:
    """The newest rows of a timed task, for drift: its view built at one cutoff, the store's latest data, read
    without writing anything (nothing is materialised); the training run's newest month when the store cannot be
    read now (another process writing it) or the task is not a view.

    Returns:
        The rows and a sentence saying where they came from.
    """
    import duckdb

    from features.pipeline import FeatureError, build_latest
    from features.store import FeatureStore

    fallback = (recent, "the training run's newest month") if recent is not None and len(recent) else (
        window, "held-out test rows")
    definition = TASKS.get(task)
    if definition is None or definition.data.source != "view" or not settings.feature_store_path.exists():
        return fallback
    try:
        with FeatureStore.from_settings(settings, read_only=True) as store:
            built = build_latest(store, definition.data.name, definition.data.events, settings.threads)
    except (duckdb.Error, FeatureError) as exc:
        log.warning("drift compares with the training run's newest month: the feature store cannot be read (%s)",
                    exc)
        return fallback[0], fallback[1] + " (the feature store could not be read)"
    return built.frame, f"feature store: its latest data (as of {built.as_of}), read without materialising"


def _offer_mitigation(settings: Settings, name: str, version: str, candidate, checks: list[CheckResult],
                      policy: Policy, window: pd.DataFrame) -> None:
    """When fairness fails, register the ThresholdOptimizer variant as a separate candidate (unless the policy
    says ``offer_mitigation: false``, or the candidate already is such a variant)."""
    fairness = next((c for c in checks if c.name == "fairness"), None)
    if fairness is None or fairness.status != "fail" or candidate.metadata.get(GROUP_THRESHOLDS):
        return
    mitigation = fairness.figures.get("mitigation") or {}
    if "thresholds" not in mitigation or not policy.check("fairness").offer_mitigation:
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
    fairness.reason += (f"; a ThresholdOptimizer variant ({mitigation['method']}, for "
                        f"{mitigation['attribute']}) is offered "
                        f"as version {variant}: audit it with `salesml audit {name} {variant}`")
    append_audit_log(settings, {"action": "offer_mitigation", "model": name, "version": variant,
                                "variant_of": version, "attribute": mitigation["attribute"]})

"""Audits that gate promotion, validators' decisions and the champion alias, on simulated organisations."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pytest

import monitoring.gate as gate
import monitoring.review as review
from experiments.registered import get_alias, load_version_model
from experiments.registry import CHAMPION, PREVIOUS
from experiments.risk_run import run_risk_training
from features.ingest import discover_sources, ingest
from features.pipeline import train_text_model
from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation
from features.store import FeatureStore
from salesml.access import AccessError, Principal
from salesml.settings import get_settings
from training.tasks import load_config

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "opportunity_loss.yaml"
VALIDATOR = Principal("vera", "model_validator", "all", "")
TRAINER = Principal("alice", "model_validator", "all", "")  # a validator who also trains models


def make_home(root: Path, scenarios: list[str] | None = None, seed: int = 7, accounts: int = 1500) -> Path:
    home = root / "home"
    org = simulate_organisation(SimulationConfig(accounts=accounts, months=24, seed=seed, scenarios=scenarios or []))
    write_organisation(org, home / "demo_data")
    with FeatureStore(home / "features.duckdb") as store:
        ingest(discover_sources(home / "demo_data"), store)
        train_text_model(store)
    return home


def train(home: Path, trainer: str = "alice", **overrides) -> str:
    config = load_config(CONFIG, trials=overrides.pop("trials", 2), **overrides)
    return run_risk_training(get_settings(home=home), "opportunity_loss", config, trainer=trainer)["version"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    home = make_home(tmp_path_factory.mktemp("clean"))
    version = train(home)
    outcome = gate.audit_version(get_settings(home=home), "risk.opportunity_loss", version)
    return home, version, outcome


def _check(outcome, name):
    return next(c for c in outcome.result["checks"] if c["name"] == name)


@pytest.mark.slow
def test_audit_json_has_every_check_and_a_stored_report(clean):
    home, version, outcome = clean
    result = outcome.result
    assert set(result) == {"model", "version", "gate", "checks", "report"}
    assert result["gate"] in ("PASS", "REVIEW", "FAIL")
    assert [c["name"] for c in result["checks"]] == ["performance", "fairness", "proxies", "drift", "explanations"]
    assert all(set(c) == {"name", "status", "figures", "reason"} for c in result["checks"])
    assert Path(result["report"]).is_file() and "<script" not in Path(result["report"]).read_text()
    client = mlflow.MlflowClient(get_settings(home=home).tracking_uri_resolved)
    tags = client.get_model_version("risk.opportunity_loss", version).tags
    assert tags["salesml.gate"] == result["gate"] and tags["salesml.audit.fairness"] == "pass"
    run_id = client.get_model_version("risk.opportunity_loss", version).run_id
    assert {a.path for a in client.list_artifacts(run_id, f"audit/v{version}")} == {
        f"audit/v{version}/audit.html", f"audit/v{version}/audit.json"}


@pytest.mark.slow
def test_an_audit_reads_the_runs_evaluation_data_and_never_writes_to_the_feature_store(clean):
    home, version, first = clean
    settings = get_settings(home=home)
    store = settings.feature_store_path
    before = (store.stat().st_mtime_ns, store.stat().st_size)
    with FeatureStore(store, read_only=True) as features:
        tables = set(features.con.list_tables())
    again = gate.audit_version(settings, "risk.opportunity_loss", version)
    assert (store.stat().st_mtime_ns, store.stat().st_size) == before
    with FeatureStore(store, read_only=True) as features:
        assert set(features.con.list_tables()) == tables
    assert [c["status"] for c in again.result["checks"]] == [c["status"] for c in first.result["checks"]]
    assert "labelled rows logged by the training run" in again.report.read_text()
    client = mlflow.MlflowClient(settings.tracking_uri_resolved)
    run_id = client.get_model_version("risk.opportunity_loss", version).run_id
    assert {a.path for a in client.list_artifacts(run_id, "evaluation")} >= {
        "evaluation/window.parquet", "evaluation/reference.parquet", "evaluation/recent.parquet"}
    # The legacy name of risk models still reaches the version.
    assert gate.audit_version(settings, "churn.opportunity_loss", version).result["model"] == "risk.opportunity_loss"


@pytest.mark.slow
def test_show_audit_reads_the_tracked_copy_when_the_local_report_is_gone(clean, tmp_path, monkeypatch):
    home, version, outcome = clean
    settings = get_settings(home=home)
    local = settings.home / "reports" / "risk.opportunity_loss" / version / "audit.json"
    assert review.show_audit(settings, "risk.opportunity_loss", version)["gate"] == outcome.result["gate"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    moved = local.rename(tmp_path / "audit.json")
    try:
        shown = review.show_audit(settings, "risk.opportunity_loss", version)
    finally:
        moved.rename(local)
    assert shown["gate"] == outcome.result["gate"] and "decision" in shown
    assert not list(scratch.iterdir())  # the downloaded copy does not outlive the call


@pytest.mark.slow
def test_clean_history_passes_fairness_and_flags_proxies(clean):
    _, _, outcome = clean
    fairness = _check(outcome, "fairness")
    assert fairness["status"] == "pass", fairness["reason"]
    assert set(fairness["figures"]["attributes"]) == {"region", "size_band", "ownership_type"}
    proxies = {(p["feature"], p["attribute"]) for p in _check(outcome, "proxies")["figures"]["proxies"]}
    assert ("employee_band", "size_band") in proxies and ("country", "region") in proxies
    assert _check(outcome, "explanations")["status"] == "pass"


@pytest.mark.slow
def test_drift_reads_the_inference_log_as_production_data_once_it_holds_enough(clean):
    import shutil

    from serving.inference_log import InferenceLogger

    home, version, _ = clean
    settings = get_settings(home=home)
    with FeatureStore(settings.feature_store_path, read_only=True) as store:
        table = store.latest_view_table("opportunity")
        latest = store.table(table).execute()
    latest = latest[latest["cutoff"] == latest["cutoff"].max()].head(400)
    # Production traffic that has moved: deep discounts and no meetings.
    shifted = latest.assign(discount=latest["discount"] + 0.3, meetings_30d=0)
    records = shifted.drop(columns=["cutoff"]).to_dict("records")
    result = {"probability": 0.5, "risk_band": "medium", "reasons": [], "actions": []}
    logger = InferenceLogger(settings.logs_dir, flush_seconds=60)
    try:
        logger.log("opportunity_loss", "crm", "risk.opportunity_loss", version, records, [result] * len(records))
        logger.close()
        drift = _check(gate.audit_version(settings, "risk.opportunity_loss", version), "drift")
        assert drift["figures"]["current_source"].startswith("inference log: 400 scored records")
        assert drift["figures"]["current_rows"] == 400
        assert {"discount", "meetings_30d"} <= set(drift["figures"]["drifted_features"])
    finally:
        shutil.rmtree(settings.logs_dir, ignore_errors=True)
    drift = _check(gate.audit_version(settings, "risk.opportunity_loss", version), "drift")
    assert drift["figures"]["current_source"].startswith("feature store: its latest data (as of 20")


@pytest.mark.slow
def test_biased_history_fails_fairness_naming_the_attribute_and_figure(tmp_path, monkeypatch):
    home = make_home(tmp_path, ["biased_history"])
    version = train(home)
    outcome = gate.audit_version(get_settings(home=home), "risk.opportunity_loss", version)
    fairness = _check(outcome, "fairness")
    assert fairness["status"] == "fail" and outcome.gate == "FAIL"
    failed = fairness["figures"]["failed"]
    assert {f["attribute"] for f in failed} == {"size_band"}, fairness["reason"]
    assert "size_band: group small is miscalibrated" in fairness["reason"]
    assert fairness["figures"]["attributes"]["size_band"]["calibration"]["gap"] > 0.05
    with pytest.raises(review.GateError, match="gate is FAIL"):
        review.promote(get_settings(home=home), "risk.opportunity_loss", version, VALIDATOR)

    # The mitigation is offered as a separate candidate, for the criterion that thresholds can fix (amplification
    # or error rates: equalised odds, not demographic parity): same booster, one threshold per size band.
    mitigation = fairness["figures"]["mitigation"]
    variant = mitigation["candidate_version"]
    assert mitigation["attribute"] == "size_band" and len(mitigation["thresholds"]) >= 3
    assert mitigation["criterion"] in ("amplification", "error_rates") and "equalized odds" in mitigation["method"]
    assert mitigation["equalized_odds_difference"] < fairness["figures"]["attributes"]["size_band"][
        "equalized_odds_difference"]
    settings = get_settings(home=home)
    client = mlflow.MlflowClient(settings.tracking_uri_resolved)
    tags = client.get_model_version("risk.opportunity_loss", variant).tags
    assert tags["salesml.variant_of"] == version and tags["salesml.trainer"] == "alice"
    assert tags["salesml.gate"] == "pending"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model, _ = load_version_model(client, "risk.opportunity_loss", variant)
    assert not list(scratch.iterdir())  # the downloaded artifact does not outlive the load
    assert model.metadata["group_thresholds"]["thresholds"] == pytest.approx(mitigation["thresholds"], abs=1e-6)
    audited = gate.audit_version(settings, "risk.opportunity_loss", variant)
    again = _check(audited, "fairness")
    assert again["figures"]["threshold"] == "per group"
    assert (again["figures"]["attributes"]["size_band"]["equalized_odds_difference"]
            < fairness["figures"]["attributes"]["size_band"]["equalized_odds_difference"])
    # Thresholds change decisions, not probabilities: the variant is still miscalibrated for small accounts.
    assert again["status"] == "fail" and "group small is miscalibrated" in again["reason"]
    assert "candidate_version" not in again["figures"].get("mitigation", {})  # no variant of a variant
    assert ("offer_mitigation", variant) in [(e["action"], e["version"]) for e in review.read_audit_log(settings)]
    reaudit = _check(gate.audit_version(settings, "risk.opportunity_loss", version), "fairness")
    assert reaudit["figures"]["mitigation"]["candidate_version"] == variant  # offered once, not again


@pytest.mark.slow
def test_a_candidate_trained_before_a_competitor_entry_sees_the_drift(tmp_path):
    home = make_home(tmp_path, ["competitor_entry@2025-06:EMEA"])
    version = train(home, as_of="2025-05-31")
    outcome = gate.audit_version(get_settings(home=home), "risk.opportunity_loss", version)
    drift = _check(outcome, "drift")
    drifted = set(drift["figures"]["drifted_features"])
    assert {"discount", "competitor_news_negative"} <= drifted, drifted
    assert drift["figures"]["sampled"]["limit"] == 50000


@pytest.mark.slow
def test_reviews_promotion_rollback_and_the_audit_log(clean, monkeypatch):
    home, v1, outcome = clean
    settings = get_settings(home=home)
    name = "risk.opportunity_loss"
    assert outcome.gate == "REVIEW"  # proxies need a validator's eyes
    with pytest.raises(review.GateError, match="needs a validator's approval"):
        review.promote(settings, name, v1, VALIDATOR)
    with pytest.raises(review.GateError, match="alice trained"):
        review.review(settings, name, v1, "approve", "looks fine", TRAINER)
    with pytest.raises(AccessError, match="only a model_validator"):
        review.review(settings, name, v1, "approve", "ok", Principal("sam", "data_scientist", "all", ""))
    review.review(settings, name, v1, "approve", "proxies are business attributes", VALIDATOR)
    assert review.promote(settings, name, v1, VALIDATOR)["champion"] == v1

    # A deliberately weaker candidate fails the performance check against the champion.
    weak = train(home, trainer="bob", trials=1, exclude_features=[
        "emails_in_7d", "emails_in_30d", "emails_in_90d", "emails_in_prev_30d", "emails_in_trend_30d",
        "meetings_7d", "meetings_30d", "meetings_90d", "meetings_prev_30d", "meetings_trend_30d",
        "days_since_last_inbound", "days_since_last_activity", "calls_7d", "calls_30d", "calls_90d",
        "calls_prev_30d", "calls_trend_30d", "emails_out_7d", "emails_out_30d", "emails_out_90d",
        "emails_out_prev_30d", "emails_out_trend_30d"], monotone={})
    weak_audit = gate.audit_version(settings, name, weak)
    assert _check(weak_audit, "performance")["status"] == "fail" and weak_audit.gate == "FAIL"

    v3 = train(home, trainer="bob")
    gate.audit_version(settings, name, v3)
    review.review(settings, name, v3, "approve", "better engagement signals", VALIDATOR)

    def crash() -> None:
        raise RuntimeError("injected crash between the tag step and the alias step")

    monkeypatch.setattr(review, "_between_tag_and_alias_steps", crash)
    with pytest.raises(RuntimeError, match="injected"):
        review.promote(settings, name, v3, VALIDATOR)
    client = mlflow.MlflowClient(settings.tracking_uri_resolved)
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == v1  # unchanged
    monkeypatch.undo()
    assert review.promote(settings, name, v3, VALIDATOR) == {"model": name, "champion": v3, "previous": v1,
                                                            "changed": True}
    assert str(client.get_model_version_by_alias(name, PREVIOUS).version) == v1
    back = review.rollback(settings, name, VALIDATOR, "new champion misbehaves")
    assert back["champion"] == v1 and str(client.get_model_version_by_alias(name, CHAMPION).version) == v1
    assert str(client.get_model_version_by_alias(name, PREVIOUS).version) == v3
    actions = [(e["action"], e["version"]) for e in review.read_audit_log(settings)]
    assert ("approve", v1) in actions and ("promote", v1) in actions and ("promote", v3) in actions
    assert ("rollback", v1) in actions and ("audit", weak) in actions
    assert client.get_model_version(name, v1).tags["salesml.review.by"] == "vera"


@pytest.mark.browser
@pytest.mark.slow
def test_the_report_renders_offline_in_headless_chromium(clean, chromium, tmp_path):
    _, _, outcome = clean
    dom = chromium("--dump-dom", outcome.report.as_uri())
    for section in ('id="summary"', 'id="performance"', 'id="fairness"', 'id="drift"', 'id="explanations"',
                    'id="gate"'):
        assert section in dom, section
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2000", outcome.report.as_uri())
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
def test_auto_promote_promotes_a_pass_version_only_when_the_policy_says_so(clean, tmp_path):
    home, _, _ = clean
    settings = get_settings(home=home)
    client = mlflow.MlflowClient(settings.tracking_uri_resolved)
    name = "risk.opportunity_loss"
    before = get_alias(client, name, CHAMPION)
    version = train(home, trainer="bob", trials=1)
    policy = tmp_path / "policy.yaml"
    policy.write_text("default:\n  auto_promote: AUTO\n  checks:\n    performance:\n      metric: roc_auc\n"
                      "      min_value: 0.6\n      max_degradation: 1.0\n      min_improvement: -1.0\n"
                      "      on_fail: fail\n")
    manual = policy.read_text().replace("AUTO", "false")
    policy.write_text(manual)
    first = gate.audit_version(settings, name, version, policy)
    assert first.gate == "PASS" and "promoted" not in first.result
    after = get_alias(client, name, CHAMPION)
    assert (after.version if after else None) == (before.version if before else None)  # nothing moved
    policy.write_text(manual.replace("auto_promote: false", "auto_promote: true"))
    again = gate.audit_version(settings, name, version, policy)
    assert again.gate == "PASS" and again.result["promoted"]["champion"] == version
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == version
    last = [e for e in review.read_audit_log(settings) if e["action"] == "promote"][-1]
    assert last["version"] == version and last["principal"] == "policy:auto_promote"

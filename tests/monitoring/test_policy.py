"""The policy file is parsed into typed models; mistakes are named when it loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring.policy import FairnessPolicy, PerformancePolicy, PolicyError, load_policy

BASE = """default:
  checks:
    performance: {metric: roc_auc, min_value: 0.6, max_degradation: 0.01, min_improvement: 0.0}
    fairness: {}
"""


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_the_shipped_policy_loads_typed_for_every_declared_task_and_an_imported_one():
    for task in ("opportunity_loss", "customer_churn", "telco_churn", "my_own_table"):
        policy = load_policy(task)
        assert policy.kind == "risk"
        assert isinstance(policy.check("performance"), PerformancePolicy)
        assert isinstance(policy.check("fairness"), FairnessPolicy)
        assert policy.check("proxies") is policy.check("fairness")  # judged with the fairness settings
        assert policy.running() == ["performance", "fairness", "proxies", "drift", "explanations"]
    opportunity = load_policy("opportunity_loss")
    assert opportunity.check("fairness").attributes == ["region", "size_band", "ownership_type"]
    assert opportunity.check("explanations").monotone["meetings_30d"] == "decreasing"
    assert not opportunity.check("fairness").demographic_parity.gate  # reported, not gating, by default
    acknowledged = {(a.feature, a.attribute) for a in opportunity.check("fairness").acknowledged_proxies}
    assert ("employee_band", "size_band") in acknowledged


@pytest.mark.parametrize(("text", "message"), [
    (BASE + "    speed: {}\n", "checks.speed: unknown check"),
    (BASE.replace("roc_auc", "accuracy"), "unknown metric 'accuracy' for risk models; known: roc_auc, pr_auc"),
    (BASE.replace("fairness: {}", "fairness: {calibration_tolerence: 0.1}"),
     "checks.fairness.calibration_tolerence: Extra inputs are not permitted"),
    (BASE.replace("fairness: {}", "fairness: {on_fail: block}"), "checks.fairness.on_fail"),
    (BASE.replace("fairness: {}", "fairness: {demographic_parity: {gate: true}}"),
     "demographic parity gates only with the reason"),
    (BASE + "tasks:\n  opportunity_loss:\n    checks:\n      performance: {metric: f1}\n",
     "tasks.opportunity_loss: checks.performance.metric: unknown metric 'f1'"),
    (BASE + "kinds:\n  forecasting: {}\n", "kinds.forecasting: unknown kind"),
    ("checks: {}\n", "needs a `default` section"),
    (BASE + "  autopromote: true\n", "unknown setting(s) autopromote"),
])
def test_an_unknown_check_metric_or_setting_is_a_clear_error_when_the_policy_loads(tmp_path, text, message):
    with pytest.raises(PolicyError, match="policy.yaml") as error:
        load_policy("opportunity_loss", _policy(tmp_path, text))
    assert message in str(error.value)


def test_a_mistake_in_another_tasks_section_is_found_too(tmp_path):
    text = BASE + "tasks:\n  telco_churn:\n    checks:\n      drift: {max_drifted_share: 2}\n"
    with pytest.raises(PolicyError, match="tasks.telco_churn: checks.drift.max_drifted_share"):
        load_policy("opportunity_loss", _policy(tmp_path, text))


def test_task_sections_override_kind_sections_which_override_the_default(tmp_path):
    text = BASE + ("kinds:\n  risk:\n    checks:\n      performance: {metric: pr_auc, min_value: 0.3}\n"
                   "tasks:\n  telco_churn:\n    checks:\n      performance: {metric: log_loss, min_value: 0.7}\n"
                   "      fairness: {demographic_parity: {gate: true, reason: lead allocation must be even}}\n")
    path = _policy(tmp_path, text)
    churn = load_policy("customer_churn", path)
    assert (churn.check("performance").metric, churn.check("performance").min_value) == ("pr_auc", 0.3)
    assert churn.check("performance").max_degradation == 0.01  # from the default
    telco = load_policy("telco_churn", path)
    assert telco.check("performance").metric == "log_loss"
    assert telco.check("fairness").demographic_parity.gate and telco.check("fairness").demographic_parity.min_ratio == 0.8


def test_a_check_declared_not_applicable_does_not_run_and_says_why(tmp_path):
    text = BASE.replace("fairness: {}", "fairness: {not_applicable: products are not people}")
    policy = load_policy("opportunity_loss", _policy(tmp_path, text))
    assert policy.running() == ["performance"]
    assert policy.not_applicable() == {"fairness": "products are not people"}


def test_an_older_policy_that_names_the_parity_ratio_at_the_top_still_loads(tmp_path):
    text = BASE.replace("fairness: {}", "fairness: {min_demographic_parity_ratio: 0.9}")
    assert load_policy("opportunity_loss", _policy(tmp_path, text)).check("fairness").demographic_parity.min_ratio == 0.9


def test_policy_show_prints_the_effective_policy_and_names_a_bad_setting(tmp_path):
    import json

    from typer.testing import CliRunner

    from salesml.cli import app

    runner = CliRunner()
    shown = runner.invoke(app, ["policy", "show", "telco_churn", "--json"])
    assert shown.exit_code == 0, shown.output
    result = json.loads(shown.stdout.strip().splitlines()[-1])
    assert result["kind"] == "risk" and result["checks"]["fairness"]["attributes"] == ["gender", "SeniorCitizen"]
    assert result["runs"] == ["performance", "fairness", "proxies", "drift", "explanations"]
    bad = runner.invoke(app, ["policy", "show", "telco_churn", "--policy",
                              str(_policy(tmp_path, BASE.replace("roc_auc", "accuracy")))])
    assert bad.exit_code == 2 and "unknown metric 'accuracy'" in bad.output

"""Audit, review, promotion and access as users run them: tokens, roles, refusals with clear messages."""

from __future__ import annotations

import json

from tests.e2e.test_cli_data import last_json, run
from tests.e2e.test_cli_train import _synthetic_task


def test_access_audit_review_promote_rollback(home, tmp_path):
    _synthetic_task(home, tmp_path)
    v1 = last_json(run("train", "churn", "--task", "synth", "--trials", "2", "--json", home=home))["version"]
    vera = last_json(run("access", "add", "--name", "vera", "--role", "model_validator", "--json", home=home))
    sam = last_json(run("access", "add", "--name", "sam", "--role", "data_scientist", "--json", home=home))
    assert set(vera) == {"name", "role", "scope", "token"} and vera["scope"] == "all"
    assert vera["token"] not in (home / "access.yaml").read_text()
    listed = last_json(run("access", "list", "--json", home=home))["principals"]
    assert {p["name"] for p in listed} == {"vera", "sam"} and "token" not in json.dumps(listed)

    audited = last_json(run("audit", "risk.synth", v1, "--json", home=home))
    assert set(audited) == {"model", "version", "gate", "checks", "report"}
    fairness = next(c for c in audited["checks"] if c["name"] == "fairness")
    assert "region" in fairness["figures"]["attributes"]
    shown = last_json(run("review", "show", "risk.synth", v1, "--json", home=home))
    assert shown["gate"] == audited["gate"]

    no_token = run("promote", "risk.synth", v1, "--json", home=home, check=False)
    assert no_token.returncode == 2 and "SALESML_TOKEN" in no_token.stderr
    as_sam = run("review", "approve", "risk.synth", v1, "--reason", "ok", "--json", home=home, check=False,
                 token=sam["token"])
    assert as_sam.returncode == 2 and "only a model_validator" in as_sam.stderr
    bad = run("review", "approve", "risk.synth", v1, "--reason", "ok", home=home, check=False, token="nope")
    assert bad.returncode == 2 and "invalid token" in bad.stderr
    assert audited["gate"] in ("PASS", "REVIEW"), audited  # the synthetic churn does not depend on region
    decision = last_json(run("review", "approve", "risk.synth", v1, "--reason", "meets policy", "--json",
                             home=home, token=vera["token"]))
    assert decision["principal"] == "vera" and decision["action"] == "approve"
    promoted = last_json(run("promote", "risk.synth", v1, "--json", home=home, token=vera["token"]))
    assert promoted["champion"] == v1
    candidates = last_json(run("review", "list", "--json", home=home))["candidates"]
    assert candidates[0]["alias"] == "champion" and candidates[0]["decision"] == "approved"
    no_previous = run("rollback", "risk.synth", "--json", home=home, check=False, token=vera["token"])
    assert no_previous.returncode == 2 and "no previous champion" in no_previous.stderr
    log = [json.loads(line)["action"] for line in (home / "audit.log").read_text().splitlines()]
    assert log == ["audit", "approve", "promote"]
    assert last_json(run("access", "revoke", "sam", "--json", home=home)) == {"revoked": "sam"}


def test_review_on_a_fresh_home_names_the_missing_version_without_database_chatter(home):
    result = run("review", "show", "risk.none", "9", home=home, check=False)
    assert result.returncode == 2 and "no version 9 of model 'risk.none'" in result.stderr
    assert (home / "mlflow.db").is_file()  # the tracking database was created...
    assert "database tables" not in result.stderr  # ...without MLflow announcing it

"""A real-shaped CRM export, end to end as a new user runs it: one bundle import, then train, audit, review,
promote and serve, with the scopes taken from the export's team file. Every step is the `salesml` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from salesml.access import issue_token
from salesml.settings import get_settings
from tests.e2e.test_cli_data import last_json, run
from tests.e2e.test_service import _free_port, _wait_until_ready
from tests.features.sources.crm_export import BUNDLE, STANDARDS, write_crm_export


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("crm")
    home = root / "home"
    home.mkdir()
    (home / "standards.yaml").write_text(STANDARDS)  # the installation's policy: its offices are regions
    folder = root / "export"
    info = write_crm_export(folder)
    (folder / "bundle.yaml").write_text(BUNDLE)
    report = last_json(run("import", "--bundle", str(folder / "bundle.yaml"), "--as-of", "2025-12-31", "--json",
                           home=home))
    return {"home": home, "folder": folder, "report": report, **info}


def test_the_export_imports_with_one_bundle_command_and_its_report_adds_up(export):
    tables = export["report"]["tables"]
    assert set(tables) == {"sales_reps", "accounts", "products", "opportunities"}
    for name, t in tables.items():
        assert t["read"] == t["stored"] + t["quarantined"], name
        assert 0 <= t["flagged"] <= t["stored"] and 0 <= t["duplicates"] <= t["stored"], name
    reps = tables["sales_reps"]
    assert (reps["read"], reps["stored"]) == (41, 41)  # 35 agents and 6 managers from the one team file
    deals = export["deals"]
    opps = tables["opportunities"]
    assert opps["read"] == len(deals)
    assert opps["flagged"] > 0 and set(opps["by_warning"]) == {"required_field"}  # leads: no account, no date
    # Every flagged row can be queried with its rule.
    flags = last_json(run("data", "flags", "--table", "opportunities", "--limit", "100000", "--json",
                          home=export["home"]))
    assert flags["total"] == opps["flagged"] == len(flags["rows"])
    assert {r for row in flags["rows"] for r in row["rules"].split(",")} == set(opps["by_warning"])
    no_account = deals.loc[deals["account"].isna() | (deals["account"] == ""), "opportunity_id"]
    flagged_ids = {row["row_key"] for row in flags["rows"]}
    assert set(no_account.astype(str)) <= flagged_ids
    assert all("account_id=empty" in row["detail"] or "created_at=empty" in row["detail"] for row in flags["rows"])


def test_features_describe_names_the_groups_the_export_cannot_feed(export):
    described = last_json(run("features", "describe", "opportunity", "--json", home=export["home"]))
    assert described["required_tables"] == ["opportunities"]
    groups = {g["group"]: g for g in described["unavailable_feature_groups"]}
    assert set(groups) == {"engagement", "key_contacts", "budget", "news", "stage_dynamics"}
    assert groups["engagement"]["reason"].startswith("no activities in the feature store")
    columns = {c["name"]: c for c in described["columns"]}
    assert columns["meetings_30d"]["unavailable"] == "engagement" and "unavailable" not in columns["amount"]
    text = run("features", "describe", "opportunity", home=export["home"]).stdout
    assert "unavailable feature group stage_dynamics (missing, NaN): no opportunity_stage_history" in text


def test_at_least_95_percent_of_the_open_pipeline_is_stored(export):
    from features.store import FeatureStore
    from salesml.settings import get_settings

    with FeatureStore(get_settings(home=export["home"]).feature_store_path, read_only=True) as store:
        stored = store.table("opportunities").execute()
    open_stored = stored[stored["opportunity_id"].isin(export["open_ids"])]
    assert len(open_stored) >= 0.95 * len(export["open_ids"])
    # The deal's size comes from the products file's list price; a lead without an account keeps none.
    assert open_stored["amount"].notna().all()
    assert open_stored["account_id"].isna().any() and open_stored["created_at"].isna().any()


@pytest.mark.slow
def test_train_audit_promote_serve_scores_open_deals_by_id_in_the_team_files_scopes(export, tmp_path):
    home = export["home"]
    trained = last_json(run("train", "opportunity_loss", "--trials", "1", "--json", home=home))
    unavailable = {g["group"] for g in trained["unavailable_feature_groups"]}
    assert unavailable == {"engagement", "key_contacts", "budget", "news", "stage_dynamics"}
    assert trained["metrics"]["test_roc_auc"] > 0.6  # agents, products and sectors differ in loss rate
    version = trained["version"]
    audited = last_json(run("audit", "risk.opportunity_loss", version, "--json", home=home))
    assert audited["gate"] in ("PASS", "REVIEW"), audited
    fairness = next(c for c in audited["checks"] if c["name"] == "fairness")
    assert fairness["status"] == "pass" and fairness["figures"]["attributes"]["size_band"]["groups_judged"] >= 2
    access = get_settings(home=home).access_file  # principals made in-process: `access add` has its own tests
    vera = issue_token(access, "vera", "model_validator", "all")
    if audited["gate"] == "REVIEW":
        run("review", "approve", "risk.opportunity_loss", version, "--reason", "drift of cumulative rep "
            "counts over the export's 18 months is expected", home=home, token=vera)
    promoted = last_json(run("promote", "risk.opportunity_loss", version, "--json", home=home, token=vera))
    assert promoted["champion"] == version

    agent = export["agents"][0]
    manager = export["team_of"][agent]
    rep = issue_token(access, "agent", "sales_rep", f"rep:{agent}")  # ids with spaces, as the team file has them
    boss = issue_token(access, "boss", "sales_manager", f"team:{manager}")
    crm = issue_token(access, "crm", "application", "all")
    deals = export["deals"]
    open_deals = deals[deals["opportunity_id"].isin(export["open_ids"])]
    mine = open_deals.loc[open_deals["sales_agent"] == agent, "opportunity_id"].tolist()
    team = open_deals.loc[open_deals["sales_agent"].map(export["team_of"]) == manager, "opportunity_id"].tolist()
    others = open_deals.loc[open_deals["sales_agent"].map(export["team_of"]) != manager, "opportunity_id"].tolist()
    assert mine and set(mine) < set(team) and others

    port = _free_port()
    env = {**os.environ, "SALESML_HOME": str(home)}
    env.pop("SALESML_TOKEN", None)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "salesml"), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base, proc)

        def score(token: str, ids: list[str]) -> httpx.Response:
            return httpx.post(f"{base}/risk/score", json={"task": "opportunity_loss",
                                                          "records": [{"opportunity_id": i} for i in ids]},
                              headers={"Authorization": f"Bearer {token}"}, timeout=60)

        everyone = score(crm, export["open_ids"])  # the CRM application's scope is all
        assert everyone.status_code == 200, everyone.text
        results = everyone.json()["results"]
        assert [r["opportunity_id"] for r in results] == export["open_ids"]
        newest = pd.to_datetime(deals["engage_date"].replace("", None)).max().date().isoformat()
        month_end = (pd.Timestamp(newest) - pd.offsets.MonthEnd(1)).date().isoformat()
        assert {r["features_as_of"] for r in results} <= {month_end, newest}  # the trained view's last cutoff, or live
        undated = set(deals.loc[deals["engage_date"] == "", "opportunity_id"])
        assert undated and all(r["features_as_of"] == newest for r in results if r["opportunity_id"] in undated)
        assert all(0 <= r["probability"] <= 1 for r in results)
        leads = deals.loc[deals["deal_stage"] == "Prospecting", "opportunity_id"]
        lead_reasons = [s["sentence"] for r in results if r["opportunity_id"] in set(leads) for s in r["reasons"]]
        assert lead_reasons and not any("unknown days" in s for s in lead_reasons)

        own = score(rep, mine)
        assert own.status_code == 200, own.text
        denied = score(rep, [mine[0], others[0]])
        assert denied.status_code == 403 and denied.json()["error"]["ids"] == [others[0]]
        managed = score(boss, team)
        assert managed.status_code == 200, managed.text
        outside = score(boss, [others[0]])
        assert outside.status_code == 403
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    log = [json.loads(line)["action"] for line in (home / "audit.log").read_text().splitlines()]
    assert log[-1] == "promote"

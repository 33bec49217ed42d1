"""The CLI as a user runs it: a real `salesml` process on a fresh SALESML_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from salesml.cli import app


def run(*args: str, home: Path, check: bool = True, token: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SALESML_HOME": str(home)}
    env.pop("SALESML_TOKEN", None)
    if token is not None:
        env["SALESML_TOKEN"] = token
    result = subprocess.run([sys.executable, "-m", "salesml.cli", *args], capture_output=True, text=True, env=env,
                            timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        out.append((*prefix, name))
        if isinstance(command, click.Group):
            out += _commands(command, (*prefix, name))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_help_lists_every_command_group_with_one_line(home):
    result = run("--help", home=home)
    for group in ("simulate", "ingest", "import", "data", "demo"):
        assert group in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_has_help(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_simulate_ingest_and_inspect(home, tmp_path):
    out = tmp_path / "org"
    sim = last_json(run("simulate", "--accounts", "100", "--months", "6", "--seed", "3", "--out", str(out),
                        "--format", "csv", "--scenario", "biased_history", "--json", home=home))
    assert sim["out"] == str(out) and sim["tables"]["accounts"] == 100
    assert (out / "accounts.csv").is_file() and (out / "ground_truth").is_dir()
    report = last_json(run("ingest", str(out), "--as-of", "2026-01-01", "--json", home=home))
    for name, rows in sim["tables"].items():
        t = report["tables"][name]
        assert t["read"] == rows == t["stored"] + t["quarantined"]
    loads = last_json(run("data", "loads", "--json", home=home))
    assert loads["loads"][0]["load_id"] == report["load_id"]
    standards = last_json(run("data", "standards", "--json", home=home))
    assert len({r["name"] for r in standards["rules"]}) >= 30
    assert set(standards["rules"][0]) == {"name", "table", "columns", "severity", "description"}
    amount = next(r for r in standards["rules"] if r["table"] == "opportunities" and r["columns"] == ["amount"]
                  and r["name"] == "required_field")
    assert amount["severity"] == "warning"


def test_bad_input_gets_a_clear_error_and_stores_nothing(home, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "accounts.csv").write_text("account_id,colour\nA1,red\n")
    result = run("ingest", str(folder), "--json", home=home, check=False)
    assert result.returncode == 2
    assert "accounts.csv" in result.stderr and "account_name" in result.stderr and "colour" in result.stderr
    assert "error" in last_json(result)
    assert "Traceback" not in result.stderr
    bad_date = run("ingest", str(folder), "--as-of", "yesterday", home=home, check=False)
    assert bad_date.returncode == 2 and "--as-of" in bad_date.stderr


def test_quarantined_rows_are_shown_with_reasons(home, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "sales_reps.csv").write_text(
        "rep_id,name,role,region,email\nR1,Ana,director,EMEA,ana@x.example\nR2,Ben,rep,MARS,not-an-email\n")
    report = last_json(run("ingest", str(folder), "--json", home=home))
    assert report["tables"]["sales_reps"] == {"read": 2, "stored": 1, "quarantined": 1, "duplicates": 0,
                                              "flagged": 0, "by_rule": {"allowed_value": 1, "valid_email": 1},
                                              "by_warning": {}, "files": [str(folder / "sales_reps.csv")]}
    shown = last_json(run("data", "quarantine", "--table", "sales_reps", "--json", home=home))
    row = shown["rows"][0]
    assert row["rules"] == "allowed_value,valid_email" and row["source_line"] == "3"
    assert "region='MARS'" in row["detail"]
    assert shown["shown"] == shown["total"] == 1
    listing = run("data", "quarantine", "--rule", "valid_email", home=home).stdout
    assert "Quarantined rows that broke rule valid_email: 1 of 1" in listing and "not-an-email" in listing
    none = run("data", "quarantine", "--table", "accounts", home=home)
    assert none.stdout.strip() == "No quarantined rows of table accounts."


def test_a_governance_policy_turns_standards_into_warnings_and_extends_vocabularies(home, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "sales_reps.csv").write_text(
        "rep_id,name,role,region,email\nR1,Ana,director,EMEA,ana@x.example\nR2,Ben,rep,Central,not-an-email\n"
        "R3,Cy,rep,MARS,cy@x.example\nR3,Cy,rep,MARS,cy@x.example\n")
    policy = tmp_path / "standards.yaml"
    policy.write_text("standards:\n  - {table: sales_reps, rule: valid_email, severity: warning, reason: old CRM}\n"
                      "vocabularies:\n  region: [Central, East, West]\n")
    report = last_json(run("ingest", str(folder), "--standards", str(policy), "--json", home=home))
    reps = report["tables"]["sales_reps"]
    assert (reps["read"], reps["stored"], reps["quarantined"]) == (4, 2, 2)  # R3 twice: one record, held once each
    assert (reps["flagged"], reps["duplicates"]) == (1, 0)
    assert reps["by_warning"] == {"valid_email": 1} and reps["by_rule"] == {"allowed_value": 2}
    flags = last_json(run("data", "flags", "--json", home=home))
    assert flags["total"] == 1 and flags["rows"][0]["row_key"] == "R2" and flags["rows"][0]["source_line"] == "3"
    assert "email='not-an-email'" in flags["rows"][0]["detail"] and "not-an-email" in flags["rows"][0]["record"]
    from features.store import FeatureStore
    from salesml.settings import get_settings

    with FeatureStore(get_settings(home=home).feature_store_path, read_only=True) as store:
        stored = store.table("sales_reps").execute().set_index("rep_id")
    assert stored.loc["R2", "region"] == "Central" and pd.isna(stored.loc["R2", "email"])  # a flagged value is missing
    listed = last_json(run("data", "standards", "--table", "sales_reps", "--standards", str(policy), "--json",
                           home=home))
    assert next(r for r in listed["rules"] if r["name"] == "valid_email")["severity"] == "warning"
    region = next(r for r in listed["rules"] if r["name"] == "allowed_value" and r["columns"] == ["region"])
    assert "Central" in region["description"] and region["severity"] == "blocking"
    # Under the home's policy file, the same as --standards; a bad policy is a clear error naming the entry.
    (home / "standards.yaml").write_text(policy.read_text())
    again = last_json(run("ingest", str(folder), "--json", home=home))
    assert again["tables"]["sales_reps"]["flagged"] == 1
    policy.write_text("standards:\n  - {table: sales_reps, rule: valid_emial, severity: warning}\n")
    bad = run("ingest", str(folder), "--standards", str(policy), home=home, check=False)
    assert bad.returncode == 2 and "valid_emial" in bad.stderr and "standards[1]" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_import_with_a_mapping(home, tmp_path):
    csv = tmp_path / "leads.csv"
    csv.write_text("id,won,amount,segment\n1,Y,10,a\n2,N,20,b\n3,N,,b\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text("kind: task\nname: leads\nid: id\nlabel: {column: won, positive: Y}\n"
                       "features: {amount: float}\nsensitive: [segment]\n")
    report = last_json(run("import", "--from", str(csv), "--mapping", str(mapping), "--json", home=home))
    assert report["tables"]["task_leads"]["stored"] == 3
    missing = run("import", "--from", str(csv), "--json", home=home, check=False)
    assert missing.returncode == 2 and "DATASET" in missing.stderr


def test_a_demo_too_small_to_train_stops_with_a_clear_message(home):
    # The whole demo (train, audit, promote, serve) is driven in tests/e2e/test_service.py.
    result = run("demo", "--accounts", "100", "--months", "6", "--no-serve", "--json", home=home, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "200" in result.stderr and "baseline" in result.stderr
    assert (home / "features.duckdb").is_file()

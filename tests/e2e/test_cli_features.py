"""`salesml features` as a user runs it, on a small simulated organisation."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from tests.e2e.test_cli_data import last_json, run


@pytest.fixture(scope="module")
def org_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("org")
    run("simulate", "--accounts", "120", "--months", "8", "--seed", "2", "--out", str(out), home=home)
    run("ingest", str(out), home=home)
    return home


def test_build_describe_and_list(org_home, tmp_path):
    missing = run("features", "build", "opportunity", "--as-of", "2024-08-31", "--cutoffs", "monthly", "--from",
                  "2024-03-01", "--out", str(tmp_path / "x.parquet"), "--json", home=org_home)
    assert "sentiment" in missing.stderr  # warned: no sentiment scores yet
    sentiment = last_json(run("features", "sentiment", "--json", home=org_home))
    assert sentiment["scored"]["support_tickets"] > 0
    result = last_json(run("features", "build", "opportunity", "--as-of", "2024-08-31", "--cutoffs", "monthly",
                           "--from", "2024-03-01", "--out", str(tmp_path / "opp.parquet"), "--json", home=org_home))
    assert set(result) == {"view", "rows", "columns", "label_columns", "version", "out"}
    assert result["label_columns"] == ["label_lost_90d", "label_days_to_close"]
    table = pq.read_table(tmp_path / "opp.parquet")
    assert table.num_rows == result["rows"] and table.column_names == result["columns"]
    assert table.schema.metadata[b"salesml.version"].decode() == result["version"]
    assert len(set(table.column("cutoff").to_pylist())) == 6
    week = last_json(run("features", "build", "product_week", "--as-of", "2024-08-31", "--out",
                         str(tmp_path / "pw.parquet"), "--json", home=org_home))
    assert week["label_columns"] == ["units", "revenue", "avg_paid_price", "avg_discount"]
    listed = last_json(run("features", "list", "--json", home=org_home))
    assert {v["version"] for v in listed["versions"]} >= {result["version"], week["version"]}
    described = last_json(run("features", "describe", "customer", "--json", home=org_home))
    names = [c["name"] for c in described["columns"]]
    assert "share_hardware" in names and "assoc_top_lift" in names and "label_churn_90d" in names
    assert all(c["meaning"] for c in described["columns"])


@pytest.mark.parametrize(("args", "message"), [
    (["nope", "--as-of", "2024-08-31"], "unknown view 'nope'"),
    (["opportunity", "--as-of", "2024-08-31", "--cutoffs", "monthly", "--from", "2024-03-01", "--to", "2024-12-31"],
     "after --as-of"),
    (["product_week", "--as-of", "2024-08-31", "--cutoffs", "monthly"], "--from/--to"),
    (["opportunity", "--as-of", "31/08/2024"], "--as-of must be a date"),
])
def test_bad_requests_get_clear_errors(org_home, tmp_path, args, message):
    result = run("features", "build", *args, "--out", str(tmp_path / "x.parquet"), "--json", home=org_home,
                 check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr

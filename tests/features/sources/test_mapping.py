"""Bring your own data: any CSV or Parquet file, mapped by YAML, on files these tests write themselves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.ingest import Source, ingest
from features.model import TABLES
from features.sources.mapping import MappingError, load_mapping, sources_from_mapping
from features.store import FeatureStore

TASK_YAML = """
kind: task
name: crm_churn
id: Customer Ref
timestamp: Snapshot
label: {column: "Churned?", positive: "yes", negative: ["no"]}
features:
  Plan: category
  Seats: int
  Monthly Fee: float
sensitive: [Gender]
read: {delimiter: ";"}
"""

CANONICAL_YAML = """
kind: canonical
table: opportunities
columns:
  opportunity_id: Opp ID
  account_id: Account
  owner_rep_id: Owner
  amount: Amount (USD)
  created_at: Created
  closed_at: Closed
  stage: Stage
  outcome: Result
constants: {currency: USD}
values:
  stage: {"Closed Won": closed_won, "Closed Lost": closed_lost, "Negotiation": negotiation}
  outcome: {"Won": won, "Lost": lost}
formats: {created_at: "%d/%m/%Y", closed_at: "%d/%m/%Y"}
"""


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    with FeatureStore(tmp_path / "f.duckdb") as s:
        yield s


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_task_mapping_imports_a_file_the_user_brings(tmp_path, store):
    csv = _write(tmp_path, "churn.csv", (
        "Customer Ref;Snapshot;Churned?;Plan;Seats;Monthly Fee;Gender\n"
        "C1;2025-01-31;yes;pro;10;99.5;f\n"
        "C2;2025-01-31;no;basic;2;19;m\n"
        "C3;2025-01-31;maybe;basic;3;19;m\n"
        "C4;2025-01-31;no;basic;lots;19;f\n"
        "C4;2025-02-28;no;basic;4;19;f\n"
        "C6;2025-01-31;;basic;4;19;f\n"))
    mapping = load_mapping(_write(tmp_path, "m.yaml", TASK_YAML))
    imported = sources_from_mapping(mapping, csv)
    store.register_task(imported.tasks[0]["name"], imported.tasks[0])
    report = ingest(imported.sources, store, as_of=pd.Timestamp("2025-12-31"))
    t = report.tables["task_crm_churn"]
    assert (t.read, t.stored, t.quarantined) == (6, 2, 4)
    assert dict(t.by_rule) == {"label_value_known": 1, "type_mismatch": 1, "unique_key": 2, "required_field": 1}
    rows = store.table("task_crm_churn").execute().sort_values("row_id")
    assert rows["row_id"].tolist() == ["C1", "C2"]
    assert rows["label"].tolist() == [1, 0]
    assert rows["Seats"].tolist() == [10, 2]
    q = store.quarantine("task_crm_churn").set_index("source_line")
    assert q.loc[5, "rules"] == "type_mismatch,unique_key" and "Seats='lots'" in q.loc[5, "detail"]
    spec = store.task_spec("crm_churn")
    assert spec["sensitive"] == [{"name": "Gender", "type": "categorical"}]
    assert [f["name"] for f in spec["features"]] == ["Plan", "Seats", "Monthly Fee"]


def test_repeated_ids_keep_every_row_with_a_numbered_row_id(tmp_path, store):
    csv = _write(tmp_path, "churn.csv", (
        "Customer Ref;Snapshot;Churned?;Plan;Seats;Monthly Fee;Gender\n"
        "C1;2025-01-31;yes;pro;10;99.5;f\n"
        "C2;2025-01-31;no;basic;2;19;m\n"
        "C1;2025-02-28;no;pro;12;99.5;f\n"
        "C1;2025-03-31;no;pro;12;99.5;f\n"))
    yaml_text = TASK_YAML.replace("id: Customer Ref", "id: Customer Ref\nrepeated_ids: true")
    assert "repeated_ids" in yaml_text
    imported = sources_from_mapping(load_mapping(_write(tmp_path, "m.yaml", yaml_text)), csv)
    store.register_task(imported.tasks[0]["name"], imported.tasks[0])
    report = ingest(imported.sources, store, as_of=pd.Timestamp("2025-12-31"))
    t = report.tables["task_crm_churn"]
    assert (t.read, t.stored, t.quarantined) == (4, 4, 0)
    rows = store.table("task_crm_churn").execute().sort_values("source_row")
    assert rows["row_id"].tolist() == ["C1", "C2", "C1#2", "C1#3"]
    assert rows["Seats"].tolist() == [10, 2, 12, 12]


def test_a_canonical_mapping_imports_a_crm_export(tmp_path, store, small_org):
    parents = [Source(TABLES[n], tmp_path / f"{n}.parquet", small_org.tables[n]) for n in ("sales_reps", "accounts")]
    ingest(parents, store, pd.Timestamp("2026-01-01"))
    account = small_org.tables["accounts"]["account_id"].iloc[0]
    rep = small_org.tables["sales_reps"]["rep_id"].iloc[-1]
    csv = _write(tmp_path, "deals.csv", (
        "Opp ID,Account,Owner,Amount (USD),Created,Closed,Stage,Result\n"
        f"D1,{account},{rep},12000,03/02/2025,15/04/2025,Closed Won,Won\n"
        f"D2,{account},{rep},8000,05/02/2025,,Negotiation,\n"
        f"D3,{account},{rep},-5,05/02/2025,,Negotiation,\n"
        f"D4,NOBODY,{rep},500,05/02/2025,01/03/2025,Closed Lost,Lost\n"
        f"D5,{account},{rep},700,31/02/2025,,Negotiation,\n"))
    imported = sources_from_mapping(load_mapping(_write(tmp_path, "m.yaml", CANONICAL_YAML)), csv)
    report = ingest(imported.sources, store, pd.Timestamp("2026-01-01"))
    t = report.tables["opportunities"]
    assert (t.read, t.stored, t.quarantined) == (5, 2, 3)
    assert dict(t.by_rule) == {"amount_in_range": 1, "orphan": 1, "type_mismatch": 1}
    stored = store.table("opportunities").execute().set_index("opportunity_id")
    assert stored.loc["D1", "stage"] == "closed_won" and stored.loc["D1", "currency"] == "USD"
    assert stored.loc["D1", "created_at"] == pd.Timestamp("2025-02-03")


def test_an_unmapped_required_field_is_a_clear_error(tmp_path):
    yaml_text = CANONICAL_YAML.replace("  owner_rep_id: Owner\n", "")
    csv = _write(tmp_path, "deals.csv", "Opp ID,Account,Owner,Amount (USD),Created,Closed,Stage,Result\n")
    with pytest.raises(MappingError, match="required fields of opportunities are not mapped: owner_rep_id"):
        sources_from_mapping(load_mapping(_write(tmp_path, "m.yaml", yaml_text)), csv)


def test_a_type_that_fits_no_value_is_a_clear_error(tmp_path):
    csv = _write(tmp_path, "churn.csv", (
        "Customer Ref;Snapshot;Churned?;Plan;Seats;Monthly Fee;Gender\n"
        "C1;2025-01-31;yes;pro;ten;99.5;f\nC2;2025-01-31;no;pro;two;9;m\n"))
    with pytest.raises(MappingError, match="column 'Seats' is declared int but none of its values is"):
        sources_from_mapping(load_mapping(_write(tmp_path, "m.yaml", TASK_YAML)), csv)


def test_mapped_columns_missing_from_the_file_are_named(tmp_path):
    csv = _write(tmp_path, "churn.csv", "Customer Ref;Churned?;Plan\nC1;yes;pro\n")
    with pytest.raises(MappingError, match="mapped columns not in the file") as err:
        sources_from_mapping(load_mapping(_write(tmp_path, "m.yaml", TASK_YAML)), csv)
    for column in ("Snapshot", "Seats", "Monthly Fee", "Gender"):
        assert column in str(err.value)


@pytest.mark.parametrize(("text", "message"), [
    ("kind: nonsense\n", "kind: task"),
    ("kind: task\nname: Bad Name\nid: x\nlabel: {column: y, positive: 1}\nfeatures: {}\n", "name"),
    ("kind: canonical\ntable: deals\ncolumns: {}\n", "unknown canonical table 'deals'"),
    ("kind: task\nname: t\nid: x\nlabel: {column: y, positive: 1}\nfeatures: {a: money}\n", "features.a"),
])
def test_invalid_mappings_are_refused_with_the_field(tmp_path, text, message):
    csv = _write(tmp_path, "f.csv", "x,y,a\n1,1,1\n")
    with pytest.raises(MappingError, match=message):
        sources_from_mapping(load_mapping(_write(tmp_path, "m.yaml", text)), csv)


def test_a_task_file_without_an_id_column_is_numbered_from_one(tmp_path, store):
    csv = _write(tmp_path, "response.csv", (
        "Responded;Channel;Age\n"
        "yes;email;34\n"
        "no;post;51\n"
        "no;email;29\n"))
    yaml_text = """
kind: task
name: campaign
label: {column: Responded, positive: "yes"}
features: {Channel: category, Age: int}
read: {delimiter: ";"}
"""
    imported = sources_from_mapping(load_mapping(_write(tmp_path, "m.yaml", yaml_text)), csv)
    store.register_task(imported.tasks[0]["name"], imported.tasks[0])
    report = ingest(imported.sources, store, as_of=pd.Timestamp("2025-12-31"))
    t = report.tables["task_campaign"]
    assert (t.read, t.stored, t.quarantined) == (3, 3, 0)
    rows = store.table("task_campaign").execute().sort_values("source_row")
    assert rows["row_id"].tolist() == ["1", "2", "3"]
    assert rows["label"].tolist() == [1, 0, 0]
    assert store.task_spec("campaign")["id"] == "row number"


def test_a_parquet_file_written_with_pandas_index_imports(tmp_path, store):
    frame = pd.DataFrame({"Customer Ref": ["C1", "C2", "C3", "C4"], "Snapshot": ["2025-01-31"] * 4,
                          "Churned?": ["yes", "no", "no", "yes"], "Plan": ["pro", "basic", "basic", "pro"],
                          "Seats": [10, 2, 3, 8], "Monthly Fee": [99.5, 19.0, 19.0, 99.5],
                          "Gender": ["f", "m", "m", "f"]})
    kept = pd.concat([frame.iloc[[3, 1]], frame.iloc[[0]]])  # a filter and a concat: an index 3, 1, 0
    path = tmp_path / "churn.parquet"
    kept.to_parquet(path)
    import pyarrow.parquet as pq

    assert "__index_level_0__" in pq.read_schema(path).names
    yaml_text = TASK_YAML.replace('read: {delimiter: ";"}\n', "")
    imported = sources_from_mapping(load_mapping(_write(tmp_path, "m.yaml", yaml_text)), path)
    store.register_task(imported.tasks[0]["name"], imported.tasks[0])
    report = ingest(imported.sources, store, as_of=pd.Timestamp("2025-12-31"))
    assert (report.tables["task_crm_churn"].read, report.tables["task_crm_churn"].stored) == (3, 3)
    rows = store.table("task_crm_churn").execute().sort_values("source_row")
    assert rows["row_id"].tolist() == ["C4", "C2", "C1"] and rows["source_row"].tolist() == [1, 2, 3]


def test_a_canonical_parquet_file_with_pandas_index_ingests(tmp_path, store, small_org):
    folder = tmp_path / "org"
    folder.mkdir()
    reps = small_org.tables["sales_reps"]
    reps[reps.index % 2 == 0].to_parquet(folder / "sales_reps.parquet")  # index 0, 2, 4, ...: kept by pandas
    from features.ingest import discover_sources

    report = ingest(discover_sources(folder), store, as_of=pd.Timestamp("2026-01-01"))
    t = report.tables["sales_reps"]
    assert t.read == t.stored + t.quarantined == len(reps[reps.index % 2 == 0])

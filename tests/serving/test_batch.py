"""Batch scoring of files: chunk by chunk, the service's checks, and rows it would refuse kept aside, not lost."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from serving.batch import rejected_file, score_rows
from serving.predict import check_feature_frame


def _frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"opportunity_id": [f"O{i}" for i in range(n)],
                         "meetings_30d": rng.poisson(3, n).astype(float), "discount": rng.uniform(0, 0.4, n),
                         "dm_departures": rng.poisson(0.2, n).astype(float),
                         "stage": rng.choice(["lead", "proposal"], n)})


def test_file_values_are_checked_like_a_requests_records(toy_model):
    frame = _frame(6).astype({"meetings_30d": object, "dm_departures": object})
    frame.loc[1, "meetings_30d"] = "lots"
    frame.loc[2, "discount"] = np.inf
    frame.loc[3, "stage"] = "negotiation"
    frame.loc[4, "meetings_30d"] = "3"  # a CSV column with one bad cell is read as text: its numbers still count
    frame.loc[5, "dm_departures"] = "TRUE"
    features, problems = check_feature_frame(frame, toy_model)
    assert problems.tolist() == [
        "", "meetings_30d: must be a number, a boolean or null (got 'lots')", "discount: must be a finite number (got inf)",
        "stage: unknown category 'negotiation' (known: lead, proposal)", "", ""]
    assert features.loc[4, "meetings_30d"] == 3.0 and features.loc[5, "dm_departures"] == 1.0
    assert features.dtypes["meetings_30d"] == np.float64 and list(features.columns) == toy_model.features


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_rows_the_service_would_refuse_are_set_aside_and_the_rest_scored(tmp_path, toy_model, suffix):
    frame = _frame().astype({"meetings_30d": str})  # numbers kept as text, as some exports do
    frame.loc[7, "meetings_30d"] = "lots"
    frame.loc[31, "stage"] = "negotiation"
    source = tmp_path / f"in.{suffix}"
    frame.to_csv(source, index=False) if suffix == "csv" else frame.to_parquet(source)
    target = tmp_path / f"out.{suffix}"
    result = score_rows(toy_model, "risk.opportunity_loss", "7", "opportunity_loss", source, target, k=2,
                        chunk_rows=15)
    assert result["rows_read"] == 40 == result["rows"] + result["rejected"] and result["rejected"] == 2
    out = pd.read_csv(target) if suffix == "csv" else pd.read_parquet(target)
    assert len(out) == 38 and not {"O7", "O31"} & set(out["opportunity_id"])
    assert out["probability"].between(0, 1).all() and json.loads(out["reasons"].iloc[0])
    rejected = pd.read_csv(rejected_file(target))
    assert result["rejected_file"] == str(rejected_file(target))
    assert rejected["row"].tolist() == [8, 32]  # 1-based rows of the file, across chunks
    assert rejected["opportunity_id"].tolist() == ["O7", "O31"]
    assert rejected["problems"].str.contains("meetings_30d: must be a number").iloc[0]
    assert rejected["meetings_30d"].iloc[0] == "lots"  # kept as read, to be fixed and scored again
    fixed = rejected.assign(meetings_30d=1.0, stage="lead").drop(columns=["problems"])
    fixed.to_csv(tmp_path / "fixed.csv", index=False)
    again = score_rows(toy_model, "risk.opportunity_loss", "7", "opportunity_loss", tmp_path / "fixed.csv",
                       tmp_path / "again.csv")
    assert again["rows"] == 2 and again["rejected"] == 0 and again["rejected_file"] is None
    assert not rejected_file(tmp_path / "again.csv").exists()


def test_a_clean_file_scores_every_row_as_before(tmp_path, toy_model):
    _frame().to_parquet(tmp_path / "in.parquet")
    result = score_rows(toy_model, "risk.opportunity_loss", "7", "opportunity_loss", tmp_path / "in.parquet",
                        tmp_path / "out.parquet", chunk_rows=16)
    frame = _frame()
    expected = toy_model.predict_proba(frame[toy_model.features])
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert result["rows"] == 40 and result["rejected"] == 0
    np.testing.assert_allclose(out["probability"], np.round(expected, 6), atol=1e-6)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_file_with_every_row_rejected_still_gets_its_output_with_the_columns(tmp_path, toy_model, suffix):
    frame = _frame(5).assign(stage="negotiation")
    source = tmp_path / f"in.{suffix}"
    frame.to_csv(source, index=False) if suffix == "csv" else frame.to_parquet(source)
    result = score_rows(toy_model, "risk.opportunity_loss", "7", "opportunity_loss", source,
                        tmp_path / f"out.{suffix}")
    assert result["rows"] == 0 and result["rejected"] == 5
    out = pd.read_csv(tmp_path / "out.csv") if suffix == "csv" else pd.read_parquet(tmp_path / "out.parquet")
    assert out.empty and {"opportunity_id", "probability", "risk_band", "reasons", "actions"} <= set(out.columns)

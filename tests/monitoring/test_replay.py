"""The replayed log rows of a value model and a segmentation read back as the service's own rows do: the fields
monitoring labels them by (account, as-of day, horizon; segment) come back as columns."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd

from features.production import read_inference_log, write_log_part
from monitoring.replay import segments_log_columns, value_log_columns

AT = datetime(2025, 1, 31, 18)


def test_value_rows_carry_the_horizon_from_their_as_of_day(tmp_path):
    values = pd.DataFrame({"account_id": ["a", "b"], "expected_value": [12.5, np.nan], "ltv": [40.0, 0.0],
                           "p_alive": [0.9, 0.2], "value_band": ["high", "low"]})
    write_log_part(tmp_path, "customer_value", "2025-01-31", value_log_columns(
        "customer_value", "value.customer_value", "3", values, AT, date(2025, 1, 31), 90))
    logged = read_inference_log(tmp_path, "customer_value")
    assert logged["account_id"].tolist() == ["a", "b"] and logged["version"].tolist() == ["3", "3"]
    assert logged["as_of"].tolist() == ["2025-01-31"] * 2 and logged["horizon_days"].tolist() == [90, 90]
    assert logged["p_alive"].tolist() == [0.9, 0.2] and logged["kind"].unique().tolist() == ["value"]
    assert logged["prediction"].iloc[0] == 12.5 and np.isnan(logged["prediction"].iloc[1])
    assert pd.isna(logged["expected_value"].iloc[1])


def test_segment_rows_carry_the_segment_as_the_prediction(tmp_path):
    assigned = pd.DataFrame({"account_id": ["a", "b"], "segment": [2, -1], "name": ["loyal", "unassigned"],
                             "strength": [0.8, 0.0]})
    write_log_part(tmp_path, "customer_segments", "2025-01-31", segments_log_columns(
        "customer_segments", "segments.customer_segments", "1", assigned, AT))
    logged = read_inference_log(tmp_path, "customer_segments")
    assert logged["segment"].tolist() == [2, -1] and logged["prediction"].tolist() == [2.0, -1.0]
    assert logged["name"].tolist() == ["loyal", "unassigned"] and (logged["source"] == "request").all()

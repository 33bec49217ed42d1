"""The logged training dataset's schema, inferred from a sample, is the schema MLflow infers from every row."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.sources import LocalArtifactDatasetSource

from experiments.tracking import SCHEMA_ROWS, SampledSchemaDataset


def test_the_sampled_schema_is_mlflows_full_schema():
    n = SCHEMA_ROWS * 3
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"amount": rng.normal(size=n), "count": rng.integers(0, 9, n), "stage": rng.choice(
        ["lead", "proposal"], n), "flag": rng.random(n) > 0.5, "late_missing": rng.normal(size=n),
        "late_text": pd.Series([None] * n, dtype=object)})
    frame.loc[n - 1, "late_missing"] = np.nan  # missing only past the sampled head: not required
    frame.loc[n - 2, "late_text"] = "first value far down"  # no value in the head: typed from its first one
    ours = SampledSchemaDataset(df=frame, source=LocalArtifactDatasetSource("file:///tmp"), digest="abc").schema
    assert ours == mlflow.data.from_pandas(frame).schema
    assert not {c.name: c for c in ours.inputs}["late_missing"].required

"""MLflow pyfunc wrapper of a segmentation, logged as code (models from code).

The artifact folder holds the scaler, names and profiles as JSON and Parquet, the accounts' assignments, and the
HDBSCAN clusterer pickled (it has no native format). ``load_context`` unpickles it only after every file matches
the SHA-256 list logged beside the folder (``digests``), and salesml's own loaders check the same files against
the registry's tags. ``predict`` takes one row per account: an ``account_id`` the model assigned in training, or a
full customer-profile record (then ``approximate_predict`` assigns it).
"""

from __future__ import annotations

import json

import mlflow
import pandas as pd

from training.segments import ID, SegmentModel


class SegmentsPyfunc(mlflow.pyfunc.PythonModel):
    """Segment, name, membership strength, lifetime value and P(alive) per account."""

    def load_context(self, context) -> None:
        with open(context.artifacts["digests"]) as handle:
            expected = json.load(handle)
        self.model = SegmentModel.load(context.artifacts["model_dir"], expected)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input.copy()
        frame[ID] = frame[ID].astype(str)
        known = self.model.assignments.set_index(ID)
        features = set(self.model.scaler.numeric) | set(self.model.scaler.categorical)
        if features <= set(frame.columns):
            out = self.model.assign(frame)
            out.insert(0, ID, frame[ID].to_numpy())
            return out.reset_index(drop=True)
        rows = known.reindex(frame[ID])
        return pd.DataFrame({ID: frame[ID].to_numpy(), "segment": rows["segment"].fillna(-1).astype(int).to_numpy(),
                             "name": rows["name"].fillna("unknown").to_numpy(),
                             "strength": rows["strength"].fillna(0.0).to_numpy()})


mlflow.models.set_model(SegmentsPyfunc())

"""The stage-based win-rate baseline: the loss rate of each stage in the training history.

It is what an opportunity model falls back to when there are too few won and lost deals to learn from. It has
the same interface as ``RiskModel`` and is saved as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from training.models import MODEL_FILE, artifact_digests


class StageBaseline:
    """P(loss) = smoothed loss rate of the deal's current stage.

    Args:
        prior_weight: pseudo-count pulling each stage's rate towards the overall rate.
    """

    family = "stage_baseline"

    def __init__(self, prior_weight: float = 10.0, metadata: dict | None = None):
        self.prior_weight = prior_weight
        self.metadata = metadata or {}

    def fit(self, stages: pd.Series, y: np.ndarray) -> StageBaseline:
        """Learn per-stage loss rates."""
        y = np.asarray(y, dtype=float)
        overall = float(y.mean()) if len(y) else 0.5
        frame = pd.DataFrame({"stage": stages.astype(str).to_numpy(), "y": y})
        grouped = frame.groupby("stage")["y"].agg(["sum", "count"])
        self.overall_ = overall
        self.rates_ = ((grouped["sum"] + self.prior_weight * overall) / (grouped["count"] + self.prior_weight)).to_dict()
        return self

    @property
    def features(self) -> list[str]:
        """Columns the baseline reads."""
        return ["stage"]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """The stage's loss rate, or the overall rate for an unseen stage."""
        return frame["stage"].astype(str).map(self.rates_).fillna(self.overall_).to_numpy(dtype=float)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The stage's rate minus the overall rate, as the only contribution."""
        return pd.DataFrame({"stage": self.predict_proba(frame) - self.overall_}, index=frame.index)

    def save(self, folder: Path) -> dict[str, str]:
        """Write the JSON artifact; returns file digests."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_text(json.dumps({"family": self.family, "prior_weight": self.prior_weight,
                                                     "overall": self.overall_, "rates": self.rates_,
                                                     "metadata": self.metadata}, indent=1, default=str))
        return artifact_digests(folder)

    @classmethod
    def from_spec(cls, spec: dict) -> StageBaseline:
        """Rebuild from the saved JSON."""
        model = cls(spec["prior_weight"], spec["metadata"])
        model.overall_ = float(spec["overall"])
        model.rates_ = {k: float(v) for k, v in spec["rates"].items()}
        return model

"""MLflow pyfunc wrapper of a churn or deal-loss model, logged as code (models from code): nothing is pickled.

The artifact folder holds the preprocessing, the native booster and the calibrator (``training.models``).
``predict`` takes the raw feature columns and returns the calibrated probability and its risk band, so
``mlflow models serve`` can serve the same object salesml serves.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from training.models import RiskModel, alert_thresholds


class RiskPyfunc(mlflow.pyfunc.PythonModel):
    """Calibrated risk probability from raw feature columns."""

    def load_context(self, context) -> None:
        self.model = RiskModel.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        p = self.model.predict_proba(model_input)
        threshold = alert_thresholds(self.model, model_input)
        band = np.where(p >= threshold, "high", np.where(p >= threshold / 2, "medium", "low"))
        return pd.DataFrame({"probability": p, "risk_band": band}, index=model_input.index)


mlflow.models.set_model(RiskPyfunc())

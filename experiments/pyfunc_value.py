"""MLflow pyfunc wrapper of a lifetime-value model, logged as code (models from code): nothing is pickled.

The artifact folder holds the BG/NBD and Gamma-Gamma parameters as JSON, the accounts' purchase summaries as
Parquet and, when the registered model is the booster, its native file and the accounts' features
(``training.value``). ``predict`` takes one row per account (``account_id``; the horizon in days is the optional
``horizon_days`` parameter) and returns expected purchases, spend and value over the horizon, P(alive),
lifetime value and value band.
"""

from __future__ import annotations

import mlflow
import pandas as pd

from training.value import ValueModel


class ValuePyfunc(mlflow.pyfunc.PythonModel):
    """Expected purchases, value, P(alive) and lifetime value per account."""

    def load_context(self, context) -> None:
        self.model = ValueModel.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        horizon = (params or {}).get("horizon_days")
        accounts = list(dict.fromkeys(model_input["account_id"].astype(str)))
        return self.model.predict(accounts, int(horizon) if horizon else None)


mlflow.models.set_model(ValuePyfunc())

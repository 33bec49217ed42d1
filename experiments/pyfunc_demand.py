"""MLflow pyfunc wrapper of a demand model, logged as code (models from code): nothing is pickled.

The artifact folder holds the model's settings, its history, the price references and conformal quantiles as
plain files and the booster in its native format (``training.demand``). ``predict`` takes one row per series
(``unique_id``, and optionally ``horizon``) or one row per series and step with a ``price`` column (a what-if
price path), and returns p10 / p50 / p90 per series and step.
"""

from __future__ import annotations

import mlflow
import pandas as pd

from training.demand import DemandForecaster


class DemandPyfunc(mlflow.pyfunc.PythonModel):
    """p10 / p50 / p90 forecasts per series and step."""

    def load_context(self, context) -> None:
        self.model = DemandForecaster.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input.copy()
        frame["unique_id"] = frame["unique_id"].astype(str)
        ids = list(dict.fromkeys(frame["unique_id"]))
        horizon = int((params or {}).get("horizon") or (frame["horizon"].max() if "horizon" in frame.columns
                                                         else self.model.horizon))
        prices = None
        if "price" in frame.columns and frame["price"].notna().any():
            prices = {uid: g["price"].to_numpy(dtype=float) for uid, g in frame.groupby("unique_id", sort=False)}
            horizon = min(len(p) for p in prices.values())
        out = self.model.forecast(horizon, prices=prices, ids=ids)
        out["ds"] = out["ds"].dt.strftime("%Y-%m-%d")
        return out.reset_index(drop=True)


mlflow.models.set_model(DemandPyfunc())

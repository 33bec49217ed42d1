"""The practical limit for the serving benchmark: a bare Starlette endpoint calling the booster directly.

No authentication, scope check, validation, reasons or logging: JSON in, one row built by hand, the native
booster and the calibrator, JSON out. ``SALESML_BENCH_MODEL_DIR`` is the model artifact folder. Not a benchmark
itself (it prints nothing); ``serving.py`` runs it with uvicorn.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from training.models import RiskModel, booster_predict


def create_app() -> Starlette:
    """The app (a factory, so that each uvicorn worker loads the model itself)."""
    model = RiskModel.load(Path(os.environ["SALESML_BENCH_MODEL_DIR"]))
    numeric = model.preprocessor.numeric
    codes = {c: {v: float(i) for i, v in enumerate(cats)} for c, cats in model.preprocessor.categories_.items()}
    categorical = model.preprocessor.categorical

    def row(record: dict) -> list[float]:
        values = [float(record[c]) if record.get(c) is not None else math.nan for c in numeric]
        return values + [codes[c].get(str(record.get(c)), math.nan) for c in categorical]

    async def invocations(request: Request) -> Response:
        records = json.loads(await request.body())["dataframe_records"]
        matrix = np.asarray([row(r) for r in records], dtype=float)
        p = model.calibrator.predict(booster_predict(model.booster, model.family, matrix))
        return Response(json.dumps({"predictions": [round(float(x), 6) for x in p]}), media_type="application/json")

    return Starlette(routes=[Route("/invocations", invocations, methods=["POST"])])

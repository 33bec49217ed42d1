"""A small trained model and an in-process app over it (no registry, no server)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from salesml.access import Principal, hash_token, save_principals
from salesml.settings import get_settings
from serving.app import create_app
from serving.predict import Hierarchy, Lookup, load_rules
from serving.state import Served, ServingState
from training.calibration import Calibrator
from training.models import RiskModel, fit_estimator, make_estimator, native_booster
from training.preprocess import TabularPreprocessor

TOKENS = {"rep": "tok-rep", "manager": "tok-manager", "exec": "tok-exec", "scientist": "tok-scientist"}


@pytest.fixture(scope="session")
def toy_model() -> RiskModel:
    rng = np.random.default_rng(0)
    n = 500
    x = pd.DataFrame({"meetings_30d": rng.poisson(3, n).astype(float), "discount": rng.uniform(0, 0.4, n),
                      "dm_departures": rng.poisson(0.2, n).astype(float), "stage": rng.choice(["lead", "proposal"], n)})
    y = (rng.random(n) < 1 / (1 + np.exp(1 - 4 * x["discount"] + 0.3 * x["meetings_30d"]))).astype(int).to_numpy()
    pre = TabularPreprocessor(["meetings_30d", "discount", "dm_departures"], ["stage"]).fit(x)
    est = fit_estimator(make_estimator("lightgbm", {}, threads=1, seed=0, n_estimators=30), "lightgbm",
                        pre.transform(x), y, None, ["stage"], 10)
    cal = Calibrator("sigmoid").fit(est.predict_proba(pre.transform(x))[:, 1], y)
    return RiskModel("lightgbm", native_booster(est, "lightgbm"), pre, cal, {"task": "opportunity_loss",
                                                                             "alert_threshold": 0.5})


@pytest.fixture
def served_state(toy_model) -> ServingState:
    features = pd.DataFrame({"opportunity_id": ["O1", "O2", "O3"], "meetings_30d": [0.0, 4.0, 1.0],
                             "discount": [0.35, 0.05, 0.1], "dm_departures": [1.0, 0.0, 0.0],
                             "stage": ["lead", "proposal", "lead"], "amount": [1000.0, 2000.0, 500.0]})
    lookup = Lookup("opportunity_id", features.set_index("opportunity_id", drop=False),
                    {"O1": "R1", "O2": "R2", "O3": "R3"}, as_of="2025-01-31")
    served = Served("opportunity_loss", "risk.opportunity_loss", "7", toy_model, lookup, "PASS", None, "now")
    deals = pd.DataFrame({"opportunity_id": ["O1", "O2", "O3", "O9"], "owner_rep_id": ["R1", "R2", "R3", "R1"],
                          "amount": [1000.0, 2000.0, 500.0, 700.0],
                          "closed_at": [None, None, None, pd.Timestamp("2025-01-10")],
                          "outcome": [None, None, None, "won"], "stage": ["lead", "proposal", "lead", "closed_won"]})
    return ServingState({"opportunity_loss": served}, Hierarchy({"R1": "T1", "R2": "T1", "R3": "T2"}), {}, deals)


@pytest.fixture
def client(tmp_path, monkeypatch, served_state):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("SALESML_HOME", str(tmp_path))
    monkeypatch.setenv("SALESML_MAX_BATCH_ROWS", "5")
    settings = get_settings()
    save_principals(settings.access_file, [
        Principal("rita", "sales_rep", "rep:R1", hash_token(TOKENS["rep"])),
        Principal("max", "sales_manager", "team:T1", hash_token(TOKENS["manager"])),
        Principal("eve", "executive", "all", hash_token(TOKENS["exec"])),
        Principal("sam", "data_scientist", "all", hash_token(TOKENS["scientist"])),
    ])

    class Server:
        state = served_state
        rules = load_rules()

    return TestClient(create_app(settings, lambda: Server))


def auth(who: str) -> dict:
    return {"Authorization": f"Bearer {TOKENS[who]}"}

"""`salesml train churn` as a user runs it: JSON output, clear refusals, and resuming a killed training."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from tests.e2e.test_cli_data import last_json, run


def _synthetic_task(home: Path, tmp_path: Path, rows: int = 3000) -> None:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"id": [f"c{i}" for i in range(rows)], "tenure": rng.integers(1, 72, rows),
                          "fee": rng.uniform(10, 120, rows).round(2), "plan": rng.choice(["a", "b", "c"], rows),
                          "region": rng.choice(["north", "south"], rows)})
    logit = -1.5 - 0.04 * frame["tenure"] + 0.02 * frame["fee"] + (frame["plan"] == "c")
    frame["left"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    frame.to_csv(tmp_path / "customers.csv", index=False)
    (tmp_path / "m.yaml").write_text("kind: task\nname: synth\nid: id\nlabel: {column: left, positive: 'yes'}\n"
                                     "features: {tenure: int, fee: float, plan: category}\nsensitive: [region]\n")
    run("import", "--from", str(tmp_path / "customers.csv"), "--mapping", str(tmp_path / "m.yaml"), home=home)


def _finished_trials(home: Path) -> int:
    db = home / "optuna.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        try:
            return con.execute("SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def _versions(home: Path) -> int:
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}", f"sqlite:///{home / 'mlflow.db'}")
    return len(client.search_model_versions("name='risk.synth'"))


def test_train_a_task_table_and_print_json(home, tmp_path):
    _synthetic_task(home, tmp_path)
    trained = run("train", "synth", "--trials", "3", "--json", home=home)
    result = last_json(trained)
    assert result["model"] == "risk.synth" and result["version"] == "1" and result["run_id"]
    assert result["metrics"]["test_roc_auc"] > 0.6 and result["metrics"]["oracle_roc_auc"] is None
    # tenure is an integer column: the signature takes it as a double, so a request may leave it missing.
    assert "integer column" not in trained.stderr
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    # The registry too: an earlier test in this process may have pointed it at its own home.
    mlflow.set_registry_uri(f"sqlite:///{home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/risk.synth/1")
    assert {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}["tenure"] == "double"
    rows = pd.DataFrame({"tenure": [12.0, None], "fee": [80.0, 80.0], "plan": ["c", "c"]})
    p = model.predict(rows)["probability"].to_numpy()
    assert np.isfinite(p).all() and p[0] != p[1]
    unknown = run("train", "nope", "--json", home=home, check=False)
    assert unknown.returncode == 2 and "unknown task 'nope'" in unknown.stderr and "synth" in unknown.stderr
    listed = last_json(run("tasks", "--json", home=home))["tasks"]
    assert {"task": "synth", "kind": "risk", "model": "risk.synth"}.items() <= next(
        t for t in listed if t["task"] == "synth").items()
    assert {t["task"] for t in listed} >= {"opportunity_loss", "customer_churn", "synth"}
    # The old spelling is a documented alias: `train churn --task` trains the same task (the study resumes).
    again = last_json(run("train", "churn", "--task", "synth", "--trials", "3", "--json", home=home))
    assert again["model"] == "risk.synth" and again["version"] == "2"
    both = run("train", "synth", "--task", "other", home=home, check=False)
    assert both.returncode == 2 and "name the task once" in both.stderr


def test_a_killed_training_resumes_its_study_and_leaves_no_orphan_version(home, tmp_path):
    _synthetic_task(home, tmp_path)
    env = {**os.environ, "SALESML_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "salesml.cli", "train", "churn", "--task", "synth", "--trials",
                             "200", "--json"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _finished_trials(home) < 3 and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = _finished_trials(home)
    assert at_kill >= 3
    assert _versions(home) == 0
    result = last_json(run("train", "churn", "--task", "synth", "--trials", str(at_kill + 2), "--json", home=home))
    assert _finished_trials(home) >= at_kill + 2
    assert _versions(home) == 1 and result["version"] == "1"

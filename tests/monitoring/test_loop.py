"""The monthly loop's retraining on a small simulated organisation: warm starts, idempotency per (task, month),
and crash safety (a process SIGKILLed during or after registration, then run again)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import optuna
import pytest

from experiments.registry import CHAMPION, TAG_GATE, TAG_REGISTERED, TAG_RETRAIN_MONTH, TAG_RETRAIN_REASON
from experiments.tracking import configure_mlflow, read_best_trial
from features.ingest import discover_sources, ingest
from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation
from features.store import FeatureStore
from monitoring.loop import LoopError, read_ledger, retrain
from salesml.settings import get_settings

NAME = "risk.opportunity_loss"
# Small and quick: one labelled month each for test and validation, a 30-day horizon, one LightGBM trial.
CONFIG = """\
task: opportunity_loss
trials: 1
horizon_days: 30
test_cutoffs: 1
validation_cutoffs: 1
max_estimators: 200
families: [lightgbm]
"""
# Promote what passes without review; the checks that need the full audit are out of this test's scope.
POLICY = """\
default:
  auto_promote: true
  checks:
    performance: {metric: roc_auc, min_value: 0.6, max_degradation: 0.05}
    fairness: {not_applicable: "the loop's own tests; fairness gating is tested with the audits"}
    drift: {not_applicable: "the loop's own tests"}
    explanations: {not_applicable: "the loop's own tests"}
"""
FIRST, SECOND = date(2024, 8, 31), date(2024, 9, 30)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with 700 simulated accounts over nine months ingested, plus the loop's config and policy."""
    root = tmp_path_factory.mktemp("loop")
    write_organisation(simulate_organisation(SimulationConfig(accounts=700, months=9, seed=3)), root / "org")
    template = root / "home"
    settings = get_settings(home=template)
    with FeatureStore.from_settings(settings) as store:
        ingest(discover_sources(root / "org"), store, as_of=date(2024, 9, 30))
    (root / "configs").mkdir()
    (root / "configs" / "opportunity_loss.yaml").write_text(CONFIG)
    (root / "policy.yaml").write_text(POLICY)
    return root


def _home(prepared: Path, tmp_path: Path, name: str = "home") -> Path:
    home = tmp_path / name
    shutil.copytree(prepared / "home", home)
    return home


def _retrain(home: Path, prepared: Path, day: date, **options):
    return retrain(get_settings(home=home), day, ["opportunity_loss"], configs=prepared / "configs",
                   policy_path=prepared / "policy.yaml", **options)


def _state(home: Path) -> dict:
    """The registry as the loop leaves it: each live version's month, gate and completeness, and the champion's
    place among them (version numbers differ when a killed registration used one)."""
    client = configure_mlflow(get_settings(home=home))
    versions = sorted(client.search_model_versions(f"name='{NAME}'"), key=lambda v: int(v.version))
    champion = client.get_registered_model(NAME).aliases.get(CHAMPION)
    return {"versions": [(v.tags.get(TAG_RETRAIN_MONTH), v.tags.get(TAG_GATE), v.tags.get(TAG_REGISTERED))
                         for v in versions],
            "champion": [str(v.version) for v in versions].index(str(champion)) if champion else None}


def test_retraining_warm_starts_from_the_champion_and_a_month_runs_once(prepared, tmp_path):
    home = _home(prepared, tmp_path)
    first = _retrain(home, prepared, FIRST).to_dict()
    outcome = first["tasks"][0]
    assert (outcome["status"], outcome["version"], outcome["champion_after"]) == ("promoted", "1", "1")
    assert outcome["warm_start"] == [] and outcome["champion_before"] is None
    assert Path(first["summary"]).is_file() and "opportunity_loss" in Path(first["summary"]).read_text()

    again = _retrain(home, prepared, date(2024, 8, 15)).to_dict()  # the same month, another day
    assert again["tasks"][0]["status"] == "already_done" and "nothing new" in again["tasks"][0]["message"]
    client = configure_mlflow(get_settings(home=home))
    assert len(client.search_model_versions(f"name='{NAME}'")) == 1

    second = _retrain(home, prepared, SECOND, reason="drift alert: 40% of features drifted").to_dict()["tasks"][0]
    champion_best = read_best_trial(client, client.get_model_version(NAME, "1").run_id)
    assert second["warm_start"] == [champion_best["params"]] and second["champion_before"] == "1"
    # The new month's study tried the champion's parameters first.
    new_best = read_best_trial(client, second["run_id"])
    study = optuna.load_study(study_name=new_best["study"], storage=get_settings(home=home).optuna_storage_resolved)
    assert new_best["study"] != champion_best["study"]
    assert study.trials[0].params == champion_best["params"]
    version = client.get_model_version(NAME, second["version"])
    assert version.tags[TAG_RETRAIN_MONTH] == "2024-09"
    assert version.tags[TAG_RETRAIN_REASON] == "drift alert: 40% of features drifted"
    assert client.get_run(second["run_id"]).data.tags[TAG_RETRAIN_REASON] == version.tags[TAG_RETRAIN_REASON]
    assert second["versus_champion"]["metric"] == "roc_auc" and second["versus_champion"]["champion"] is not None
    assert set(read_ledger(get_settings(home=home), "2024-09")) == {"opportunity_loss"}


KILLER = """\
import os, signal, sys
from mlflow import MlflowClient
import monitoring.loop as loop
from experiments.registry import TAG_REGISTERED

where = sys.argv[1]
if where == "registration":
    original = MlflowClient.set_model_version_tag
    def set_tag(self, name, version, key, value):
        if key == TAG_REGISTERED:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, name, version, key, value)
    MlflowClient.set_model_version_tag = set_tag
else:
    loop._after_registration = lambda: os.kill(os.getpid(), signal.SIGKILL)
from salesml.cli import app
app(sys.argv[2:])
"""


def _killed(home: Path, prepared: Path, where: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SALESML_HOME": str(home)}
    env.pop("SALESML_TOKEN", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(KILLER), where, "retrain", "--as-of",
                           FIRST.isoformat(), "--tasks", "opportunity_loss", "--configs", str(prepared / "configs"),
                           "--policy", str(prepared / "policy.yaml")], capture_output=True, text=True, env=env,
                          timeout=600)


def test_a_retrain_killed_during_or_after_registration_ends_as_a_clean_run_does(prepared, tmp_path):
    clean = _home(prepared, tmp_path, "clean")
    _retrain(clean, prepared, FIRST)
    expected = _state(clean)
    assert expected == {"versions": [("2024-08", "PASS", "complete")], "champion": 0}

    crashed = _home(prepared, tmp_path, "crashed")
    cut = _killed(crashed, prepared, "registration")
    assert cut.returncode == -9, cut.stderr
    assert _state(crashed) == {"versions": [("2024-08", "pending", None)], "champion": None}  # cut short
    after = _killed(crashed, prepared, "after")
    assert after.returncode == -9, after.stderr
    # The cut-short version is gone; the new one is fully registered, not yet audited, and not the champion.
    assert _state(crashed) == {"versions": [("2024-08", "pending", "complete")], "champion": None}
    assert read_ledger(get_settings(home=crashed), "2024-08") == {}

    resumed = _retrain(crashed, prepared, FIRST).to_dict()["tasks"][0]
    assert resumed["resumed"] is True and resumed["status"] == "promoted"
    assert _state(crashed) == expected
    client = configure_mlflow(get_settings(home=crashed))
    killed = client.search_runs([client.get_experiment_by_name(NAME).experiment_id], "attributes.status = 'KILLED'")
    assert len(killed) == 1  # the run whose registration was cut short
    again = _retrain(crashed, prepared, FIRST).to_dict()["tasks"][0]
    assert again["status"] == "already_done" and _state(crashed) == expected


def test_retrain_refuses_clearly_without_a_champion_or_a_known_task(prepared, tmp_path):
    home = _home(prepared, tmp_path)
    with pytest.raises(LoopError, match="no task has a champion"):
        retrain(get_settings(home=home), FIRST)
    with pytest.raises(LoopError, match="unknown task"):
        retrain(get_settings(home=home), FIRST, ["no_such_task"])
    assert read_ledger(get_settings(home=home), "2024-08") == {}

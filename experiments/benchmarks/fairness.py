"""Does the fairness check tell a biased model from real differences between groups?

For each simulated organisation (seed, accounts) it runs two arms with everything else equal: a clean history,
and the ``biased_history`` scenario (a share of small accounts' won deals recorded as lost in the first half of
the window). Each arm is simulated, ingested, given its sentiment model, trained with the opportunity-loss config
as shipped (its number of trials unless ``--trials`` says otherwise) and audited with the shipped policy. The
check should pass every clean arm and fail every biased one, naming ``size_band``.

Prints one JSON object: per seed and arm, the fairness status, the criteria that failed, and per attribute the
figures each criterion judges (largest calibration gap, TPR/FPR gaps beyond the groups' recalibrated scores,
amplification, demographic-parity ratio and the raw equalised-odds difference), plus the time of each step.

    python experiments/benchmarks/fairness.py [--orgs 8:1200 3:800 ...] [--trials N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Run as a script, Python puts this folder first on sys.path; the project's packages come from the repo root.
REPO = Path(__file__).resolve().parents[2]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

from salesml.settings import TELEMETRY_OFF  # noqa: E402

#: Five organisations across 800 to 2,000 accounts; seed 8 at 1,200 is the one the issue reported.
DEFAULT_ORGS = ("8:1200", "3:800", "5:1000", "11:1600", "13:2000")
CONFIG = REPO / "experiments" / "configs" / "opportunity_loss.yaml"


def run_arm(root: Path, seed: int, accounts: int, biased: bool, trials: int | None) -> dict:
    """Simulate, ingest, train and audit one arm; returns its fairness figures and timings."""
    from experiments.risk_run import run_risk_training
    from features.ingest import discover_sources, ingest
    from features.pipeline import train_text_model
    from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation
    from features.store import FeatureStore
    from salesml.settings import get_settings
    from training.tasks import load_config

    home = root / f"seed{seed}_{accounts}_{'biased' if biased else 'clean'}"
    settings = get_settings(home=home)
    done = home / "trained.json"
    if done.is_file():  # a kept arm: audit its trained version again (the audit reads only the registry)
        trained, times = (json.loads(done.read_text())[k] for k in ("trained", "times"))
        return _audit(settings, trained, times, trials)
    times = {}
    start = time.perf_counter()
    org = simulate_organisation(SimulationConfig(accounts=accounts, months=24, seed=seed,
                                                 scenarios=["biased_history"] if biased else []))
    write_organisation(org, home / "demo_data")
    with FeatureStore(home / "features.duckdb") as store:
        ingest(discover_sources(home / "demo_data"), store)
        train_text_model(store)
    times["simulate_ingest_s"] = time.perf_counter() - start
    config = load_config(CONFIG, trials=trials)
    start = time.perf_counter()
    result = run_risk_training(settings, "opportunity_loss", config, trainer="benchmark")
    trained = {k: result[k] for k in ("model", "version")} | {"test_roc_auc": result["metrics"]["test_roc_auc"],
                                                               "trials": config.trials}
    times["train_s"] = time.perf_counter() - start
    done.write_text(json.dumps({"trained": trained, "times": times}))
    return _audit(settings, trained, times, trials)


def _audit(settings, trained: dict, times: dict, trials: int | None) -> dict:
    import monitoring.gate as gate

    times = dict(times)
    start = time.perf_counter()
    outcome = gate.audit_version(settings, trained["model"], trained["version"])
    times["audit_s"] = time.perf_counter() - start
    fairness = next(c for c in outcome.checks if c.name == "fairness")
    attributes = {}
    for attr, f in fairness.figures["attributes"].items():
        if "calibration" not in f:
            continue
        attributes[attr] = {
            "calibration_gap": f["calibration"]["gap"], "calibration_group": f["calibration"]["group"],
            "tpr_gap_beyond_recalibrated": f["error_rates"]["tpr"]["gap"],
            "fpr_gap_beyond_recalibrated": f["error_rates"]["fpr"]["gap"],
            "fpr_by_group": {g["group"]: [round(g["fpr"], 3), round(g["fpr_recalibrated"], 3)]
                             for g in f["by_group"]},
            "amplification": f["amplification"]["amplification"],
            "amplification_pair": [f["amplification"].get("low"), f["amplification"].get("high")],
            "demographic_parity_ratio": f["demographic_parity_ratio"],
            "equalized_odds_difference_raw": f["equalized_odds_difference"],
        }
    return {"test_roc_auc": trained["test_roc_auc"], "trials": trained["trials"], "gate": outcome.gate,
            "fairness": fairness.status, "failed": fairness.figures.get("failed", []),
            "reason": fairness.reason, "attributes": attributes, **times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", nargs="+", default=list(DEFAULT_ORGS), help="seed:accounts pairs")
    parser.add_argument("--trials", type=int, default=None, help="Optuna trials (default: the config's)")
    parser.add_argument("--keep", type=Path, default=None, help="keep each arm's SALESML_HOME under this folder; "
                        "arms already trained there are audited again, not retrained")
    args = parser.parse_args()
    import os

    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore")
    results = []
    with tempfile.TemporaryDirectory(prefix="salesml-fairness-") as scratch:
        root = args.keep or Path(scratch)
        for org in args.orgs:
            seed, accounts = (int(x) for x in org.split(":"))
            row = {"seed": seed, "accounts": accounts}
            for arm, biased in (("clean", False), ("biased_history", True)):
                row[arm] = run_arm(root, seed, accounts, biased, args.trials)
                print(f"seed {seed} ({accounts} accounts) {arm}: fairness {row[arm]['fairness']}", file=sys.stderr)
            results.append(row)
    clean_pass = all(r["clean"]["fairness"] == "pass" for r in results)
    biased_fail = all(r["biased_history"]["fairness"] == "fail"
                      and any(f["attribute"] == "size_band" for f in r["biased_history"]["failed"]) for r in results)
    print(json.dumps({"benchmark": "fairness", "organisations": results, "every_clean_arm_passes": clean_pass,
                      "every_biased_arm_fails_on_size_band": biased_fail}, default=str))


if __name__ == "__main__":
    main()

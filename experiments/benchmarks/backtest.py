"""How long does the 12-month backtest of a 2,000-account organisation take, and what do its three arms show?

It runs ``salesml backtest``'s pipeline (``monitoring.backtest.run_backtest``) on a fresh home: each month's data
delivered at its end, monitoring, retraining of every task the backtest covers (opportunity loss, customer churn,
product demand, customer value and customer segments) with the shipped configs (``--trials`` per retraining unless told otherwise), the gate and the scripted
validator, and the three arms scored against the simulator's ground truth.

Prints one JSON object: wall time per month, per step (delivery, monitoring, retraining per task, scoring) and in
all, peak RSS, and per task and arm the mean of each month's
figure (ROC AUC and calibration error for risk, WAPE for demand, WAPE, Spearman and P(alive) calibration for value,
ARI against the true segments and month-to-month for segments) with the ROI. Target: within 20 minutes.

    python experiments/benchmarks/backtest.py [--accounts 2000] [--months 12] [--history 24] [--from 2025-01] [--trials 3]
        [--scenario competitor_entry@2025-07:EMEA] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

# Run as a script, Python puts this folder first on sys.path; the project's packages come from the repo root.
REPO = Path(__file__).resolve().parents[2]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

from salesml.settings import TELEMETRY_OFF  # noqa: E402


def main() -> None:
    """Run the backtest and print its figures as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--history", type=int, default=24)
    parser.add_argument("--from", dest="start", default="2025-01")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scenario", action="append", default=[])
    parser.add_argument("--tasks", default=None, help="comma-separated (default: every task the backtest covers)")
    parser.add_argument("--keep", type=Path, help="keep the backtest's home here (default: a temporary folder)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import os

    os.environ.update(TELEMETRY_OFF)
    from monitoring.backtest import ARMS, BACKTEST_TASKS, HEADLINE_METRICS, BacktestConfig, run_backtest
    from salesml.settings import get_settings

    config = BacktestConfig(start=args.start, months=args.months, history_months=args.history,
                            accounts=args.accounts, seed=args.seed, scenarios=args.scenario,
                            tasks=args.tasks.split(",") if args.tasks else list(BACKTEST_TASKS),
                            trials=args.trials)
    with tempfile.TemporaryDirectory(prefix="salesml-backtest-") as scratch:
        home = (args.keep or Path(scratch) / "home").resolve()
        report = run_backtest(get_settings(home=home), config,
                              say=lambda text: print(text, file=sys.stderr, flush=True))
        figures = {}
        for task in report.arms:
            metrics = HEADLINE_METRICS[report.kinds[task]]
            figures[task] = {arm: {m: _mean(report.arm_series(task, arm, m)) for m in metrics} for arm in ARMS}
        print(json.dumps({"accounts": args.accounts, "months": args.months, "trials": args.trials,
                          "scenarios": args.scenario, "total_seconds": report.timings["total_seconds"],
                          "per_month_seconds": report.timings["per_month_seconds"],
                          "step_seconds": report.timings["step_seconds"],
                          "peak_rss_mb": report.timings["peak_rss_mb"], "mean_by_arm": figures,
                          "roi": {t: {a: {k: v for k, v in f.items() if k != "how"} for a, f in by.items()}
                                  for t, by in report.roi.items()},
                          "target_met": report.timings["total_seconds"] <= 20 * 60,
                          "report": report.report if args.keep else None}))


def _mean(values: list) -> float | None:
    kept = [v for v in values if isinstance(v, float)]
    return round(sum(kept) / len(kept), 4) if kept else None


if __name__ == "__main__":
    main()

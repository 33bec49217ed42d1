"""Benchmark: simulator time and peak memory at the demo size (2,000 accounts) and at 50,000 accounts.

Each size runs in a fresh process (so peak RSS is that run's own) and writes Parquet to a temporary folder.
Targets from the foundation issue: the demo size under 30 s; 50,000 accounts x 24 months under 10 minutes
within 8 GB. Prints one JSON object.

    python experiments/benchmarks/simulate.py [--sizes 2000 50000] [--months 24]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, sys, tempfile, time
from pathlib import Path
from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation
accounts, months = int(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
org = simulate_organisation(SimulationConfig(accounts=accounts, months=months, seed=7))
simulated = time.perf_counter()
with tempfile.TemporaryDirectory() as out:
    written = write_organisation(org, Path(out))
done = time.perf_counter()
print(json.dumps({
    "accounts": accounts, "months": months,
    "seconds_simulate": round(simulated - start, 2), "seconds_write": round(done - simulated, 2),
    "seconds_total": round(done - start, 2),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "rows": written["tables"], "total_rows": sum(written["tables"].values()),
}))
"""

TARGETS = {2000: {"seconds_total": 30, "peak_rss_mb": 8192}, 50000: {"seconds_total": 600, "peak_rss_mb": 8192}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 50000])
    parser.add_argument("--months", type=int, default=24)
    args = parser.parse_args()
    runs = []
    for accounts in args.sizes:
        result = subprocess.run([sys.executable, "-c", CHILD, str(accounts), str(args.months)], capture_output=True,
                                text=True, check=True, cwd=tempfile.gettempdir())
        run = json.loads(result.stdout.strip().splitlines()[-1])
        target = TARGETS.get(accounts)
        if target:
            run["target"] = target
            run["meets_target"] = all(run[k] <= v for k, v in target.items())
        runs.append(run)
    print(json.dumps({"benchmark": "simulate", "runs": runs,
                      "all_targets_met": all(r.get("meets_target", True) for r in runs)}))


if __name__ == "__main__":
    main()

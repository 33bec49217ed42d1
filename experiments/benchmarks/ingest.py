"""Benchmark: ingest a simulated organisation (every canonical table) into a fresh feature store, and a CRM export
of the shape real ones come in through its bundle.

Reports rows read, seconds and rows per second for each, and the row accounting (stored, quarantined, flagged).
The organisation is simulated and written once; only ``ingest`` is timed. Prints one JSON object.

    python experiments/benchmarks/ingest.py [--accounts 2000] [--deals 8800] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000, help="Accounts of the simulated organisation.")
    parser.add_argument("--deals", type=int, default=8800, help="Deals in the CRM export (the issue's: 8,800).")
    parser.add_argument("--workdir", type=Path, default=None, help="Folder to work in (default: a temporary one).")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from features.governance import Governance, load_governance
    from features.ingest import discover_sources, ingest
    from features.sources.bundle import load_bundle, sources_from_bundle
    from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation
    from features.store import FeatureStore
    from tests.features.sources.crm_export import BUNDLE, write_crm_export

    work = args.workdir or Path(tempfile.mkdtemp(prefix="salesml-ingest-"))
    try:
        org = simulate_organisation(SimulationConfig(accounts=args.accounts, months=24, seed=7))
        write_organisation(org, work / "org")
        del org
        with FeatureStore(work / "org.duckdb") as store:
            started = time.perf_counter()
            report = ingest(discover_sources(work / "org"), store, as_of=None)
            seconds = time.perf_counter() - started
        tables = report.tables.values()
        read = sum(t.read for t in tables)
        simulated = {"accounts": args.accounts, "rows": read, "seconds": round(seconds, 2),
                     "rows_per_second": round(read / seconds), "stored": sum(t.stored for t in tables),
                     "quarantined": sum(t.quarantined for t in tables), "flagged": sum(t.flagged for t in tables)}

        write_crm_export(work / "export", deals=args.deals)
        (work / "export" / "bundle.yaml").write_text(BUNDLE)
        shipped = load_governance()
        policy = Governance(standards=shipped.standards, vocabularies={"region": ["Central", "East", "West"]})
        with FeatureStore(work / "crm.duckdb") as store:
            started = time.perf_counter()
            imported = sources_from_bundle(load_bundle(work / "export" / "bundle.yaml"), work / "export")
            report = ingest(imported.sources, store, as_of=None, governance=policy)
            seconds = time.perf_counter() - started
        deals = report.tables["opportunities"]
        export = {"deals": args.deals, "rows": sum(t.read for t in report.tables.values()),
                  "seconds": round(seconds, 2), "deals_stored": deals.stored, "deals_flagged": deals.flagged,
                  "deals_quarantined": deals.quarantined}
        print(json.dumps({"simulated": simulated, "crm_export": export}))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

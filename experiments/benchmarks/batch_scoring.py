"""Benchmark: `salesml score opportunity_loss` on a million rows: time, rows/s and peak memory (target: within 4 GB).

The input is the opportunity view of a home with a champion (default: a demo home built with ``salesml demo``),
resampled to ``--rows`` rows and written as Parquet. The scoring runs as its own process, with reasons and
actions, and its peak RSS is read from the kernel. Prints one JSON object.

    python experiments/benchmarks/batch_scoring.py [--home DIR] [--rows 1000000] [--chunk-rows 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
REPO = HERE.parents[1]

import pandas as pd
import pyarrow.parquet as pq

from features.store import FeatureStore
from salesml.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, help="A SALESML_HOME with a champion (default: build a demo one).")
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows to score.")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="Rows scored at once.")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="Input and output format.")
    args = parser.parse_args()
    home = (args.home or Path(tempfile.mkdtemp(prefix="salesml-bench-home-")) / "home").resolve()
    env = {**os.environ, "SALESML_HOME": str(home)}
    if not (home / "demo-tokens.json").is_file():
        subprocess.run([sys.executable, "-m", "salesml.cli", "demo", "--accounts", "1500", "--trials", "4",
                        "--no-serve", "--json"], env=env, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    with FeatureStore(get_settings(home=home).feature_store_path, read_only=True) as store:
        table = store.latest_view_table("opportunity")
        frame = store.table(table).execute()
    work = Path(tempfile.mkdtemp(prefix="salesml-batch-"))
    source = work / f"in.{args.format}"
    sample = frame.sample(args.rows, replace=True, random_state=0).reset_index(drop=True)
    sample.to_parquet(source, index=False) if args.format == "parquet" else sample.to_csv(source, index=False)
    del sample, frame
    target = work / f"out.{args.format}"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "salesml.cli", "score", "opportunity_loss",
                          "--input", str(source), "--output", str(target), "--chunk-rows", str(args.chunk_rows),
                          "--json"], env=env, check=True, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rows_out = pq.ParquetFile(target).metadata.num_rows if args.format == "parquet" else len(pd.read_csv(target))
    print(json.dumps({"benchmark": "batch_scoring", "rows": result["rows"], "rows_written": rows_out,
                      "chunk_rows": args.chunk_rows, "format": args.format, "seconds": round(seconds, 1),
                      "rows_per_s": round(result["rows"] / seconds), "peak_rss_mb": round(peak_mb),
                      "within_4gb": peak_mb < 4096, "reasons": get_settings().reasons}))


if __name__ == "__main__":
    main()

"""Run feature views on Spark: the same Ibis expressions, on a local[N] session.

The canonical tables are exported from the DuckDB feature store to Parquet and read by Spark; at scale the
tables would already live in the lake and only the connection differs.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import ibis
import ibis.expr.types as ir

from features.store import FeatureStore


def spark_session(threads: int = 2, memory: str = "2g"):
    """A local Spark session in UTC (created once per process; ``pip install .[spark]`` provides it)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise RuntimeError("the spark backend needs the spark extra: pip install '.[spark]'") from exc
    session = (
        SparkSession.builder.master(f"local[{threads}]")
        .appName("salesml")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(max(threads * 2, 2)))
        .config("spark.sql.parquet.inferTimestampNTZ.enabled", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", memory)
        .config("spark.sql.ansi.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


class SparkTables:
    """Canonical tables of a feature store, as Ibis tables on Spark.

    Args:
        store: the DuckDB feature store to export from.
        names: the tables needed.
        threads: Spark local threads.
    """

    def __init__(self, store: FeatureStore, names: Sequence[str], threads: int = 2):
        self.folder = Path(tempfile.mkdtemp(prefix="salesml-spark-"))
        self.con = ibis.pyspark.connect(spark_session(threads))
        self.tables: dict[str, ir.Table] = {}
        for name in names:
            if not store.has_table(name):
                continue
            path = self.folder / f"{name}.parquet"
            store.con.raw_sql(f"COPY \"{name}\" TO '{path}' (FORMAT parquet)")
            self.tables[name] = self.con.read_parquet(str(path), table_name=f"salesml_{name}")

    def close(self) -> None:
        """Remove the exported files (the session stays for reuse)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> SparkTables:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

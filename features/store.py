"""The feature store: canonical tables, quarantine and load history in DuckDB, reached through Ibis.

The same Ibis expressions that build feature views on this DuckDB file run on Spark at scale; only this
module knows how tables are written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import ibis
import ibis.expr.types as ir
import pandas as pd

from features.model import TABLES, Table
from salesml.settings import DUCKDB_MEMORY_LIMIT, Settings

log = logging.getLogger(__name__)

IBIS_TYPES = {
    "string": "string",
    "int": "int64",
    "float": "float64",
    "bool": "boolean",
    "date": "date",
    "timestamp": "timestamp",
}
QUARANTINE = "quarantine"
FLAGS = "flags"
LOADS = "loads"
TASK_TABLES = "task_tables"
FEATURE_VERSIONS = "feature_versions"
_QUARANTINE_SCHEMA = ibis.schema(
    {
        "table_name": "string",
        "source_file": "string",
        "source_line": "int64",
        "rules": "string",
        "detail": "string",
        "record": "string",
        "load_id": "string",
        "as_of": "date",
    }
)
_FLAGS_SCHEMA = ibis.schema(
    {
        "table_name": "string",
        "row_key": "string",
        "rules": "string",
        "detail": "string",
        "record": "string",
        "source_file": "string",
        "source_line": "int64",
        "load_id": "string",
        "as_of": "date",
    }
)
_LOADS_SCHEMA = ibis.schema(
    {"load_id": "string", "as_of": "date", "started_at": "timestamp", "finished_at": "timestamp",
     "report": "string"}
)
_TASK_SCHEMA = ibis.schema({"name": "string", "spec": "string", "loaded_at": "timestamp"})


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_schema(table: Table) -> ibis.Schema:
    """The Ibis schema of a canonical or task table."""
    return ibis.schema({c.name: IBIS_TYPES[c.dtype] for c in table.columns})


class FeatureStore:
    """A DuckDB feature store file.

    Args:
        path: the DuckDB file (created when missing).
        threads: DuckDB worker threads.
        memory_limit: DuckDB memory limit, e.g. ``"4GB"``.
        read_only: open without write access (several readers may share the file).
    """

    def __init__(self, path: Path, *, threads: int = 2, memory_limit: str = DUCKDB_MEMORY_LIMIT, read_only: bool = False):
        self.path = Path(path)
        self.threads = threads
        self.memory_limit = memory_limit
        self.read_only = read_only
        self._con: ibis.BaseBackend | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, threads: int | None = None, read_only: bool = False
                      ) -> FeatureStore:
        """The store the settings name, with their thread count (unless ``threads`` is given) and memory limit."""
        return cls(settings.feature_store_path, threads=threads or settings.threads,
                   memory_limit=settings.duckdb_memory_limit, read_only=read_only)

    @property
    def con(self) -> ibis.BaseBackend:
        """The Ibis DuckDB connection, opened on first use."""
        if self._con is None:
            if not self.read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = ibis.duckdb.connect(
                str(self.path), threads=self.threads, memory_limit=self.memory_limit, read_only=self.read_only
            )
        return self._con

    def close(self) -> None:
        """Close the connection."""
        if self._con is not None:
            self._con.disconnect()
            self._con = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- tables

    def has_table(self, name: str) -> bool:
        """Whether the store holds a table called ``name``."""
        return name in self.con.list_tables()

    def ensure_table(self, table: Table) -> None:
        """Create ``table`` (canonical or task table) when it is missing."""
        if not self.has_table(table.name):
            self.con.create_table(table.name, schema=table_schema(table))

    def ensure_system_tables(self) -> None:
        """Create the quarantine, the flags, the load history and the task-table registry when missing."""
        for name, schema in ((QUARANTINE, _QUARANTINE_SCHEMA), (FLAGS, _FLAGS_SCHEMA), (LOADS, _LOADS_SCHEMA),
                             (TASK_TABLES, _TASK_SCHEMA)):
            if not self.has_table(name):
                self.con.create_table(name, schema=schema)

    def table(self, name: str) -> ibis.Table:
        """An Ibis expression over a stored table."""
        return self.con.table(name)

    def count(self, name: str) -> int:
        """Rows in a stored table (0 when it does not exist)."""
        if not self.has_table(name):
            return 0
        return int(self.con.table(name).count().execute())

    def _conform(self, table: Table, frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[table.column_names].copy()
        for c in table.columns:
            if c.dtype == "date":
                out[c.name] = pd.to_datetime(out[c.name]).dt.date.astype("object").where(out[c.name].notna(), None)
        return out

    def upsert(self, table: Table, frame: pd.DataFrame) -> int:
        """Write rows, replacing stored rows with the same primary key (so a re-load is idempotent).

        Args:
            table: the table definition.
            frame: parsed, valid rows.

        Returns:
            The number of rows written.
        """
        if frame.empty:
            return 0
        self.ensure_table(table)
        staged = self._conform(table, frame)
        name = _quote(table.name)
        match = " AND ".join(f"s.{_quote(k)} IS NOT DISTINCT FROM {name}.{_quote(k)}" for k in table.primary_key)
        self.con.raw_sql("BEGIN TRANSACTION")
        try:
            stage = self.con.create_table("_salesml_stage", ibis.memtable(staged, schema=table_schema(table)),
                                          temp=True, overwrite=True)
            self.con.raw_sql(f"DELETE FROM {name} WHERE EXISTS (SELECT 1 FROM _salesml_stage s WHERE {match})")
            self.con.insert(table.name, stage)
            self.con.raw_sql("COMMIT")
        except BaseException:
            self.con.raw_sql("ROLLBACK")
            raise
        finally:
            self.con.raw_sql("DROP TABLE IF EXISTS _salesml_stage")
        return len(staged)

    def clear_quarantine(self, table_name: str, source_file: str) -> None:
        """Drop the quarantined rows a previous load of the same file left, before re-loading it."""
        self.ensure_system_tables()
        self._execute(f"DELETE FROM {QUARANTINE} WHERE table_name = ? AND source_file = ?", [table_name, source_file])

    def _execute(self, sql: str, parameters: Sequence) -> None:
        # Ibis's raw_sql takes no bound parameters; values from users go through DuckDB's own binding.
        self.con.con.execute(sql, list(parameters))

    def add_quarantine(self, rows: pd.DataFrame) -> None:
        """Append quarantined rows (columns as in the quarantine schema)."""
        if rows.empty:
            return
        self.ensure_system_tables()
        frame = rows[list(_QUARANTINE_SCHEMA.names)].copy()
        frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
        self.con.insert(QUARANTINE, frame)

    def replace_flags(self, table_name: str, keys: Sequence[str], rows: pd.DataFrame) -> None:
        """Record the warnings of rows just stored: drop the flags of every key written (a re-load that now meets
        the standards clears them), then add ``rows`` (columns as in the flags schema). The system tables must
        exist (``ensure_system_tables``)."""
        if len(keys):
            written = ibis.memtable(pd.DataFrame({"row_key": pd.Series(list(keys), dtype="object")}),
                                    schema=ibis.schema({"row_key": "string"}))
            self.con.create_table("_salesml_keys", written, temp=True, overwrite=True)
            try:
                self._execute(f"DELETE FROM {FLAGS} WHERE table_name = ? AND row_key IN (SELECT row_key FROM "
                              "_salesml_keys)", [table_name])
            finally:
                self.con.raw_sql("DROP TABLE IF EXISTS _salesml_keys")
        if rows.empty:
            return
        frame = rows[list(_FLAGS_SCHEMA.names)].copy()
        frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
        self.con.insert(FLAGS, frame)

    def _problem_rows(self, name: str, table_name: str | None, rule: str | None) -> ir.Table | None:
        if not self.has_table(name):
            return None
        q = self.con.table(name)
        if table_name:
            q = q.filter(q.table_name == table_name)
        if rule:
            q = q.filter(q.rules.split(",").contains(rule))
        return q

    def quarantine(self, table_name: str | None = None, rule: str | None = None, limit: int | None = None
                   ) -> pd.DataFrame:
        """Quarantined rows, optionally of one table and/or one rule."""
        q = self._problem_rows(QUARANTINE, table_name, rule)
        if q is None:
            return pd.DataFrame(columns=list(_QUARANTINE_SCHEMA.names))
        q = q.order_by([q.table_name, q.source_file, q.source_line])
        return q.limit(limit).execute() if limit else q.execute()

    def count_quarantined(self, table_name: str | None = None, rule: str | None = None) -> int:
        """How many rows are quarantined, optionally of one table and/or one rule."""
        q = self._problem_rows(QUARANTINE, table_name, rule)
        return 0 if q is None else int(q.count().execute())

    def flags(self, table_name: str | None = None, rule: str | None = None, limit: int | None = None
              ) -> pd.DataFrame:
        """Stored rows that broke a warning standard, optionally of one table and/or one rule."""
        q = self._problem_rows(FLAGS, table_name, rule)
        if q is None:
            return pd.DataFrame(columns=list(_FLAGS_SCHEMA.names))
        q = q.order_by([q.table_name, q.source_file, q.source_line, q.row_key])
        return q.limit(limit).execute() if limit else q.execute()

    def count_flags(self, table_name: str | None = None, rule: str | None = None) -> int:
        """How many stored rows are flagged, optionally of one table and/or one rule."""
        q = self._problem_rows(FLAGS, table_name, rule)
        return 0 if q is None else int(q.count().execute())

    # ---------------------------------------------------------------- reads for rules

    def lookup(self, table: Table) -> pd.DataFrame:
        """A table's key and lookup columns, indexed by its key (empty when the table is not stored)."""
        key = table.primary_key[0]
        cols = [key, *table.lookup_columns]
        if not self.has_table(table.name):
            return pd.DataFrame(columns=list(table.lookup_columns), index=pd.Index([], name=key))
        return self.con.table(table.name).select(*cols).execute().set_index(key)

    def rows_where(self, table_name: str, column: str, values: Sequence) -> pd.DataFrame:
        """Stored rows of ``table_name`` whose ``column`` is among ``values``."""
        if not values or not self.has_table(table_name):
            return pd.DataFrame()
        t = self.con.table(table_name)
        # A semi-join on a small table, not isin(): Ibis compiles an isin of 10,000 ids in seconds.
        wanted = ibis.memtable(pd.DataFrame({"_value": pd.Series(list(values), dtype="object")}))
        frame = t.semi_join(wanted, t[column] == wanted._value).execute()
        spec = TABLES.get(table_name)
        if spec is not None:
            for c in spec.columns:
                if c.dtype in ("date", "timestamp"):
                    frame[c.name] = pd.to_datetime(frame[c.name])
        return frame

    # ---------------------------------------------------------------- loads and task tables

    def record_load(self, load_id: str, as_of: pd.Timestamp, started_at: datetime, report: dict) -> None:
        """Append one row to the load history."""
        self.ensure_system_tables()
        row = pd.DataFrame(
            {
                "load_id": [load_id],
                "as_of": [as_of.date()],
                "started_at": [started_at.replace(tzinfo=None)],
                "finished_at": [datetime.now(UTC).replace(tzinfo=None)],
                "report": [json.dumps(report)],
            }
        )
        self.con.insert(LOADS, row)

    def loads(self) -> pd.DataFrame:
        """The load history, newest first."""
        if not self.has_table(LOADS):
            return pd.DataFrame(columns=list(_LOADS_SCHEMA.names))
        t = self.con.table(LOADS)
        return t.order_by(ibis.desc(t.finished_at)).execute()

    def register_task(self, name: str, spec: dict) -> None:
        """Record (or replace) a task table's definition."""
        self.ensure_system_tables()
        self._execute(f"DELETE FROM {TASK_TABLES} WHERE name = ?", [name])
        self.con.insert(
            TASK_TABLES,
            pd.DataFrame({"name": [name], "spec": [json.dumps(spec)],
                          "loaded_at": [datetime.now(UTC).replace(tzinfo=None)]}),
        )

    def task_spec(self, name: str) -> dict | None:
        """A task table's definition, or ``None`` when no task of that name was imported."""
        if not self.has_table(TASK_TABLES):
            return None
        t = self.con.table(TASK_TABLES)
        rows = t.filter(t.name == name).execute()
        return json.loads(rows["spec"].iloc[0]) if len(rows) else None

    def tasks(self) -> list[str]:
        """Names of imported task tables."""
        if not self.has_table(TASK_TABLES):
            return []
        return sorted(self.con.table(TASK_TABLES).execute()["name"])

    def latest_view_table(self, view: str) -> str | None:
        """The table holding the newest materialised version of a feature view, or ``None`` when it was never
        materialised."""
        if not self.has_table(FEATURE_VERSIONS):
            return None
        versions = self.table(FEATURE_VERSIONS)
        rows = versions.filter(versions["view"] == view).order_by(versions.built_at.desc()).limit(1).execute()
        return str(rows["table_name"].iloc[0]) if len(rows) else None

"""Ingestion with quarantine: validate every row of every source, store the valid ones, hold the rest.

``ingest`` is the pipeline: it reads canonical tables (CSV or Parquet, or frames an importer already built),
checks each file's columns before anything is written, validates rows against the data standards in
dependency order (so a row whose parent was held is held too, as ``orphan``), upserts valid rows into the
feature store and writes invalid ones to the quarantine table with the rules they broke and their source file
and line. For every table, rows read = rows stored + rows quarantined.
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.governance import Governance, load_governance
from features.model import TABLES, Table
from features.standards import (
    PANDAS_DTYPES,
    Rule,
    RuleContext,
    find_repeats,
    records_json,
    validate_table,
)
from features.store import FeatureStore

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet")
Progress = Callable[[str, int, int], None]
#: Columns pandas adds to a Parquet file for an unnamed index (``df.to_parquet(path)`` after a filter): not data.
PANDAS_INDEX_COLUMN = re.compile(r"^__index_level_\d+__$")

def _order_of(df: pd.DataFrame, ctx: RuleContext, column: str) -> pd.Series:
    return df["order_id"].map(ctx.parents("orders")[column])


#: Conditions that are valid but worth counting in the report (the rows are stored, not flagged).
CONDITIONS: dict[str, dict[str, Callable[[pd.DataFrame, RuleContext], pd.Series]]] = {
    "orders": {
        "guest_checkout": lambda df, ctx: df["account_id"].isna(),
        "cancellation": lambda df, ctx: df["status"] == "cancelled",
    },
    "order_lines": {
        "guest_checkout": lambda df, ctx: _order_of(df, ctx, "account_id").isna(),
        "cancellation": lambda df, ctx: _order_of(df, ctx, "status") == "cancelled",
    },
}


class IngestionError(ValueError):
    """A source that cannot be read as a table (wrong format, missing or unknown columns); nothing was stored."""


@dataclass
class Source:
    """Rows for one table.

    Attributes:
        table: the canonical (or task) table the rows are for.
        path: the file the rows come from; quarantined rows name it.
        frame: the rows, when an importer has already built them; ``None`` reads ``path``.
        lines: the source line of each row of ``frame`` (same index), when it is not the row position.
        rules: the rules to apply, for task tables; default: the canonical table's rules.
    """

    table: Table
    path: Path
    frame: pd.DataFrame | None = None
    lines: pd.Series | None = None
    rules: Sequence[Rule] | None = None


@dataclass
class TableReport:
    """Row accounting of one table in one load.

    ``read = stored + quarantined``. Of the stored rows, ``duplicates`` repeated an earlier row exactly (one record,
    stored once) and ``flagged`` broke a warning standard (stored, with their flags in the ``flags`` table).
    """

    read: int = 0
    stored: int = 0
    quarantined: int = 0
    duplicates: int = 0
    flagged: int = 0
    by_rule: Counter = field(default_factory=Counter)
    by_warning: Counter = field(default_factory=Counter)
    conditions: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        out = {"read": self.read, "stored": self.stored, "quarantined": self.quarantined,
               "duplicates": self.duplicates, "flagged": self.flagged,
               "by_rule": dict(sorted(self.by_rule.items())), "by_warning": dict(sorted(self.by_warning.items()))}
        if self.conditions:
            out["conditions"] = dict(sorted(self.conditions.items()))
        out["files"] = self.files
        return out


@dataclass
class IngestReport:
    """What one load read, stored and quarantined, per table."""

    load_id: str
    as_of: pd.Timestamp
    tables: dict[str, TableReport] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form: ``{"load_id", "as_of", "tables": {table: {read, stored, quarantined, duplicates, flagged,
        by_rule, by_warning, ...}}}``."""
        return {
            "load_id": self.load_id,
            "as_of": self.as_of.date().isoformat(),
            "tables": {name: report.to_dict() for name, report in self.tables.items()},
        }


# ------------------------------------------------------------------------------------------------ sources


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in DATA_SUFFIXES if name.endswith(s)), "")


def discover_sources(directory: Path) -> list[Source]:
    """Find the canonical table files in a folder (``<table>.csv``, ``.csv.gz`` or ``.parquet``).

    Sub-folders (such as the simulator's ``ground_truth/``) and files that are not CSV or Parquet are not
    read.

    Raises:
        IngestionError: when the folder is missing, holds a data file named after no canonical table, or holds
            two files for one table.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IngestionError(f"{directory} is not a folder")
    found: dict[str, Path] = {}
    unknown = []
    for path in sorted(directory.iterdir()):
        suffix = _suffix(path)
        if not path.is_file() or not suffix:
            continue
        stem = path.name[: -len(suffix)]
        if stem not in TABLES:
            unknown.append(path.name)
        elif stem in found:
            raise IngestionError(f"two files for table {stem}: {found[stem].name} and {path.name}")
        else:
            found[stem] = path
    if unknown:
        raise IngestionError(
            f"{directory}: files named after no canonical table: {', '.join(unknown)}; "
            f"expected <table>.csv or <table>.parquet with table one of: {', '.join(TABLES)}"
        )
    if not found:
        raise IngestionError(f"{directory} holds no canonical table files (<table>.csv or <table>.parquet)")
    return [Source(TABLES[name], found[name]) for name in TABLES if name in found]


def _read_csv(path: Path, encoding: str = "utf-8", **kwargs) -> pd.DataFrame | Iterator[pd.DataFrame]:
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding=encoding, **kwargs)


def parquet_columns(path: Path) -> list[str]:
    """The data columns of a Parquet file: every column but those pandas wrote for an unnamed index."""
    return [c for c in pq.read_schema(path).names if not PANDAS_INDEX_COLUMN.match(c)]


def source_columns(source: Source) -> list[str]:
    """The column names of a source.

    Raises:
        IngestionError: when the file is neither readable CSV nor Parquet.
    """
    if source.frame is not None:
        return list(source.frame.columns)
    path = source.path
    try:
        if _suffix(path) == ".parquet":
            return parquet_columns(path)
        if _suffix(path) in (".csv", ".csv.gz"):
            return list(_read_csv(path, nrows=0).columns)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
        raise IngestionError(f"{path}: cannot be read as {_suffix(path).lstrip('.')}: {exc}") from exc
    raise IngestionError(f"{path}: not a CSV or Parquet file")


def check_columns(source: Source, required: Sequence[str] | None = None) -> None:
    """Refuse a source that lacks a required column or has columns the table does not know.

    Args:
        source: the source.
        required: the columns the file must have (default: the table's required columns); a governance policy
            that lets a column be empty lets the file leave it out.

    Raises:
        IngestionError: naming the file and the columns.
    """
    columns = source_columns(source)
    table = source.table
    required = table.required_columns if required is None else required
    missing = [c for c in required if c not in columns]
    unknown = [c for c in columns if c not in table.column_index]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing required columns: {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown columns: {', '.join(unknown)} (the table has: {', '.join(table.column_names)})")
    if duplicated:
        problems.append(f"repeated columns: {', '.join(duplicated)}")
    if problems:
        raise IngestionError(f"{source.path} ({table.name}): " + "; ".join(problems))


def _count_rows(source: Source) -> int:
    if source.frame is not None:
        return len(source.frame)
    if _suffix(source.path) == ".parquet":
        return pq.ParquetFile(source.path).metadata.num_rows
    return -1


def _key_frame(source: Source) -> pd.DataFrame:
    """Only the key columns of the whole source: cheap, and it proves a CSV parses to the end."""
    key = list(source.table.primary_key)
    if source.frame is not None:
        return source.frame.reindex(columns=key)
    try:
        if _suffix(source.path) == ".parquet":
            return pq.read_table(source.path, columns=key).to_pandas(ignore_metadata=True)
        return _read_csv(source.path, usecols=key)
    except Exception as exc:  # noqa: BLE001
        raise IngestionError(f"{source.path}: cannot be parsed: {exc}") from exc


def _source_repeats(source: Source, key_frame: pd.DataFrame, chunk_rows: int) -> tuple[dict, set]:
    """Exact repeats and conflicting keys over the whole source, reading only the rows whose key repeats."""
    table = source.table
    keys = key_frame.reindex(columns=list(table.primary_key))
    if not keys.duplicated(keep=False).any():
        return {}, set()
    positions = keys.index[keys.duplicated(keep=False).to_numpy()]
    rows = pd.concat([chunk.loc[chunk.index.intersection(positions)] for chunk in _iter_chunks(source, chunk_rows)])
    _, first_of, conflicting = find_repeats(rows, table)
    return first_of, conflicting


def _iter_chunks(source: Source, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if source.frame is not None:
        for start in range(0, max(len(source.frame), 1), chunk_rows):
            yield source.frame.iloc[start : start + chunk_rows]
        return
    if _suffix(source.path) == ".parquet":
        start = 0
        columns = parquet_columns(source.path)
        for batch in pq.ParquetFile(source.path).iter_batches(batch_size=chunk_rows, columns=columns):
            frame = batch.to_pandas(ignore_metadata=True)
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
        return
    yield from _read_csv(source.path, chunksize=chunk_rows)


def _csv_record_lines(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> np.ndarray:
    """First physical line of every CSV record (quoted fields may span lines)."""
    opener = gzip.open if _suffix(path) == ".csv.gz" else open
    starts = []
    with opener(path, "rt", encoding=encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader, None)
        line = reader.line_num + 1
        for _ in reader:
            starts.append(line)
            line = reader.line_num + 1
    return np.asarray(starts, dtype="int64")


class _LineMap:
    """Source line of each row: CSV data rows start at line 2; Parquet rows are numbered from 1."""

    def __init__(self, source: Source):
        self.source = source
        self._record_lines: np.ndarray | None = None

    def lines(self, positions: pd.Index) -> np.ndarray:
        if self.source.lines is not None:
            return self.source.lines.loc[positions].to_numpy(dtype="int64")
        pos = positions.to_numpy(dtype="int64")
        if self.source.frame is not None or _suffix(self.source.path) == ".parquet":
            return pos + 1
        if self._record_lines is None:
            self._record_lines = _csv_record_lines(self.source.path)
        return self._record_lines[pos]


# ------------------------------------------------------------------------------------------------ parents


class _Parents:
    """Valid rows of parent tables: the store's, overridden by this load's valid rows, minus held keys."""

    def __init__(self, store: FeatureStore):
        self.store = store
        self.valid: dict[str, list[pd.DataFrame]] = {}
        self.held: dict[str, set] = {}
        self.cache: dict[str, pd.DataFrame] = {}

    def get(self, name: str) -> pd.DataFrame:
        if name not in self.cache:
            spec = TABLES[name]
            stored = self.store.lookup(spec)
            for c in spec.lookup_columns:
                if spec.column(c).dtype in ("date", "timestamp"):
                    stored[c] = pd.to_datetime(stored[c])
            frames = [stored] + self.valid.get(name, [])
            combined = pd.concat(frames) if len(frames) > 1 else stored
            combined = combined[~combined.index.duplicated(keep="last")]
            held = self.held.get(name, set())
            if held:
                fresh = set().union(*(f.index for f in self.valid.get(name, [])))
                combined = combined[~combined.index.isin(list(held - fresh))]
            self.cache[name] = combined
        return self.cache[name]

    def add(self, table: Table, valid: pd.DataFrame, held_keys: Sequence) -> None:
        if table.name not in TABLES or len(table.primary_key) != 1:
            return
        key = table.primary_key[0]
        self.valid.setdefault(table.name, []).append(valid.set_index(key)[list(table.lookup_columns)])
        self.held.setdefault(table.name, set()).update(k for k in held_keys if isinstance(k, str))
        self.cache.pop(table.name, None)


# ------------------------------------------------------------------------------------------------ pipeline


def ingest(
    sources: Sequence[Source],
    store: FeatureStore,
    as_of: pd.Timestamp | None = None,
    *,
    governance: Governance | None = None,
    chunk_rows: int = 1_000_000,
    progress: Progress | None = None,
) -> IngestReport:
    """Validate and store sources; hold invalid rows in quarantine, flag rows that broke only warnings.

    Args:
        sources: the tables to load, in any order (they are processed parents first).
        store: the feature store to write to.
        as_of: the load's as-of date; no timestamp may be later. Default: today (UTC).
        governance: the severities and parameters of the standards; default: salesml's own policy.
        chunk_rows: rows validated at once for tables whose rules are row-local.
        progress: called with (table, rows done, rows total or -1) as rows are processed.

    Returns:
        The report, per table: rows read, stored (of which duplicates and flagged), quarantined, by rule.

    Raises:
        IngestionError: when a source cannot be read or has missing or unknown columns; nothing from any source
            is stored then.
    """
    as_of = pd.Timestamp(as_of or datetime.now(UTC).date()).normalize()
    governance = governance or load_governance()
    started = datetime.now(UTC)
    load_id = f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    sources = sorted(sources, key=lambda s: load_rank(s.table.name))
    governed = {}
    for source in sources:
        table = governance.table(source.table)
        rules = governance.apply(source.rules) if source.rules is not None else governance.rules_for(table)
        governed[id(source)] = (table, rules)
        check_columns(source, governance.file_columns(table, rules))
    keys = {id(s): _key_frame(s) for s in sources}

    store.ensure_system_tables()
    # Once per file and table: a bundle can make two sources of one table from one file (agents and managers).
    for table_name, path in dict.fromkeys((s.table.name, str(s.path)) for s in sources):
        store.clear_quarantine(table_name, path)
    parents = _Parents(store)
    report = IngestReport(load_id=load_id, as_of=as_of)
    for source in sources:
        table, rules = governed[id(source)]
        store.ensure_table(table)
        key_frame = keys.pop(id(source))
        chunk = chunk_rows if table.row_local else max(len(key_frame), 1)
        first_of, conflicting = _source_repeats(source, key_frame, chunk_rows)
        ctx = RuleContext(as_of=as_of, parents=parents.get, stored_rows=store.rows_where, duplicate_keys=conflicting)
        entry = report.tables.setdefault(table.name, TableReport())
        entry.files.append(str(source.path))
        lines = _LineMap(source)
        total = len(key_frame)
        held_firsts: dict[object, tuple[str, str]] = {}
        firsts = set(first_of.values())
        for frame in _iter_chunks(source, chunk):
            if frame.empty:
                continue
            repeats = frame.index.intersection(pd.Index(list(first_of), dtype=frame.index.dtype))
            result = validate_table(frame.drop(index=repeats), table, ctx, rules)
            written = store.upsert(table, result.valid)
            q = result.quarantined
            for position in q.index.intersection(pd.Index(list(firsts), dtype=frame.index.dtype)):
                held_firsts[position] = (q.at[position, "rules"], q.at[position, "detail"])
            held_repeats = [r for r in repeats if first_of[r] in held_firsts]
            if held_repeats:
                # A repeat of a held row is held with it: the same record, the same rules.
                extra = pd.DataFrame({
                    "rules": [held_firsts[first_of[r]][0] for r in held_repeats],
                    "detail": [f"repeats line {int(lines.lines(pd.Index([first_of[r]]))[0])}: "
                               f"{held_firsts[first_of[r]][1]}" for r in held_repeats],
                    "record": records_json(frame.loc[held_repeats]),
                }, index=pd.Index(held_repeats, dtype=frame.index.dtype))
                q = pd.concat([q, extra]).sort_index()
            if len(q):
                rows = q.assign(
                    table_name=table.name,
                    source_file=str(source.path),
                    source_line=lines.lines(q.index),
                    load_id=load_id,
                    as_of=as_of,
                )
                store.add_quarantine(rows)
                for rule_list in q["rules"]:
                    entry.by_rule.update(rule_list.split(","))
            flagged = result.flagged
            if written or len(flagged):
                row_keys = _row_keys(result.valid, table)
                flag_rows = flagged.assign(
                    table_name=table.name,
                    row_key=_row_keys(result.valid.loc[flagged.index], table) if len(flagged) else [],
                    source_file=str(source.path),
                    source_line=lines.lines(flagged.index) if len(flagged) else [],
                    load_id=load_id,
                    as_of=as_of,
                )
                store.replace_flags(table.name, row_keys, flag_rows)
                for rule_list in flagged["rules"]:
                    entry.by_warning.update(rule_list.split(","))
            for name, condition in CONDITIONS.get(table.name, {}).items():
                entry.conditions[name] += int(condition(result.valid, ctx).fillna(False).sum())
            stored_repeats = len(repeats) - len(held_repeats)
            entry.read += len(frame)
            entry.stored += written + stored_repeats
            entry.duplicates += stored_repeats
            entry.flagged += len(flagged)
            entry.quarantined += len(q)
            held = frame.loc[q.index, table.primary_key[0]].dropna().astype(str).tolist() if len(q) else []
            parents.add(table, result.valid, held)
            if progress:
                progress(table.name, entry.read, total)
        if entry.read != entry.stored + entry.quarantined:
            raise RuntimeError(f"row accounting broken for {table.name}: {entry}")
        log.info("%s: read %d, stored %d (%d duplicates, %d flagged), quarantined %d", table.name, entry.read,
                 entry.stored, entry.duplicates, entry.flagged, entry.quarantined)
    store.record_load(load_id, as_of, started, report.to_dict())
    return report


def _row_keys(frame: pd.DataFrame, table: Table) -> list[str]:
    """Each row's primary key as text (the parts of a composite key joined by ``|``)."""
    if not len(frame):
        return []
    parts = [frame[k].astype("object").map(lambda v: "" if pd.isna(v) else str(v)) for k in table.primary_key]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + "|" + part
    return joined.tolist()


def load_rank(table_name: str) -> int:
    """A table's place in the load order: parents before children, from the foreign keys of the data model.

    Task tables come last. The order is a topological sort of the references (a table's reference to itself,
    such as a manager, does not count).
    """
    return _load_order().get(table_name, len(TABLES))


def _load_order() -> dict[str, int]:
    from graphlib import TopologicalSorter

    graph = {name: {fk.parent for fk in t.foreign_keys if fk.parent != name} for name, t in TABLES.items()}
    order = list(TopologicalSorter(graph).static_order())
    return {name: i for i, name in enumerate(order)}


def empty_frame(table: Table) -> pd.DataFrame:
    """An empty frame with the canonical columns and dtypes of ``table``."""
    return pd.DataFrame({c.name: pd.Series(dtype=PANDAS_DTYPES[c.dtype]) for c in table.columns})


def read_table_file(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV or Parquet file as raw values (CSV cells stay strings; empty cells are missing).

    Raises:
        IngestionError: when the file is neither readable CSV nor Parquet.
    """
    suffix = _suffix(path)
    try:
        if suffix == ".parquet":
            # pandas' metadata would turn an index column back into the index; the columns are what counts.
            return pq.read_table(path, columns=parquet_columns(path)).to_pandas(ignore_metadata=True)
        if suffix in (".csv", ".csv.gz"):
            return _read_csv(path, sep=delimiter, encoding=encoding)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
        raise IngestionError(f"{path}: cannot be read as {suffix.lstrip('.')}: {exc}") from exc
    raise IngestionError(f"{path}: not a CSV or Parquet file (.csv, .csv.gz or .parquet)")


def source_lines(path: Path, rows: int, delimiter: str = ",", encoding: str = "utf-8") -> np.ndarray:
    """The source line of each of a file's ``rows`` rows: the CSV line a record starts on, or the Parquet row
    number (from 1)."""
    if _suffix(path) == ".parquet":
        return np.arange(1, rows + 1)
    lines = _csv_record_lines(path, delimiter, encoding)
    if len(lines) != rows:
        return np.arange(2, rows + 2)
    return lines


__all__ = [
    "CONDITIONS",
    "IngestReport",
    "IngestionError",
    "Source",
    "TableReport",
    "check_columns",
    "discover_sources",
    "empty_frame",
    "ingest",
    "load_rank",
    "read_table_file",
    "source_lines",
]

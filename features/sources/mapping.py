"""Mapping-driven import of any CSV or Parquet file (bring your own data).

A mapping YAML says how a file's columns become either one canonical table (``kind: canonical``) or a generic
task table (``kind: task``: an id, an optional timestamp, a label with its positive value, features and
sensitive attributes). The mapped rows then go through the same ingestion and data standards as everything
else. The format is documented in the README, with a worked example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from features.ingest import Source, read_table_file, source_lines
from features.model import Column, Table, get_table
from features.standards import Rule, generic_rules, parse_column

MappedType = Literal["string", "category", "int", "float", "bool", "date", "timestamp"]
TASK_PREFIX = "task_"
RESERVED = ("row_id", "source_row", "event_time", "label", "label_value")
#: What a task table's id is called when its file has no id column: rows are numbered from 1 in file order.
ROW_NUMBER = "row number"


class MappingError(ValueError):
    """A mapping that does not fit its file or the data model; nothing was stored."""


@dataclass
class ImportedData:
    """Sources ready for ingestion, task tables to register, and a description of where they came from."""

    sources: list[Source]
    tasks: list[dict] = field(default_factory=list)
    description: dict = field(default_factory=dict)


class ReadOptions(BaseModel):
    """How to read a CSV file."""

    model_config = ConfigDict(extra="forbid")
    delimiter: str = ","
    encoding: str = "utf-8"


class LabelMapping(BaseModel):
    """The label column and which of its values is the positive class."""

    model_config = ConfigDict(extra="forbid")
    column: str
    positive: str
    negative: list[str] | None = Field(None, description="Negative values; default: every other value.")

    @field_validator("positive", mode="before")
    @classmethod
    def _text(cls, v: object) -> str:
        return str(v)

    @field_validator("negative", mode="before")
    @classmethod
    def _texts(cls, v: object) -> object:
        return [str(x) for x in v] if isinstance(v, list) else v


class TaskMapping(BaseModel):
    """A file mapped to a generic task table."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["task"]
    name: str
    id: str | None = Field(None, description="Column with the row id; without it the id is the 1-based row number.")
    repeated_ids: bool = Field(False, description=(
        "Rows may share an id (e.g. one row per product line of an opportunity): every row is kept, and the "
        "second and later rows of an id get the row id '<id>#<n>' (n = 2, 3, ... in file order). Without it a "
        "repeated id is quarantined under unique_key."))
    timestamp: str | None = None
    label: LabelMapping
    features: dict[str, MappedType]
    sensitive: dict[str, MappedType] | list[str] = Field(default_factory=dict)
    read: ReadOptions = Field(default_factory=ReadOptions)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,60}", v):
            raise ValueError("name must be lower case letters, digits and _ (starting with a letter)")
        return v

    @property
    def sensitive_types(self) -> dict[str, MappedType]:
        """Sensitive attributes and their types (a bare list means categorical)."""
        if isinstance(self.sensitive, list):
            return {c: "category" for c in self.sensitive}
        return dict(self.sensitive)


class CanonicalMapping(BaseModel):
    """A file mapped to one canonical table."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["canonical"]
    table: str
    columns: dict[str, str]
    constants: dict[str, str | int | float | bool] = Field(default_factory=dict)
    values: dict[str, dict[str, str | None]] = Field(default_factory=dict)
    formats: dict[str, str] = Field(default_factory=dict, description="strptime formats of date/time fields.")
    read: ReadOptions = Field(default_factory=ReadOptions)


class _MappingFile(BaseModel):
    mapping: Annotated[TaskMapping | CanonicalMapping, Field(discriminator="kind")]


def read_mapping_yaml(path: Path, what: str, kinds: tuple[str, ...]) -> dict:
    """The top level of a mapping or bundle YAML file, whose ``kind`` must be one of ``kinds``.

    Raises:
        MappingError: when the file is missing, not YAML, or of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise MappingError(f"{what} file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("kind") not in kinds:
        needed = " or ".join(f"`kind: {k}`" for k in kinds)
        raise MappingError(f"{path}: a {what} needs {needed} at the top level")
    return raw


def load_mapping(path: Path) -> TaskMapping | CanonicalMapping:
    """Read and check a mapping YAML.

    Raises:
        MappingError: when the file is missing, not YAML, or not a valid mapping (the message lists the fields).
    """
    raw = read_mapping_yaml(path, "mapping", ("task", "canonical"))
    try:
        return _MappingFile(mapping=raw).mapping
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][2:]) or 'mapping'}: {e['msg']}"
                             for e in exc.errors())
        raise MappingError(f"{path}: {problems}") from None


# ------------------------------------------------------------------------------------------------ task tables


def _canonical_type(t: MappedType) -> str:
    return "string" if t == "category" else t


def build_task_table(name: str, id_column: str, label: LabelMapping, features: dict[str, MappedType],
                     sensitive: dict[str, MappedType], timestamp: str | None = None,
                     source: str = "") -> tuple[Table, dict, list[Rule]]:
    """Define a task table: its columns, its registry entry and its rules.

    Args:
        name: task name (the stored table is ``task_<name>``).
        id_column: source column with the row id.
        label: label column and positive value.
        features: feature columns and types.
        sensitive: sensitive attributes and types (used by audits, never as features unless also listed in
            ``features``).
        timestamp: optional source column with the row's time.
        source: where the data came from, for the registry.

    Returns:
        The table definition, the registry spec, and the rules beyond the generic ones.

    Raises:
        MappingError: when a column name is reserved or used twice.
    """
    clash = [c for c in (*features, *sensitive) if c in RESERVED]
    if clash:
        raise MappingError(f"columns named {', '.join(clash)} are reserved in task tables; rename them")
    columns = [Column("row_id", "string", True, f"Row id (from {id_column})."),
               Column("source_row", "int", False, "Position of the row in its source file (from 1).")]
    if timestamp:
        columns.append(Column("event_time", "timestamp", False, f"Row time (from {timestamp})."))
    columns += [
        Column("label", "int", False, f"1 when {label.column} is {label.positive!r}, 0 for a negative value."),
        Column("label_value", "string", True, f"The original value of {label.column}."),
    ]
    seen = set()
    for col, t in {**features, **sensitive}.items():
        if col in seen:
            continue
        seen.add(col)
        columns.append(Column(col, _canonical_type(t), False, "sensitive attribute" if col in sensitive and
                              col not in features else "feature"))
    table = Table(TASK_PREFIX + name, f"Task table {name}: one labelled row per {id_column}.", tuple(columns),
                  primary_key=("row_id",))
    spec = {
        "name": name,
        "table": table.name,
        "source": source,
        "id": id_column,
        "timestamp": timestamp,
        "label": {"column": label.column, "positive": label.positive, "negative": label.negative},
        "features": [{"name": c, "type": ("categorical" if t in ("category", "string") else t)}
                     for c, t in features.items()],
        "sensitive": [{"name": c, "type": ("categorical" if t in ("category", "string") else t)}
                      for c, t in sensitive.items()],
    }
    return table, spec, [task_label_rule(table)]


def task_label_rule(table: Table) -> Rule:
    """Rule ``label_value_known``: the label value is the positive value or a known negative one."""

    def check(df: pd.DataFrame, ctx: object) -> pd.Series:
        return (df["label_value"].isna() | df["label"].notna()).astype(bool)

    return Rule("label_value_known", table.name, "The label holds the positive value or a known negative value.",
                ("label_value",), check)


def label_frame(values: pd.Series, label: LabelMapping) -> pd.DataFrame:
    """The ``label`` (1/0, missing for unknown values) and ``label_value`` columns from raw label values."""
    text = values.astype("string").str.strip()
    text = text.where(text.str.len() > 0)
    positive = text == label.positive
    if label.negative is None:
        known = text.notna()
    else:
        known = text.isin([label.positive, *label.negative]).fillna(False)
    out = pd.Series(pd.NA, index=values.index, dtype="Int64")
    out[known.to_numpy(dtype=bool)] = positive[known].astype(int).to_numpy()
    return pd.DataFrame({"label": out, "label_value": text})


def task_source(frame: pd.DataFrame, path: Path, mapping: TaskMapping, lines: pd.Series | None = None,
                source: str = "") -> tuple[Source, dict]:
    """Build the ingestion source of a task table from a raw frame.

    Raises:
        MappingError: when a mapped column is missing from the file, or a declared type fits none of its values.
    """
    sensitive = mapping.sensitive_types
    needed = [*([mapping.id] if mapping.id else []), mapping.label.column, *mapping.features, *sensitive]
    if mapping.timestamp:
        needed.append(mapping.timestamp)
    _require_columns(frame, needed, path)
    table, spec, rules = build_task_table(mapping.name, mapping.id or ROW_NUMBER, mapping.label, dict(mapping.features),
                                          sensitive, mapping.timestamp, source or str(path))
    ids = frame[mapping.id] if mapping.id else pd.Series(range(1, len(frame) + 1), index=frame.index).astype(str)
    out = pd.DataFrame({"row_id": _row_ids(ids, mapping.repeated_ids),
                        "source_row": range(1, len(frame) + 1)}, index=frame.index)
    if mapping.timestamp:
        out["event_time"] = frame[mapping.timestamp]
    out = out.join(label_frame(frame[mapping.label.column], mapping.label))
    for col in table.column_names[len(out.columns):]:
        out[col] = frame[col]
    _check_types(out, table, path)
    return Source(table, path, out, lines=lines, rules=[*generic_rules(table), *rules]), spec


def _row_ids(ids: pd.Series, repeated: bool) -> pd.Series:
    """Row ids from the id column; with ``repeated``, later rows of an id get '#<n>' (file order)."""
    if not repeated:
        return ids
    text = ids.astype("string")
    occurrence = text.groupby(text, dropna=False).cumcount() + 1
    suffixed = text + "#" + occurrence.astype("string")
    return text.where((occurrence == 1) | text.isna(), suffixed)


# ------------------------------------------------------------------------------------------------ canonical


def canonical_source(frame: pd.DataFrame, path: Path, mapping: CanonicalMapping,
                     lines: pd.Series | None = None) -> Source:
    """Build the ingestion source of one canonical table from a raw frame.

    Raises:
        MappingError: for an unknown table or field, a required field left unmapped, a source column missing
            from the file, or a declared type that fits none of a column's values.
    """
    try:
        table = get_table(mapping.table)
    except KeyError as exc:
        raise MappingError(str(exc.args[0])) from None
    fields = {**mapping.columns, **{k: None for k in mapping.constants}}
    unknown = [f for f in [*fields, *mapping.values, *mapping.formats] if f not in table.column_index]
    if unknown:
        raise MappingError(f"{path}: {table.name} has no fields {', '.join(unknown)} "
                           f"(fields: {', '.join(table.column_names)})")
    unmapped = [c for c in table.required_columns if c not in fields]
    if unmapped:
        raise MappingError(f"{path}: required fields of {table.name} are not mapped: {', '.join(unmapped)}")
    _require_columns(frame, list(mapping.columns.values()), path)
    out = pd.DataFrame(index=frame.index)
    for target, column in mapping.columns.items():
        values = frame[column]
        if target in mapping.values:
            codes = mapping.values[target]
            values = values.map(lambda v, codes=codes: codes.get(v, v) if isinstance(v, str) else v)
        if target in mapping.formats:
            parsed = pd.to_datetime(values, format=mapping.formats[target], errors="coerce")
            values = parsed.dt.strftime("%Y-%m-%dT%H:%M:%S").where(parsed.notna(), values)
        out[target] = values
    for target, value in mapping.constants.items():
        out[target] = str(value)
    _check_types(out, table, path, mapping.columns)
    return Source(table, path, out, lines=lines)


def _require_columns(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    if missing:
        raise MappingError(f"{path}: mapped columns not in the file: {', '.join(missing)} "
                           f"(the file has: {', '.join(map(str, frame.columns))})")


def _check_types(frame: pd.DataFrame, table: Table, path: Path, names: dict[str, str] | None = None) -> None:
    """Refuse a declared type that fits none of a column's values (a mapping error, not bad rows)."""
    for column in table.columns:
        if column.dtype == "string" or column.name not in frame.columns:
            continue
        values = frame[column.name]
        parsed, bad = parse_column(values, column)
        present = int((parsed.notna() | bad).sum())
        if present and int(bad.sum()) == present:
            source = (names or {}).get(column.name, column.name)
            examples = ", ".join(repr(str(v)) for v in values[bad].head(3))
            raise MappingError(f"{path}: column {source!r} is declared {column.dtype} but none of its values is "
                               f"(for example {examples})")


# ------------------------------------------------------------------------------------------------ entry point


def sources_from_mapping(mapping: TaskMapping | CanonicalMapping, path: Path) -> ImportedData:
    """Read a CSV or Parquet file and map it as the mapping says.

    Args:
        mapping: a loaded mapping.
        path: the file.

    Returns:
        Sources ready for ``ingest`` (and, for a task, the task table to register).
    """
    path = Path(path)
    if not path.is_file():
        raise MappingError(f"file {path} not found")
    frame = read_table_file(path, delimiter=mapping.read.delimiter, encoding=mapping.read.encoding)
    lines = pd.Series(source_lines(path, len(frame), mapping.read.delimiter, mapping.read.encoding), index=frame.index)
    description = {"file": str(path), "rows": len(frame), "mapping": mapping.kind}
    if isinstance(mapping, TaskMapping):
        source, spec = task_source(frame, path, mapping, lines)
        return ImportedData([source], [spec], description)
    return ImportedData([canonical_source(frame, path, mapping, lines)], [], description)


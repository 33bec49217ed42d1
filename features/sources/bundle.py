"""A bundle: one mapping YAML for a whole export, a folder of CSV or Parquet files.

Each file maps to one or more canonical tables (agents and their managers both come from a team file, the
managers with ``distinct``). A field takes a file's column, a value looked up in another file of the export (a
deal's list price from the products file), or the first non-empty of several; values can be recoded and
normalised (country names to ISO codes with pycountry). Everything is imported in one load, parents before
children as the foreign keys order them, with one report. The format is documented in the README, with a worked
example.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal, Union

import numpy as np
import pandas as pd
import pycountry
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.ingest import Source, load_rank, read_table_file, source_lines
from features.model import get_table
from features.sources.mapping import (
    CanonicalMapping,
    ImportedData,
    MappingError,
    ReadOptions,
    canonical_source,
    read_mapping_yaml,
)

Normaliser = Literal["country_code", "upper", "lower", "strip"]


class Lookup(BaseModel):
    """A value from another file of the export: the row of ``file`` whose ``key`` equals this file's column."""

    model_config = ConfigDict(extra="forbid")
    file: str
    key: str
    value: str


class Bands(BaseModel):
    """Numbers into labelled bands: a value up to ``edges[0]`` gets ``labels[0]``, ..., above the last edge the
    last label (so there is one label more than edges)."""

    model_config = ConfigDict(extra="forbid")
    edges: list[float]
    labels: list[str]

    @model_validator(mode="after")
    def _sizes(self) -> Bands:
        if len(self.labels) != len(self.edges) + 1:
            raise ValueError(f"bands need one label more than edges ({len(self.edges)} edges, {len(self.labels)} labels)")
        if self.edges != sorted(self.edges):
            raise ValueError("band edges must increase")
        return self


class FieldSpec(BaseModel):
    """How one canonical field is made: a column, a lookup through a column, or the first non-empty of several;
    optionally put into bands (employees into employee bands)."""

    model_config = ConfigDict(extra="forbid")
    column: str | None = None
    lookup: Lookup | None = None
    first_of: list[Union[str, FieldSpec]] | None = None  # noqa: UP007 - pydantic needs the forward reference
    bands: Bands | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        if self.first_of is not None and (self.column or self.lookup):
            raise ValueError("first_of stands alone: give either first_of or column (with an optional lookup)")
        if self.first_of is None and self.column is None:
            raise ValueError("a field needs a column (optionally with a lookup) or first_of")
        return self


class TableSpec(BaseModel):
    """One canonical table made from one file."""

    model_config = ConfigDict(extra="forbid")
    table: str
    columns: dict[str, str | FieldSpec]
    constants: dict[str, str | int | float | bool] = Field(default_factory=dict)
    values: dict[str, dict[str, str | None]] = Field(default_factory=dict)
    formats: dict[str, str] = Field(default_factory=dict, description="strptime formats of date/time fields.")
    normalise: dict[str, Normaliser] = Field(default_factory=dict)
    distinct: bool = Field(False, description=(
        "Keep one row per distinct combination of the mapped values (a manager repeated on every agent's row)."))


class Bundle(BaseModel):
    """A whole export: files mapped to tables."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["bundle"]
    name: str = "export"
    read: ReadOptions = Field(default_factory=ReadOptions)
    files: dict[str, list[TableSpec]]


def load_bundle(path: Path) -> Bundle:
    """Read and check a bundle YAML.

    Raises:
        MappingError: when the file is missing, not YAML, or not a valid bundle (the message lists the fields).
    """
    raw = read_mapping_yaml(path, "bundle", ("bundle",))
    try:
        return Bundle.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'bundle'}: {e['msg']}" for e in exc.errors())
        raise MappingError(f"{path}: {problems}") from None


# ------------------------------------------------------------------------------------------------ values


@cache
def _country(text: str) -> str | None:
    # Exact names, official and common names and codes only: pycountry's fuzzy search reads "Republic of Korea" as
    # North Korea, and a wrong country is worse than one the country standard names.
    try:
        return pycountry.countries.lookup(text).alpha_2
    except LookupError:
        return None


def normalise_values(values: pd.Series, how: Normaliser) -> pd.Series:
    """Normalise raw values: ``country_code`` turns a country's name, official name or code into its ISO 3166-1
    alpha-2 code (values pycountry does not know exactly, such as "Korea", stay as they are, so the country
    standard names them; recode those with ``values``)."""
    text = values.astype("string").str.strip()
    if how == "strip":
        return text
    if how == "upper":
        return text.str.upper()
    if how == "lower":
        return text.str.lower()
    codes = text.map(lambda v: _country(v) if isinstance(v, str) and v else None, na_action="ignore")
    return codes.where(codes.notna(), text)


def band_values(values: pd.Series, bands: Bands) -> pd.Series:
    """The band label of each number (empty where the value is empty; a value that is not a number stays as it
    is, so the vocabulary standard names it)."""
    numbers = pd.to_numeric(values, errors="coerce")
    codes = np.searchsorted(np.asarray(bands.edges, dtype=float), numbers.to_numpy(dtype=float), side="left")
    labels = pd.Series(np.asarray(bands.labels, dtype=object)[np.minimum(codes, len(bands.labels) - 1)],
                       index=values.index)
    return labels.where(numbers.notna(), values.astype("object").where(values.notna(), None))


class _Files:
    """The export's files, read once each."""

    def __init__(self, folder: Path, read: ReadOptions):
        self.folder = folder
        self.read = read
        self.frames: dict[str, pd.DataFrame] = {}
        self.lookups: dict[tuple[str, str, str], pd.Series] = {}

    def path(self, name: str) -> Path:
        path = self.folder / name
        if not path.is_file():
            raise MappingError(f"{path}: the bundle maps this file but the folder has no such file")
        return path

    def frame(self, name: str) -> pd.DataFrame:
        if name not in self.frames:
            self.frames[name] = read_table_file(self.path(name), self.read.delimiter, self.read.encoding)
        return self.frames[name]

    def lookup(self, spec: Lookup) -> pd.Series:
        key = (spec.file, spec.key, spec.value)
        if key not in self.lookups:
            other = self.frame(spec.file)
            missing = [c for c in (spec.key, spec.value) if c not in other.columns]
            if missing:
                raise MappingError(f"lookup in {spec.file}: no columns {', '.join(missing)} "
                                   f"(it has: {', '.join(map(str, other.columns))})")
            pairs = other[[spec.key, spec.value]].dropna(subset=[spec.key]).drop_duplicates()
            clash = pairs[spec.key][pairs[spec.key].duplicated()]
            if len(clash):
                raise MappingError(f"lookup in {spec.file}: {spec.key} {clash.iloc[0]!r} has several values of "
                                   f"{spec.value}; a lookup key must identify one row")
            self.lookups[key] = pairs.set_index(spec.key)[spec.value]
        return self.lookups[key]


def _field(frame: pd.DataFrame, spec: str | FieldSpec, files: _Files, where: str) -> pd.Series:
    if isinstance(spec, str):
        spec = FieldSpec(column=spec)
    if spec.bands is not None:
        values = _field(frame, spec.model_copy(update={"bands": None}), files, where)
        return band_values(values, spec.bands)
    if spec.first_of is not None:
        parts = [_field(frame, s, files, where) for s in spec.first_of]
        out = parts[0].astype("object")
        for part in parts[1:]:
            empty = out.isna() | (out.astype("string").str.strip() == "").fillna(False).astype(bool)
            out = out.where(~empty, part.astype("object"))
        return out
    if spec.column not in frame.columns:
        raise MappingError(f"{where}: no column {spec.column!r} (the file has: {', '.join(map(str, frame.columns))})")
    values = frame[spec.column]
    if spec.lookup is None:
        return values
    return values.map(files.lookup(spec.lookup))


# ------------------------------------------------------------------------------------------------ sources


def _table_source(name: str, spec: TableSpec, files: _Files) -> Source:
    path = files.path(name)
    frame = files.frame(name)
    where = f"{path} -> {spec.table}"
    resolved = pd.DataFrame({target: _field(frame, field, files, where) for target, field in spec.columns.items()},
                            index=frame.index)
    for target, how in spec.normalise.items():
        if target not in resolved.columns:
            raise MappingError(f"{where}: normalise names {target!r}, which the bundle does not map")
        resolved[target] = normalise_values(resolved[target], how)
    lines = pd.Series(source_lines(path, len(frame), files.read.delimiter, files.read.encoding), index=frame.index)
    if spec.distinct:
        resolved = resolved.drop_duplicates()
        lines = lines.loc[resolved.index]
    mapping = CanonicalMapping(kind="canonical", table=spec.table, columns={c: c for c in resolved.columns},
                               constants=spec.constants, values=spec.values, formats=spec.formats, read=files.read)
    try:
        return canonical_source(resolved, path, mapping, lines)
    except MappingError as exc:
        raise MappingError(str(exc).replace(str(path), where, 1)) from None


def _order_within_table(sources: list[Source]) -> list[Source]:
    """Sources of one table, those whose rows the others reference (a team's managers) first."""
    table = sources[0].table
    refs = [fk.column for fk in table.foreign_keys if fk.parent == table.name]
    if len(sources) < 2 or not refs:
        return sources
    key = table.primary_key[0]
    keys = [set(s.frame[key].dropna().astype(str)) if key in s.frame.columns else set() for s in sources]
    used = [set().union(*(set(s.frame[c].dropna().astype(str)) for c in refs if c in s.frame.columns))
            for s in sources]
    ordered, left = [], list(range(len(sources)))
    while left:
        ready = [i for i in left if not any(used[i] & keys[j] for j in left if j != i)] or left[:1]
        ordered.append(ready[0])
        left.remove(ready[0])
    return [sources[i] for i in ordered]


def sources_from_bundle(bundle: Bundle, folder: Path) -> ImportedData:
    """Map every file of an export as the bundle says.

    Args:
        bundle: a loaded bundle.
        folder: the export's folder.

    Returns:
        Sources for every table, parents first (sources of one table ordered by their references), ready for one
        ``ingest`` call.

    Raises:
        MappingError: for a file the folder lacks, a column a file lacks, an unknown table or field, a required
            field left unmapped, or an ambiguous lookup.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MappingError(f"{folder} is not a folder")
    files = _Files(folder, bundle.read)
    by_table: dict[str, list[Source]] = {}
    for name, specs in bundle.files.items():
        for spec in specs:
            try:
                get_table(spec.table)
            except KeyError as exc:
                raise MappingError(f"{name}: {exc.args[0]}") from None
            by_table.setdefault(spec.table, []).append(_table_source(name, spec, files))
    sources = [s for table in sorted(by_table, key=load_rank) for s in _order_within_table(by_table[table])]
    unmapped = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in bundle.files
                      and p.suffix.lower() in (".csv", ".parquet", ".gz"))
    description = {"bundle": bundle.name, "folder": str(folder),
                   "files": {name: len(files.frame(name)) for name in bundle.files},
                   "tables": [{"table": s.table.name, "file": s.path.name, "rows": len(s.frame)} for s in sources]}
    if unmapped:
        description["not_mapped"] = unmapped
    return ImportedData(sources, [], description)

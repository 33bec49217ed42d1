"""Feature pipelines: build a view on DuckDB or Spark, version it, and materialise it in the feature store.

The version of a materialised view is a hash of its definition (the view code, its config and category list)
plus the data snapshot (the loads in the store and the sentiment model that scored the texts). Training logs it
to MLflow as the dataset's lineage.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import ibis
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features import views as views_module
from features.ingest import empty_frame
from features.model import TABLES
from features.standards import STRING
from features.store import FEATURE_VERSIONS, FeatureStore, table_schema
from features.text import SentimentModel, template_corpus, train_sentiment_model
from features.views import (
    VIEWS,
    ViewConfig,
    add_association_affinity,
    basket_items,
    build_customer_view,
    build_opportunity_view,
    build_product_week_view,
    cutoff_table,
    get_view,
    monthly_cutoffs,
    purchase_history,
    week_table,
)

log = logging.getLogger(__name__)

TEXT_MODELS = "text_models"
TEXT_SENTIMENT = "text_sentiment"
# Arrow to pandas: strings stay in Arrow (the canonical tables' string dtype), flags become pandas' nullable
# boolean. On a 16M-event opportunity result, Python string objects made normalising take 3.1-5.0 s and 1.5 GB
# (a 1,437 MB frame); Arrow strings take 1.8-2.3 s and 0.4 GB (a 605 MB frame).
_PANDAS_TYPES = {pa.string(): STRING, pa.large_string(): STRING, pa.bool_(): pd.BooleanDtype()}
BOOLEAN_COLUMNS = ("is_customer", "marketing_opt_in")


class FeatureError(ValueError):
    """A feature build that cannot run on the data at hand (missing tables, empty range)."""


@dataclass
class BuiltView:
    """A computed view with its lineage."""

    view: str
    frame: pd.DataFrame
    version: str
    definition_hash: str
    snapshot: str
    as_of: date
    cutoffs: list[date]
    backend: str
    label_columns: list[str]
    warnings: list[str] = field(default_factory=list)
    unavailable: list[dict] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ sentiment


def train_text_model(store: FeatureStore, corpus: pd.DataFrame | None = None, source: str = "templates") -> dict:
    """Train the sentiment model, store it, and score every ticket and news text in the store.

    Args:
        store: the feature store.
        corpus: labelled texts (``text``, ``sentiment``); default: the simulator's template corpus.
        source: where the corpus came from, for the record.

    Returns:
        ``{"model_version", "trained_on", "scored": {table: rows}}``.
    """
    corpus = template_corpus() if corpus is None else corpus
    model = train_sentiment_model(corpus)
    store.ensure_system_tables()
    frame = pd.DataFrame({"version": [model.version], "model": [model.to_json()], "source": [source],
                          "trained_on": [len(corpus)], "trained_at": [datetime.now(UTC).replace(tzinfo=None)]})
    store.con.create_table(TEXT_MODELS, frame, overwrite=True)
    scored = score_texts(store, model)
    return {"model_version": model.version, "trained_on": len(corpus), "source": source, "scored": scored}


def score_texts(store: FeatureStore, model: SentimentModel) -> dict[str, int]:
    """Score ticket and news texts with ``model`` into the ``text_sentiment`` table (replacing it)."""
    parts = []
    for table, key in (("support_tickets", "ticket_id"), ("news_signals", "news_id")):
        if not store.has_table(table):
            continue
        texts = store.table(table).select(key, "text").execute()
        scored = model.score(texts["text"])
        parts.append(pd.DataFrame({"source_table": table, "id": texts[key].astype(str), "label": scored["label"],
                                   "score": scored["score"].astype(float), "model_version": model.version}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {"source_table": [], "id": [], "label": [], "score": [], "model_version": []})
    schema = ibis.schema({"source_table": "string", "id": "string", "label": "string", "score": "float64",
                          "model_version": "string"})
    store.con.create_table(TEXT_SENTIMENT, ibis.memtable(frame, schema=schema), overwrite=True)
    return frame.groupby("source_table").size().to_dict() if len(frame) else {}


def rescore_texts(store: FeatureStore) -> dict[str, int] | None:
    """Score the store's texts again with its stored sentiment model, so that tickets and news ingested since it
    was trained get their scores (``None`` when no model was trained: the views then go without sentiment)."""
    if not store.has_table(TEXT_MODELS):
        return None
    stored = store.table(TEXT_MODELS).select("model").execute()["model"]
    if not len(stored):
        return None
    return score_texts(store, SentimentModel.from_json(str(stored.iloc[0])))


# ------------------------------------------------------------------------------------------------ lineage


def definition_hash(view: str, config: ViewConfig, categories: list[str]) -> str:
    """Hash of a view's definition: the view code, its config and its category columns."""
    source = inspect.getsource(views_module)
    payload = json.dumps({"view": view, "config": config.model_dump(), "categories": categories,
                          "code": hashlib.sha256(source.encode()).hexdigest()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def text_model_version(store: FeatureStore) -> str | None:
    """The version of the stored sentiment model (``None`` when none was trained), without loading the model."""
    if not store.has_table(TEXT_MODELS):
        return None
    versions = store.table(TEXT_MODELS).select("version").execute()["version"]
    return str(versions.iloc[0]) if len(versions) else None


def snapshot_hash(store: FeatureStore) -> str:
    """Hash of the data snapshot: every load in the store, and the sentiment model that scored its texts."""
    loads = store.loads()["load_id"].astype(str).sort_values().tolist()
    payload = json.dumps({"loads": loads, "text_model": text_model_version(store)})
    return hashlib.sha256(payload.encode()).hexdigest()


def event_source(store: FeatureStore, events: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """The first (table, time column) of ``events`` that the store holds with rows.

    Raises:
        FeatureError: when it holds none of them, naming them.
    """
    for table, column in events:
        if store.has_table(table) and store.count(table):
            return table, column
    names = " or ".join(t for t, _ in events) or "event tables"
    raise FeatureError(f"no {names} in the feature store: ingest data first")


def latest_event(store: FeatureStore, events: Sequence[tuple[str, str]]) -> date:
    """The day of the newest event: what "as of the store's latest data" means. ``events`` are (table, time
    column) pairs; the first the store holds with rows counts.

    Raises:
        FeatureError: when the store holds none of them.
    """
    table, column = event_source(store, events)
    t = store.table(table)
    value = t.aggregate(last=t[column].max()).execute()["last"].iloc[0]
    if pd.isna(value):
        raise FeatureError(f"no {table} with a {column} in the feature store: ingest data first")
    return pd.Timestamp(value).date()


def load_purchases(store: FeatureStore, as_of: date) -> pd.DataFrame:
    """Completed orders up to the end of ``as_of`` with their value (``features.views.purchase_history``).

    Raises:
        FeatureError: when the store holds no orders or order lines.
    """
    missing = [t for t in ("orders", "order_lines") if not store.has_table(t)]
    if missing:
        raise FeatureError(f"no {' or '.join(missing)} in the feature store: ingest orders first")
    tables = {name: store.table(name) for name in ("orders", "order_lines")}
    return purchase_history(tables, as_of).execute()


def build_latest(store: FeatureStore, view: str, events: Sequence[tuple[str, str]], threads: int = 1) -> BuiltView:
    """A view at one cutoff, the store's latest data (the day of the newest event, see ``latest_event``),
    computed without materialising anything: what serving and drift audits read as "now".

    Raises:
        FeatureError: when the events table is missing or empty, or the view needs a table the store lacks.
    """
    as_of = latest_event(store, events)
    return build_view(store, view, as_of, [as_of], threads=threads)


# ------------------------------------------------------------------------------------------------ build


def _categories(store: FeatureStore) -> list[str]:
    if not store.has_table("products"):
        return []
    products = store.table("products")
    values = products.select("category").distinct().execute()["category"].dropna()
    return sorted(values.astype(str).tolist())


def _weeks(store: FeatureStore, as_of: date, start: date | None, end: date | None) -> list[date]:
    orders = store.table("orders")
    span = orders.aggregate(first=orders.order_date.min(), last=orders.order_date.max()).execute()
    if span["first"].isna().iloc[0]:
        raise FeatureError("no orders in the store: the product-week view needs orders")
    first = pd.Timestamp(start or span["first"].iloc[0]).to_period("W-SUN").start_time
    last_complete = pd.Timestamp(as_of) + pd.Timedelta(days=1) - pd.Timedelta(days=7)
    final = min(pd.Timestamp(end) if end else last_complete, last_complete)
    weeks = pd.date_range(first, final, freq="W-MON")
    return [w.date() for w in weeks]


def resolve_cutoffs(as_of: date, cutoffs: str | None, start: date | None, end: date | None) -> list[date]:
    """The cutoff days: the as-of date alone, or month ends from ``start`` to ``end`` (default: the as-of date).

    Raises:
        FeatureError: for an unknown cutoff rule, a missing ``--from``, or cutoffs after the as-of date.
    """
    if cutoffs is None:
        if start or end:
            raise FeatureError("--from/--to need --cutoffs monthly")
        return [as_of]
    if cutoffs != "monthly":
        raise FeatureError(f"--cutoffs must be monthly, not {cutoffs!r}")
    if start is None:
        raise FeatureError("--cutoffs monthly needs --from DATE")
    end = end or as_of
    if end > as_of:
        raise FeatureError(f"--to {end} is after --as-of {as_of}: a cutoff cannot see past the data's as-of date")
    days = monthly_cutoffs(start, end)
    if not days:
        raise FeatureError(f"no month ends between {start} and {end}")
    return days


def unavailable_groups(view: str, absent: list[str], config: ViewConfig | None = None) -> list[dict]:
    """The feature groups of a view that tables in ``absent`` (missing or empty) leave without data.

    Returns:
        ``[{"group", "tables", "columns", "reason"}]``: their columns are missing (NaN) in the view.
    """
    config = config or ViewConfig()
    out = []
    for group in get_view(view).groups:
        lacking = [t for t in group.tables if t in absent]
        if lacking:
            out.append({"group": group.name, "tables": list(group.tables), "columns": group.columns(config),
                        "reason": f"no {', '.join(lacking)} in the feature store ({group.meaning})"})
    return out


def store_unavailable_groups(store: FeatureStore, view: str, config: ViewConfig | None = None) -> list[dict]:
    """The feature groups of ``view`` that the store's data leaves missing (their tables are absent or empty)."""
    absent = [t for t in get_view(view).tables if not store.has_table(t) or store.count(t) == 0]
    return unavailable_groups(view, absent, config)


def build_view(store: FeatureStore, view: str, as_of: date, cutoffs: list[date] | None = None,
               start: date | None = None, end: date | None = None, backend: str = "duckdb",
               config: ViewConfig | None = None, threads: int = 2) -> BuiltView:
    """Compute a feature view for the given cutoffs (or weeks, for ``product_week``).

    Args:
        store: the feature store holding the canonical tables.
        view: ``opportunity``, ``customer`` or ``product_week``.
        as_of: the data's as-of date; labels never look past it.
        cutoffs: cutoff days (opportunity and customer views).
        start: first week (product_week) to include.
        end: last week (product_week) to include.
        backend: ``duckdb`` or ``spark``.
        config: windows and horizon.
        threads: Spark local threads.

    Returns:
        The frame, its version and lineage.

    Raises:
        FeatureError: when a table the view needs is not in the store.
    """
    spec = get_view(view)
    config = config or ViewConfig()
    held = set(store.con.list_tables())
    absent = [t for t in spec.tables if t not in held or store.count(t) == 0]
    needed = [t for t in spec.required if t in absent]
    if needed:
        raise FeatureError(f"the {view} view needs {', '.join(needed)}, which the feature store does not hold "
                           f"(or holds empty): ingest or import {'it' if len(needed) == 1 else 'them'} first. "
                           f"The view can do without {', '.join(t for t in spec.tables if t not in spec.required)}.")
    unavailable = unavailable_groups(view, absent, config)
    warnings: list[str] = [f"feature group {g['group']} is missing (NaN): {g['reason']}" for g in unavailable]
    names = [t for t in spec.tables if t in held]
    if TEXT_SENTIMENT in held:
        names.append(TEXT_SENTIMENT)
    elif view in ("opportunity", "customer"):
        warnings.append("no sentiment scores in the store (run `salesml features sentiment`): sentiment "
                        "features are empty")
    categories = _categories(store) if view == "customer" else []
    if view == "product_week":
        days = _weeks(store, as_of, start, end)
        if not days:
            raise FeatureError("no complete week before the as-of date")
    else:
        days = sorted(cutoffs or [as_of])
        late = [d for d in days if d > as_of]
        if late:
            raise FeatureError(f"cutoffs after the as-of date {as_of}: {late[:3]}")

    definition = definition_hash(view, config, categories)
    snapshot = snapshot_hash(store)
    version = hashlib.sha256(f"{definition}:{snapshot}:{as_of}".encode()).hexdigest()[:16]
    labels = [c.name for c in spec.columns(config, *([categories] if view == "customer" else [])) if c.role == "label"]
    stored = _materialised(store, view, version, days) if backend == "duckdb" else None
    if stored is not None:
        # The same definition, data snapshot, as-of date and cutoffs: the stored rows are the ones a build would
        # compute (views are deterministic), so a training right after `features build` or another training
        # does not compute them again.
        frame = normalise_frame(stored, view, config, categories)
        return BuiltView(view, frame, version, definition, snapshot, as_of, days, backend, labels, warnings,
                         unavailable)

    spark = None
    if backend == "spark":
        from features.spark import SparkTables

        spark = SparkTables(store, names, threads)
        tables, execute = spark.tables, spark.con.to_pyarrow
    elif backend == "duckdb":
        tables = {name: store.table(name) for name in names}
        execute = store.con.to_pyarrow
    else:
        raise FeatureError(f"--backend must be duckdb or spark, not {backend!r}")
    for name in spec.tables:
        if name not in tables:  # an optional table the store never held: empty, so the expressions compile
            tables[name] = ibis.memtable(empty_frame(TABLES[name]), schema=table_schema(TABLES[name]))
    try:
        if view == "opportunity":
            frame = execute(build_opportunity_view(tables, cutoff_table(days, as_of, config.horizon_days), config))
        elif view == "customer":
            cut = cutoff_table(days, as_of, config.horizon_days)
            frame = execute(build_customer_view(tables, cut, config, categories)).to_pandas(
                types_mapper=_PANDAS_TYPES.get)
            items = execute(basket_items(tables, cut, config)).to_pandas(types_mapper=_PANDAS_TYPES.get)
            frame = add_association_affinity(frame, items, config)
        else:
            frame = execute(build_product_week_view(tables, week_table(days), config))
    finally:
        if spark is not None:
            spark.close()
    frame = normalise_frame(frame, view, config, categories)
    missing_columns = [c for g in unavailable for c in g["columns"] if c in frame.columns]
    nowhere = pd.Series(False, index=frame.index)
    for column in missing_columns:
        frame[column] = frame[column].where(nowhere)
    return BuiltView(view, frame, version, definition, snapshot, as_of, days, backend, labels, warnings, unavailable)


def _materialised(store: FeatureStore, view: str, version: str, days: Sequence[date]) -> pa.Table | None:
    """The rows of a materialised version of ``view`` built for exactly ``days``, or ``None``."""
    if not store.has_table(FEATURE_VERSIONS):
        return None
    versions = store.table(FEATURE_VERSIONS)
    rows = versions.filter(versions["view"] == view, versions["version"] == version).execute()
    wanted = json.dumps([str(d) for d in days])
    rows = rows[rows["cutoffs"] == wanted]
    if rows.empty or not store.has_table(str(rows["table_name"].iloc[0])):
        return None
    return store.con.to_pyarrow(store.table(str(rows["table_name"].iloc[0])))


def normalise_frame(frame: pa.Table | pd.DataFrame, view: str, config: ViewConfig,
                    categories: list[str]) -> pd.DataFrame:
    """Give a view's frame the same dtypes and row order whichever backend computed it.

    Keys and categorical columns become strings, flags booleans, every other number float64, dates
    datetime64[ns]; rows are sorted by cutoff (or week) and entity. The casts and the sort run in Arrow: done
    column by column in pandas they took a fifth of a 1M-event opportunity build.
    """
    spec = VIEWS[view]
    columns = spec.columns(config, categories) if view == "customer" else spec.columns(config)
    names = [c.name for c in columns]
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame[names], preserve_index=False)
    arrays = []
    for name in names:
        values = table.column(name)
        kind = values.type
        if name in ("cutoff", "week_start"):
            values = pc.floor_temporal(values.cast(pa.timestamp("ns")), unit="day")
        elif name in BOOLEAN_COLUMNS:
            values = values.cast(pa.bool_())
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            values = values.cast(pa.float64())
        else:
            values = values.cast(pa.string())
        arrays.append(values)
    table = pa.Table.from_arrays(arrays, names=names)
    keys = [c.name for c in columns if c.role == "key"][:2]
    order = ["cutoff", keys[0]] if "cutoff" in names else ["week_start", "product_id"]
    table = table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in order]))
    # Not split_blocks/self_destruct: they save a copy of the result (about 350 MB at 16M events) but hand pandas
    # read-only columns, and a user's `frame.loc[...] = ...` on a built view would fail.
    return table.to_pandas(types_mapper=_PANDAS_TYPES.get)


# ------------------------------------------------------------------------------------------------ materialise


def materialize(store: FeatureStore, built: BuiltView, out: Path | None = None) -> dict:
    """Store a built view in the feature store (table ``fv_<view>_<version>``), register its version, and
    optionally write it to Parquet with the lineage in the file's metadata.

    Returns:
        ``{"view", "rows", "columns", "label_columns", "version", "out"}`` (and ``"warnings"`` when any).
    """
    table_name = f"fv_{built.view}_{built.version}"
    store.con.create_table(table_name, built.frame, overwrite=True)
    store.ensure_system_tables()
    if not store.has_table(FEATURE_VERSIONS):
        store.con.create_table(FEATURE_VERSIONS, schema=ibis.schema({
            "view": "string", "version": "string", "table_name": "string", "definition_hash": "string",
            "snapshot": "string", "as_of": "date", "cutoffs": "string", "rows": "int64", "backend": "string",
            "built_at": "timestamp"}))
    store.con.con.execute(f"DELETE FROM {FEATURE_VERSIONS} WHERE version = ?", [built.version])
    store.con.insert(FEATURE_VERSIONS, pd.DataFrame({
        "view": [built.view], "version": [built.version], "table_name": [table_name],
        "definition_hash": [built.definition_hash], "snapshot": [built.snapshot], "as_of": [built.as_of],
        "cutoffs": [json.dumps([str(d) for d in built.cutoffs])], "rows": [len(built.frame)],
        "backend": [built.backend], "built_at": [datetime.now(UTC).replace(tzinfo=None)]}))
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(built.frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta.update({b"salesml.view": built.view.encode(), b"salesml.version": built.version.encode(),
                     b"salesml.definition_hash": built.definition_hash.encode(),
                     b"salesml.snapshot": built.snapshot.encode(), b"salesml.as_of": str(built.as_of).encode(),
                     b"salesml.label_columns": json.dumps(built.label_columns).encode()})
        pq.write_table(table.replace_schema_metadata(meta), out)
    result = {
        "view": built.view,
        "rows": len(built.frame),
        "columns": list(built.frame.columns),
        "label_columns": built.label_columns,
        "version": built.version,
        "out": str(out) if out else None,
    }
    if built.warnings:
        result["warnings"] = built.warnings
    if built.unavailable:
        result["unavailable_feature_groups"] = [{k: g[k] for k in ("group", "tables", "reason")}
                                                for g in built.unavailable]
    return result


def read_lineage(path: Path) -> dict[str, str]:
    """The lineage a materialised Parquet file carries (view, version, definition hash, snapshot, as-of)."""
    meta = pq.read_schema(path).metadata or {}
    return {k.decode()[len("salesml."):]: v.decode() for k, v in meta.items() if k.startswith(b"salesml.")}


def feature_versions(store: FeatureStore) -> pd.DataFrame:
    """Materialised view versions, newest first."""
    if not store.has_table(FEATURE_VERSIONS):
        return pd.DataFrame(columns=["view", "version", "table_name", "as_of", "rows", "backend", "built_at"])
    t = store.table(FEATURE_VERSIONS)
    return t.order_by(ibis.desc(t.built_at)).execute()

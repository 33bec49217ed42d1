"""Feature commands: describe, build, version and list point-in-time views; train the text sentiment model."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from salesml.cli.common import (
    CommandError,
    JsonOpt,
    emit,
    failures,
    features_app,
    new_table,
    open_store,
    parse_date,
    stderr,
    stdout,
)
from salesml.settings import get_settings


@features_app.command("describe")
def features_describe(
    view: Annotated[str, typer.Argument(help="opportunity, customer or product_week.")],
    as_json: JsonOpt = False,
) -> None:
    """Document a view's columns: name, meaning, window and role (key, feature, sensitive, label)."""
    from features.pipeline import _categories, store_unavailable_groups
    from features.views import ViewConfig, get_view

    settings = get_settings()
    with failures(as_json):
        spec = get_view(view)
        config = ViewConfig()
        categories = ["<category>"]
        unavailable = None
        if settings.feature_store_path.exists():
            with open_store(settings, read_only=True) as store:
                if view == "customer":
                    categories = _categories(store) or categories
                unavailable = store_unavailable_groups(store, view, config)
        columns = spec.columns(config, categories) if view == "customer" else spec.columns(config)
    missing = {c: g["group"] for g in unavailable or [] for c in g["columns"]}
    result = {"view": spec.name, "entity": spec.entity, "description": spec.description, "tables": list(spec.tables),
              "required_tables": list(spec.required),
              "groups": [{"group": g.name, "tables": list(g.tables), "columns": g.columns(config)} for g in spec.groups],
              "columns": [{"name": c.name, "meaning": c.meaning, "window": c.window, "role": c.role,
                           **({"unavailable": missing[c.name]} if c.name in missing else {})} for c in columns]}
    if unavailable is not None:
        result["unavailable_feature_groups"] = [{k: g[k] for k in ("group", "tables", "reason")} for g in unavailable]

    def render(r: dict) -> None:
        stdout.print(f"[bold]{r['view']}[/]: one row per {r['entity']}.\n{r['description']}\n"
                     f"needs: {', '.join(r['required_tables'])}; can do without: "
                     f"{', '.join(t for t in r['tables'] if t not in r['required_tables'])}")
        rich = new_table("column", "role", "window", "meaning")
        for c in r["columns"]:
            meaning = c["meaning"] + (f" [yellow](unavailable: group {c['unavailable']})[/]" if "unavailable" in c else "")
            rich.add_row(c["name"], c["role"], c["window"], meaning)
        stdout.print(rich)
        if "unavailable_feature_groups" not in r:
            stdout.print("no feature store yet: which groups the data leaves missing shows once data is ingested")
        for g in r.get("unavailable_feature_groups", []):
            stdout.print(f"unavailable feature group [bold]{g['group']}[/] (missing, NaN): {g['reason']}",
                         highlight=False)

    emit(result, as_json, render)


@features_app.command("build")
def features_build(
    view: Annotated[str, typer.Argument(help="opportunity, customer or product_week.")],
    as_of: Annotated[str, typer.Option("--as-of", help="The data's as-of date; no feature or label looks past it.")],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write (lineage in its metadata).")],
    cutoffs: Annotated[str | None, typer.Option(
        help="monthly: one cutoff per month end from --from to --to (default: the as-of date alone).")] = None,
    start: Annotated[str | None, typer.Option("--from", help="First day of the cutoff (or week) range.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last day of the range (default: the as-of date).")] = None,
    backend: Annotated[str, typer.Option(help="duckdb, or spark (pip install '.[spark]').")] = "duckdb",
    as_json: JsonOpt = False,
) -> None:
    """Build a point-in-time feature view, materialise it in the feature store with a version, write Parquet."""
    from features.pipeline import build_view, materialize, resolve_cutoffs

    settings = get_settings()
    with failures(as_json):
        as_of_day = parse_date(as_of, "--as-of") or date.today()
        first, last = parse_date(start, "--from"), parse_date(end, "--to")
        if view == "product_week":
            if cutoffs:
                raise CommandError("product_week rows are weeks: use --from/--to to bound them, not --cutoffs")
            days = None
        else:
            days = resolve_cutoffs(as_of_day, cutoffs, first, last)
        with open_store(settings) as store, stderr.status(f"building {view} on {backend}"):
            built = build_view(store, view, as_of_day, days, start=first, end=last, backend=backend,
                               threads=settings.threads)
            result = materialize(store, built, out)
        for warning in built.warnings:
            stderr.print(f"[yellow]warning:[/] {warning}")

    def render(r: dict) -> None:
        stdout.print(f"{r['view']}: {r['rows']:,} rows x {len(r['columns'])} columns, version {r['version']}, "
                     f"written to {r['out']}; labels: {', '.join(r['label_columns'])}")

    emit(result, as_json, render)


@features_app.command("list")
def features_list(as_json: JsonOpt = False) -> None:
    """List materialised feature-view versions, newest first."""
    from features.pipeline import feature_versions

    settings = get_settings()
    with failures(as_json), open_store(settings, read_only=True) as store:
        frame = feature_versions(store)
    rows = [{k: (None if v is None or v != v else str(v)) for k, v in r.items()} for r in frame.to_dict("records")]
    result = {"versions": rows}

    def render(r: dict) -> None:
        rich = new_table("view", "version", "as_of", "rows", "backend", "built_at", right=("rows",),
                         title="Feature view versions")
        for v in r["versions"]:
            rich.add_row(v["view"], v["version"], v["as_of"], v["rows"], v["backend"], (v["built_at"] or "")[:19])
        stdout.print(rich)

    emit(result, as_json, render)


@features_app.command("sentiment")
def features_sentiment(
    labels: Annotated[Path | None, typer.Option(
        help="CSV/Parquet of labelled texts (columns text, sentiment: negative|neutral|positive). "
             "Default: a corpus generated from the simulator's text templates.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train the text sentiment model (stored as JSON, no download) and score ticket and news texts."""
    from features.ingest import read_table_file
    from features.pipeline import train_text_model

    settings = get_settings()
    with failures(as_json):
        corpus = read_table_file(labels) if labels else None
        with open_store(settings) as store, stderr.status("training the sentiment model"):
            result = train_text_model(store, corpus, source=str(labels) if labels else "templates")
    emit(result, as_json, lambda r: stdout.print(
        f"sentiment model {r['model_version']} trained on {r['trained_on']:,} texts; scored {r['scored']}"))



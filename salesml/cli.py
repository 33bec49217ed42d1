"""The ``salesml`` command: composes each stage's commands.

Stages are imported inside the command functions, so ``salesml --help`` stays fast and importing this module
has no side effects. Every command that reports results accepts ``--json`` and then prints one JSON object as
the last line of stdout; progress and messages go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from salesml.settings import TELEMETRY_OFF, Settings, get_settings

app = typer.Typer(
    name="salesml",
    help="salesml: ML research and MLOps for sales teams - data, features, models, audits and serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect the canonical data model, data standards, stage machine and quarantine.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
features_app = typer.Typer(help="Build, describe and list point-in-time feature views; train the text sentiment model.",
                           no_args_is_help=True)
app.add_typer(features_app, name="features")
train_app = typer.Typer(help="Train Optuna-tuned models, tracked in MLflow and registered as new versions.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
review_app = typer.Typer(help="Review audited candidates: list, show, approve or reject (model validators).",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")
access_app = typer.Typer(help="Manage principals and tokens in SALESML_HOME/access.yaml (installation admin).",
                         no_args_is_help=True)
app.add_typer(access_app, name="access")
score_app = typer.Typer(help="Score files in batch with a champion (same preprocessing and reasons as the service).",
                        no_args_is_help=True)
app.add_typer(score_app, name="score")


def make_console(**options: Any) -> Console:
    """A rich console; written to a file or a pipe it is 160 columns wide (rich's 80 folds ids and paths).

    ``COLUMNS`` in the environment still wins.
    """
    console = Console(**options)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160
    return console


stdout = make_console(soft_wrap=True)
stderr = make_console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line of stdout.")]


class CommandError(Exception):
    """A user-facing failure: printed as one clear line (or a JSON error object), exit code 2."""


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages to stderr.")] = False,
) -> None:
    """salesml: ML research and MLOps for sales teams - data, features, models, audits and serving."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    # MLflow draws a progress bar for every artifact download: a model is a few small files, and in the service's
    # and batch runs' logs the bar is only noise. Inherited by `salesml serve`'s BentoML process.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        settings = get_settings()
    except ValidationError as exc:  # a SALESML_* variable with a bad value: name the variable, not a traceback
        problems = describe_invalid_values(exc, lambda loc: "SALESML_" + "_".join(loc).upper())
        stderr.print(f"[bold red]error:[/] invalid setting: {problems}", highlight=False)
        raise typer.Exit(2) from None
    level = logging.DEBUG if verbose else getattr(logging, settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # mlflow.store.db.utils announces creating and migrating the tracking database on a new SALESML_HOME, and
    # mlflow.pyfunc that it infers a signature from the input example, which is how we always log the model.
    for noisy in ("urllib3", "alembic", "numba", "matplotlib", "PIL", "mlflow.store.db.utils", "mlflow.pyfunc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Ibis 12 still calls DuckDB's fetch_arrow_table, which DuckDB 1.5 deprecates: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r"fetch_arrow_table\(\) is deprecated", category=DeprecationWarning)
    # Optuna marks features we use on purpose (heartbeats, grouped TPE, its matplotlib plots) as experimental.
    warnings.filterwarnings("ignore", message=r"(Argument ``\w+`` is an experimental feature|optuna\.\S+ is experimental)")


# ------------------------------------------------------------------------------------------------ helpers


def new_table(*columns: str, right: tuple[str, ...] = (), **options: Any) -> RichTable:
    """A rich table whose cells wrap instead of being cut: ids, versions and paths are copied from it.

    ``right`` names the columns to right-justify (counts and figures).
    """
    table = RichTable(**options)
    for column in columns:
        table.add_column(column, overflow="fold", justify="right" if column in right else "left")
    return table


def emit(result: dict, as_json: bool, render: Callable[[dict], None] | None = None) -> None:
    """Print a command's result: one JSON line with ``--json``, else the human rendering."""
    if as_json:
        print(json.dumps(result, default=_json_default))
    elif render is not None:
        render(result)
    else:
        stdout.print_json(json.dumps(result, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# The errors a command reports as a clear message (exit 2) rather than a traceback, by module. They are looked up
# only in modules already imported: an error class whose module was never loaded cannot have been raised, and
# importing every stage here would cost each command seconds (MLflow, scikit-learn, Evidently) before it starts.
EXPECTED_ERRORS = (("experiments.registered", "RegistryError"), ("features.ingest", "IngestionError"),
                   ("features.pipeline", "FeatureError"), ("features.sources.mapping", "MappingError"),
                   ("monitoring.review", "GateError"), ("salesml.access", "AccessError"))


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception classes ``failures`` turns into a message: built-in ones plus those of loaded stages."""
    loaded = tuple(getattr(sys.modules[module], name) for module, name in EXPECTED_ERRORS if module in sys.modules)
    return (CommandError, ValueError, FileNotFoundError, *loaded)


@contextmanager
def failures(as_json: bool) -> Iterator[None]:
    """Turn expected errors into one clear message and exit code 2 (a JSON error object with ``--json``)."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, expected_errors()):
            raise
        message = describe_invalid_values(exc) if isinstance(exc, ValidationError) else str(exc)
        stderr.print(f"[bold red]error:[/] {message}", highlight=False)
        if as_json:
            print(json.dumps({"error": str(message)}))
        raise typer.Exit(2) from None


def describe_invalid_values(exc: ValidationError,
                            label: Callable[[list[str]], str] = lambda loc: ".".join(loc) or "value") -> str:
    """A pydantic error as one clause per bad value: ``accounts: ... (got 0)``.

    ``label`` names a value from its location (the field path by default; ``SALESML_THREADS`` for a setting).
    """
    return "; ".join(f"{label([str(p) for p in e['loc']])}: {e['msg']} (got {e.get('input')!r})"
                     for e in exc.errors())


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display on stderr; yields a ``(task, done, total)`` callback."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=stderr, transient=False, disable=not stderr.is_terminal) as progress:
        tasks: dict[str, Any] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"{description} {name}", total=total if total > 0 else None)
            progress.update(tasks[name], completed=done, total=total if total > 0 else None)

        yield update


def open_store(settings: Settings, read_only: bool = False):
    """The feature store named by the settings."""
    from features.store import FeatureStore

    path = settings.feature_store_path
    if read_only and not path.exists():
        raise CommandError(f"no feature store at {path}; run `salesml ingest` or `salesml demo` first")
    return FeatureStore.from_settings(settings, read_only=read_only)


def render_ingest(result: dict) -> None:
    """Print an ingestion report as a table."""
    table = new_table("table", "read", "stored", "quarantined", "by rule", right=("read", "stored", "quarantined"),
                      title=f"Ingestion report (load {result['load_id']}, as of {result['as_of']})")
    for name, t in result["tables"].items():
        rules = ", ".join(f"{k}: {v}" for k, v in t["by_rule"].items())
        flags = ", ".join(f"{k}: {v} (stored)" for k, v in t.get("flagged", {}).items() if v)
        table.add_row(name, f"{t['read']:,}", f"{t['stored']:,}", f"{t['quarantined']:,}",
                      "; ".join(x for x in (rules, flags) if x))
    stdout.print(table)
    if "source" in result:
        stdout.print(f"source: {result['source']}")


# ------------------------------------------------------------------------------------------------ data


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the canonical tables to.")],
    accounts: Annotated[int, typer.Option(help="Number of accounts.")] = 2000,
    months: Annotated[int, typer.Option(help="Months of history.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical data.")] = 7,
    start: Annotated[str, typer.Option(help="First day of the window (YYYY-MM-DD).")] = "2024-01-01",
    scenario: Annotated[list[str] | None, typer.Option(
        "--scenario", help="competitor_entry@YYYY-MM:REGION, biased_history or price_shock@YYYY-MM (repeatable).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    as_json: JsonOpt = False,
) -> None:
    """Simulate a B2B sales organisation: every canonical table, plus ground truth in OUT/ground_truth."""
    from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation

    with failures(as_json):
        if fmt not in ("parquet", "csv"):
            raise CommandError(f"--format must be parquet or csv, not {fmt!r}")
        config = SimulationConfig(accounts=accounts, months=months, seed=seed, start=date.fromisoformat(start),
                                  scenarios=scenario or [])
        with stderr.status(f"simulating {accounts:,} accounts over {months} months"):
            org = simulate_organisation(config)
        with stderr.status(f"writing tables to {out}"):
            result = write_organisation(org, out, fmt)  # type: ignore[arg-type]
        result.pop("ground_truth")

    def render(r: dict) -> None:
        table = new_table("table", "rows", right=("rows",), title=f"Simulated organisation in {r['out']}")
        for name, rows in r["tables"].items():
            table.add_row(name, f"{rows:,}")
        stdout.print(table)
        stdout.print(f"ground truth (never read by features): {Path(r['out']) / 'ground_truth'}")

    emit(result, as_json, render)


@app.command()
def ingest(
    directory: Annotated[Path, typer.Argument(help="Folder of canonical tables (<table>.csv or .parquet).")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="The load's as-of date (default: today).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate every row against the data standards; store valid rows, quarantine the rest with reasons."""
    from features.ingest import discover_sources
    from features.ingest import ingest as run_ingest

    settings = get_settings()
    with failures(as_json):
        sources = discover_sources(directory)
        with open_store(settings) as store, progress_bar("validating") as progress:
            report = run_ingest(sources, store, as_of=_date(as_of), chunk_rows=settings.ingest_chunk_rows,
                                progress=progress)
    emit(report.to_dict(), as_json, render_ingest)


@app.command("import")
def import_data(
    dataset: Annotated[str | None, typer.Argument(
        help="A known dataset: telco_churn, ibm_sales_win_loss, uci_online_retail, cdnow, walmart_weekly_sales, "
             "retail_price_optimization. Omit it with --mapping.")] = None,
    source: Annotated[Path | None, typer.Option("--from", help="The dataset's folder or file.")] = None,
    mapping: Annotated[Path | None, typer.Option(help="Mapping YAML for any CSV/Parquet file (see README).")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="The load's as-of date (default: today).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a public dataset, or any CSV/Parquet file through a mapping, with the same standards."""
    from features.ingest import ingest as run_ingest
    from features.sources.datasets import DATASETS, load_dataset
    from features.sources.mapping import load_mapping, sources_from_mapping

    settings = get_settings()
    with failures(as_json):
        if source is None:
            raise CommandError("--from PATH is required: the dataset's folder or file")
        if mapping is not None:
            if dataset is not None:
                raise CommandError("give either a DATASET name or --mapping, not both")
            imported = sources_from_mapping(load_mapping(mapping), source)
        elif dataset is None:
            raise CommandError(f"name a DATASET ({', '.join(DATASETS)}) or give --mapping MAPPING.yaml")
        else:
            with stderr.status(f"reading {dataset} from {source}"):
                imported = load_dataset(dataset, source)
        with open_store(settings) as store, progress_bar("validating") as progress:
            for task in imported.tasks:
                store.register_task(task["name"], task)
            report = run_ingest(imported.sources, store, as_of=_date(as_of), chunk_rows=settings.ingest_chunk_rows,
                                progress=progress)
        result = report.to_dict()
        result["source"] = imported.description
    emit(result, as_json, render_ingest)


def _date(text: str | None, option: str = "--as-of") -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{option} must be a date YYYY-MM-DD, not {text!r}") from None


@data_app.command("standards")
def data_standards(as_json: JsonOpt = False) -> None:
    """List the data standards: every named rule, the table it applies to, and what it requires."""
    from features.standards import describe_rules

    result = {"rules": describe_rules()}

    def render(r: dict) -> None:
        table = new_table("name", "table", "description",
                          title=f"Data standards ({len({x['name'] for x in r['rules']})} rules, "
                                f"{len(r['rules'])} rule-table pairs)")
        for rule in r["rules"]:
            table.add_row(rule["name"], rule["table"], rule["description"])
        stdout.print(table)

    emit(result, as_json, render)


@data_app.command("tables")
def data_tables(
    table: Annotated[str | None, typer.Argument(help="Show one table's columns.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Describe the canonical data model: tables, keys, references and columns."""
    from features.model import TABLES, get_table

    with failures(as_json):
        try:
            names = [get_table(table).name] if table else list(TABLES)
        except KeyError as exc:
            raise CommandError(exc.args[0]) from None
    result = {"tables": [
        {
            "name": t.name,
            "description": t.description,
            "primary_key": list(t.primary_key),
            "foreign_keys": [{"column": fk.column, "parent": fk.parent} for fk in t.foreign_keys],
            "columns": [{"name": c.name, "type": c.dtype, "required": c.required, "description": c.description,
                         **({"allowed": list(c.allowed)} if c.allowed else {})} for c in t.columns],
        }
        for t in (TABLES[n] for n in names)
    ]}

    def render(r: dict) -> None:
        for t in r["tables"]:
            rich = new_table("column", "type", "required", "description", title=f"{t['name']}: {t['description']}",
                             title_justify="left")
            for c in t["columns"]:
                extra = f" One of: {', '.join(map(str, c['allowed']))}." if "allowed" in c else ""
                rich.add_row(c["name"], c["type"], "yes" if c["required"] else "", c["description"] + extra)
            stdout.print(rich)

    emit(result, as_json, render)


@data_app.command("stages")
def data_stages(as_json: JsonOpt = False) -> None:
    """Show the opportunity stage machine: every legal transition and its kind."""
    from features.stages import STAGES, legal_transitions

    result = {"stages": list(STAGES), "transitions": legal_transitions()}

    def render(r: dict) -> None:
        rich = new_table("from", "to", "kind", title="Opportunity stage machine")
        for t in r["transitions"]:
            rich.add_row(t["from"] or "(created)", t["to"], t["kind"])
        stdout.print(rich)

    emit(result, as_json, render)


@data_app.command("quarantine")
def data_quarantine(
    table: Annotated[str | None, typer.Option(help="Only rows of this table.")] = None,
    rule: Annotated[str | None, typer.Option(help="Only rows that broke this rule.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most rows to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Show quarantined rows: the rules they broke, what was wrong, and their source file and line."""
    settings = get_settings()
    with failures(as_json), open_store(settings, read_only=True) as store:
        frame = store.quarantine(table, rule, limit)
        total = store.count_quarantined(table, rule)
    rows = [{k: (None if v is None else str(v)) for k, v in r.items()} for r in frame.to_dict("records")]
    result = {"rows": rows, "shown": len(rows), "total": total}

    def render(r: dict) -> None:
        scope = "".join([f" of table {table}" if table else "", f" that broke rule {rule}" if rule else ""])
        if not r["total"]:
            stdout.print(f"No quarantined rows{scope}.", highlight=False)
            return
        rich = new_table("table", "file:line", "rules", "detail",
                         title=f"Quarantined rows{scope}: {r['shown']:,} of {r['total']:,}")
        for row in r["rows"]:
            rich.add_row(row["table_name"], f"{row['source_file']}:{row['source_line']}", row["rules"], row["detail"])
        stdout.print(rich)

    emit(result, as_json, render)


@data_app.command("loads")
def data_loads(as_json: JsonOpt = False) -> None:
    """List past loads into the feature store, newest first, with their row accounting."""
    settings = get_settings()
    with failures(as_json), open_store(settings, read_only=True) as store:
        frame = store.loads()
    loads = []
    for row in frame.to_dict("records"):
        report = json.loads(row["report"])
        loads.append({"load_id": row["load_id"], "as_of": str(row["as_of"]), "finished_at": str(row["finished_at"]),
                      "tables": {k: {x: v[x] for x in ("read", "stored", "quarantined")}
                                 for k, v in report["tables"].items()}})
    result = {"loads": loads}

    def render(r: dict) -> None:
        rich = new_table("load", "as of", "finished", "read", "stored", "quarantined",
                         right=("read", "stored", "quarantined"), title="Loads")
        for load in r["loads"]:
            t = load["tables"].values()
            rich.add_row(load["load_id"], load["as_of"], load["finished_at"][:19], str(sum(x["read"] for x in t)),
                         str(sum(x["stored"] for x in t)), str(sum(x["quarantined"] for x in t)))
        stdout.print(rich)

    emit(result, as_json, render)


# ------------------------------------------------------------------------------------------------ features


@features_app.command("describe")
def features_describe(
    view: Annotated[str, typer.Argument(help="opportunity, customer or product_week.")],
    as_json: JsonOpt = False,
) -> None:
    """Document a view's columns: name, meaning, window and role (key, feature, sensitive, label)."""
    from features.pipeline import _categories
    from features.views import ViewConfig, get_view

    settings = get_settings()
    with failures(as_json):
        spec = get_view(view)
        config = ViewConfig()
        categories = ["<category>"]
        if view == "customer" and settings.feature_store_path.exists():
            with open_store(settings, read_only=True) as store:
                categories = _categories(store) or categories
        columns = spec.columns(config, categories) if view == "customer" else spec.columns(config)
    result = {"view": spec.name, "entity": spec.entity, "description": spec.description, "tables": list(spec.tables),
              "columns": [{"name": c.name, "meaning": c.meaning, "window": c.window, "role": c.role}
                          for c in columns]}

    def render(r: dict) -> None:
        stdout.print(f"[bold]{r['view']}[/]: one row per {r['entity']}.\n{r['description']}")
        rich = new_table("column", "role", "window", "meaning")
        for c in r["columns"]:
            rich.add_row(c["name"], c["role"], c["window"], c["meaning"])
        stdout.print(rich)

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
        as_of_day = _date(as_of, "--as-of") or date.today()
        first, last = _date(start, "--from"), _date(end, "--to")
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


# ------------------------------------------------------------------------------------------------ train


def current_identity(settings: Settings) -> str:
    """Who runs the command: the principal of SALESML_TOKEN, or ``local:<os user>`` without a token."""
    from salesml.access import authenticate, local_identity

    if settings.token is None:
        return local_identity()
    return authenticate(settings.access_file, settings.token.get_secret_value()).name


@train_app.command("churn")
def train_churn(
    task: Annotated[str, typer.Option(help="opportunity_loss, customer_churn, or an imported task table "
                                           "(telco_churn, ibm_sales_win_loss, your own).")],
    trials: Annotated[int | None, typer.Option(help="Finished trials the study should reach (resumes a study).")
                      ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds of tuning in this run at most.")] = None,
    config: Annotated[Path | None, typer.Option(help="Training config YAML (default: "
                                                     "experiments/configs/<task>.yaml when it exists).")] = None,
    baseline: Annotated[bool, typer.Option(help="Train the stage-based win-rate baseline instead.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Tune (Optuna), train, calibrate and evaluate a risk model; track it in MLflow and register a version."""
    from experiments.risk_run import run_risk_training
    from training.risk import InsufficientDataError
    from training.tasks import load_config

    settings = get_settings()
    with failures(as_json):
        default = Path(__file__).resolve().parents[1] / "experiments" / "configs" / f"{task}.yaml"
        cfg = load_config(config or (default if default.is_file() else None), task=task, trials=trials,
                          timeout=timeout, threads=settings.threads)
        trainer = current_identity(settings)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
                   TimeElapsedColumn()]
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal) as bar:
            job = bar.add_task("trials", total=cfg.trials, best="-")

            def progress(done: int, best: float) -> None:
                bar.update(job, completed=done, best=f"{best:.4f}")

            def status(text: str) -> None:
                stderr.print(f"[dim]{text}[/]")

            try:
                result = run_risk_training(settings, task, cfg, trainer, baseline, progress, status)
            except InsufficientDataError as exc:
                raise CommandError(str(exc)) from None

    def render(r: dict) -> None:
        m = r["metrics"]
        stdout.print(f"registered [bold]{r['model']}[/] version {r['version']} (run {r['run_id']})")
        rich = new_table("metric", "value", right=("value",), title="Test metrics")
        for key, value in m.items():
            if key.startswith(("test_", "oracle", "early_warning", "lead_time")):
                rich.add_row(key, "-" if value is None else f"{value:.4f}")
        stdout.print(rich)

    emit(result, as_json, render)


# ------------------------------------------------------------------------------------------------ audit and review


def current_principal(settings: Settings):
    """The principal of SALESML_TOKEN (required for reviews, promotions and rollbacks)."""
    from salesml.access import AccessError, authenticate

    if settings.token is None:
        raise AccessError("this command needs your identity: set SALESML_TOKEN to a token from `salesml access add`")
    return authenticate(settings.access_file, settings.token.get_secret_value())


@app.command()
def audit(
    model: Annotated[str, typer.Argument(help="Registered model, e.g. risk.opportunity_loss.")],
    version: Annotated[str, typer.Argument(help="Version to audit.")],
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: monitoring/policy.yaml).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Audit a version (performance vs champion, fairness, drift, explanations) and set its gate."""
    from monitoring.gate import audit_version

    settings = get_settings()
    with failures(as_json), stderr.status(f"auditing {model} version {version}"):
        outcome = audit_version(settings, model, version, policy)

    def render(r: dict) -> None:
        stdout.print(f"{r['model']} version {r['version']}: gate [bold]{r['gate']}[/]")
        rich = new_table("check", "status", "reason")
        for c in r["checks"]:
            rich.add_row(c["name"], c["status"], c["reason"])
        stdout.print(rich)
        stdout.print(f"report: {r['report']}")

    emit(outcome.result, as_json, render)


@review_app.command("list")
def review_list(as_json: JsonOpt = False) -> None:
    """List registered versions with their gate, review decision and alias."""
    from monitoring.review import list_candidates

    settings = get_settings()
    with failures(as_json):
        rows = list_candidates(settings)

    def render(r: dict) -> None:
        rich = new_table("model", "version", "gate", "decision", "alias", "trainer", "created", title="Candidates")
        for row in r["candidates"]:
            rich.add_row(*(str(row[c] or "") for c in ("model", "version", "gate", "decision", "alias", "trainer",
                                                       "created")))
        stdout.print(rich)

    emit({"candidates": rows}, as_json, render)


@review_app.command("show")
def review_show(
    model: Annotated[str, typer.Argument(help="Registered model.")],
    version: Annotated[str, typer.Argument(help="Version.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a version's audit summary and the path of its HTML report."""
    from monitoring.review import show_audit

    settings = get_settings()
    with failures(as_json):
        result = show_audit(settings, model, version)

    def render(r: dict) -> None:
        stdout.print(f"{r['model']} version {r['version']}: gate [bold]{r['gate']}[/]")
        for c in r["checks"]:
            stdout.print(f"  {c['status']:>6}  {c['name']}: {c['reason']}")
        d = r["decision"]
        stdout.print(f"decision: {d['decision'] or 'none'}" + (f" by {d['by']} at {d['at']}: {d['reason']}"
                                                              if d["decision"] else ""))
        stdout.print(f"report: {r['report']}")

    emit(result, as_json, render)


def _decide(decision: str, model: str, version: str, reason: str, as_json: bool) -> None:
    from monitoring.review import review

    settings = get_settings()
    with failures(as_json):
        result = review(settings, model, version, decision, reason, current_principal(settings))
    emit(result, as_json, lambda r: stdout.print(f"{r['model']} version {r['version']}: {decision}d by "
                                                 f"{r['principal']}"))


@review_app.command("approve")
def review_approve(
    model: Annotated[str, typer.Argument(help="Registered model.")],
    version: Annotated[str, typer.Argument(help="Version.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log and the version's tags).")],
    as_json: JsonOpt = False,
) -> None:
    """Approve an audited version (model validators; not the version's own trainer)."""
    _decide("approve", model, version, reason, as_json)


@review_app.command("reject")
def review_reject(
    model: Annotated[str, typer.Argument(help="Registered model.")],
    version: Annotated[str, typer.Argument(help="Version.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log and the version's tags).")],
    as_json: JsonOpt = False,
) -> None:
    """Reject an audited version (model validators)."""
    _decide("reject", model, version, reason, as_json)


@app.command()
def promote(
    model: Annotated[str, typer.Argument(help="Registered model.")],
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
    as_json: JsonOpt = False,
) -> None:
    """Set the alias champion (gate PASS, or REVIEW with an approval); the old champion becomes previous."""
    from monitoring.review import promote as run_promote

    settings = get_settings()
    with failures(as_json):
        result = run_promote(settings, model, version, current_principal(settings))
    emit(result, as_json, lambda r: stdout.print(f"{r['model']}: champion is version {r['champion']} "
                                                 f"(previous: {r['previous']})"))


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="Registered model.")],
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Restore the previous champion."""
    from monitoring.review import rollback as run_rollback

    settings = get_settings()
    with failures(as_json):
        result = run_rollback(settings, model, current_principal(settings), reason)
    emit(result, as_json, lambda r: stdout.print(f"{r['model']}: champion is version {r['champion']} again "
                                                 f"(previous: {r['previous']})"))


# ------------------------------------------------------------------------------------------------ access


@access_app.command("add")
def access_add(
    name: Annotated[str, typer.Option(help="Unique principal name.")],
    role: Annotated[str, typer.Option(help="sales_rep, sales_manager, executive, application, data_scientist or "
                                           "model_validator.")],
    scope: Annotated[str, typer.Option(help="rep:ID, team:ID or all.")] = "all",
    as_json: JsonOpt = False,
) -> None:
    """Add a principal and print its new token once (only its scrypt hash is stored)."""
    from salesml.access import issue_token

    settings = get_settings()
    with failures(as_json):
        try:
            token = issue_token(settings.access_file, name, role, scope)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    emit({"name": name, "role": role, "scope": scope, "token": token}, as_json,
         lambda r: stdout.print(f"token for {name} (shown once): {token}"))


@access_app.command("list")
def access_list(as_json: JsonOpt = False) -> None:
    """List principals (names, roles, scopes; never tokens)."""
    from salesml.access import load_principals

    settings = get_settings()
    rows = [{"name": p.name, "role": p.role, "scope": p.scope} for p in load_principals(settings.access_file)]

    def render(r: dict) -> None:
        rich = new_table("name", "role", "scope", title="Principals")
        for p in r["principals"]:
            rich.add_row(p["name"], p["role"], p["scope"])
        stdout.print(rich)

    emit({"principals": rows}, as_json, render)


@access_app.command("revoke")
def access_revoke(
    name: Annotated[str, typer.Argument(help="Principal to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove a principal; its token stops working at once."""
    from salesml.access import load_principals, save_principals

    settings = get_settings()
    with failures(as_json):
        principals = load_principals(settings.access_file)
        if not any(p.name == name for p in principals):
            raise CommandError(f"no principal named {name!r}")
        save_principals(settings.access_file, [p for p in principals if p.name != name])
    emit({"revoked": name}, as_json, lambda r: stdout.print(f"revoked {name}"))


# ------------------------------------------------------------------------------------------------ serve and score


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 3000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: SALESML_SERVE_WORKERS).",
                                                min=1)] = None,
) -> None:
    """Serve the champions with BentoML: POST /churn/score, GET /models, /dashboard, /healthz, /readyz, /metrics.

    SIGTERM or Ctrl-C stops the whole server: in-flight requests finish and the inference log is flushed."""
    settings = get_settings()
    with failures(False):
        check_port_free(host, port)
        # Without a store the service's workers fail at start and BentoML restarts them forever.
        if not settings.feature_store_path.exists():
            raise CommandError(f"no feature store at {settings.feature_store_path}; run `salesml ingest`, "
                               "`salesml import` or `salesml demo` first")
    # BentoML imports the service from its working directory, which it puts first on sys.path, and `python -m`
    # puts the current directory there too: run from a folder holding its own `features/` or `h2.py`, the service
    # imported those instead of ours. So BentoML works from the folder holding our packages, the interpreter adds
    # no directory of its own (PYTHONSAFEPATH, inherited by the workers), and every path setting goes absolute.
    root = Path(__file__).resolve().parents[1]  # holds salesml/ and serving/, in a checkout and in site-packages
    env = {**os.environ, **TELEMETRY_OFF, **settings.path_environment(),
           "BENTOML_HOME": str(settings.bentoml_home.resolve()), "PYTHONSAFEPATH": "1"}
    if workers:
        env["SALESML_SERVE_WORKERS"] = str(workers)
    settings.bentoml_home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:SalesML", "--working-dir", str(root),
               "--host", host, "--port", str(port)]
    stderr.print(f"serving on http://{host}:{port} (Ctrl-C to stop)")
    raise typer.Exit(run_server(command, env))


#: Seconds the server's processes get to finish in-flight requests and flush the inference log once stopped.
STOP_GRACE_SECONDS = 30.0


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send it SIGTERM if the parent dies (even by SIGKILL)."""
    import contextlib
    import ctypes

    # Not glibc Linux: the signal forwarding in run_server still stops the server.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still exists
        return True
    return True


def run_server(command: list[str], env: dict[str, str], grace: float = STOP_GRACE_SECONDS) -> int:
    """Run the server in a process group of its own and stop the whole group when this process is stopped.

    ``bentoml serve`` starts an arbiter and worker processes. Started as a plain child, a SIGTERM to ``salesml
    serve`` ended only this process, and the server, re-parented to init, kept the port. Here SIGTERM and SIGINT
    are forwarded to the group as SIGTERM; each worker finishes its in-flight requests and flushes the inference
    log (the service's shutdown hook). Processes still alive ``grace`` seconds later are killed, so the port is
    free when this returns.

    Returns:
        The server's exit code, or 0 when it stopped cleanly because this process was asked to stop.
    """
    import subprocess
    import time

    stopping: list[int] = []
    proc = subprocess.Popen(command, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # a second Ctrl-C while the handler was being replaced
            code = proc.wait()
        deadline = time.monotonic() + grace
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(proc.pid):
            stderr.print(f"[yellow]the server's processes did not stop within {grace:.0f} s; killing them[/]")
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping:
        stderr.print("server stopped")
        return 0 if code in (0, -signal.SIGTERM, 128 + signal.SIGTERM) else code
    return code


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on (BentoML's own error is a supervisor traceback).

    Raises:
        CommandError: naming the address and what to do.
    """
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CommandError(f"--host {host!r} does not resolve: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}; stop what uses it or pick another "
                               "--port") from None


@score_app.command("churn")
def score_churn(
    task: Annotated[str, typer.Option(help="The task whose champion scores (e.g. opportunity_loss).")],
    input_file: Annotated[Path, typer.Option("--input", help="CSV or Parquet file of feature records.")],
    output: Annotated[Path, typer.Option(help="Where to write the scores (.parquet or .csv).")],
    reasons: Annotated[int, typer.Option(help="Reason codes per record (0: none).")] = 3,
    chunk_rows: Annotated[int, typer.Option(help="Rows scored at once (bounds memory).")] = 100_000,
    as_json: JsonOpt = False,
) -> None:
    """Score a file with the task's champion, in chunks, with reasons and next-best actions."""
    from serving.batch import score_file

    settings = get_settings()
    with failures(as_json), progress_bar("scoring") as progress:
        result = score_file(settings, task, input_file, output, reasons, chunk_rows, progress)

    def render(r: dict) -> None:
        stdout.print(f"scored {r['rows']:,} of {r['rows_read']:,} rows with {r['model']} v{r['version']} into "
                     f"{r['output']}", highlight=False)
        if r["rejected"]:
            rows = "1 row was" if r["rejected"] == 1 else f"{r['rejected']:,} rows were"
            stderr.print(f"[yellow]{rows} not scored, as the service would refuse their values: see "
                         f"{r['rejected_file']} (each with its row number and problems)[/]", highlight=False)

    emit(result, as_json, render)


# ------------------------------------------------------------------------------------------------ demo


DEMO_TASK = "opportunity_loss"
DEMO_MODEL = f"risk.{DEMO_TASK}"


def _demo_principals(settings: Settings, store) -> dict:
    """Demo principals (a rep, their manager, an executive, a validator) with fresh tokens; the tokens are also
    written to SALESML_HOME/demo-tokens.json (mode 0600). Reruns replace them."""
    from salesml.access import issue_token

    deals = store.table("opportunities")
    live = deals.filter(deals.closed_at.isnull())
    open_deals = live.group_by("owner_rep_id").aggregate(n=live.count())
    rep = str(open_deals.order_by([open_deals.n.desc(), open_deals.owner_rep_id]).limit(1).execute()
              ["owner_rep_id"].iloc[0])
    reps = store.table("sales_reps")
    team = str(reps.filter(reps.rep_id == rep).select("team_id").execute()["team_id"].iloc[0])
    example = deals.filter(deals.closed_at.isnull(), deals.owner_rep_id == rep).order_by("opportunity_id")
    opportunity = str(example.limit(1).execute()["opportunity_id"].iloc[0])
    wanted = {"rep": ("demo-rep", "sales_rep", f"rep:{rep}"), "manager": ("demo-manager", "sales_manager",
              f"team:{team}"), "executive": ("demo-executive", "executive", "all"),
              "validator": ("demo-validator", "model_validator", "all")}
    tokens = {key: {"name": name, "role": role, "scope": scope,
                    "token": issue_token(settings.access_file, name, role, scope, replace=True)}
              for key, (name, role, scope) in wanted.items()}
    path = settings.home / "demo-tokens.json"
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        json.dump(tokens, handle, indent=2)
    return {"tokens": tokens, "file": str(path), "opportunity_id": opportunity}


def _curl_examples(port: int, people: dict) -> list[str]:
    base = f"http://127.0.0.1:{port}"
    body = json.dumps({"task": DEMO_TASK, "records": [{"opportunity_id": people["opportunity_id"]}]})
    tokens = people["tokens"]
    return [
        f"curl -s {base}/churn/score -H 'Authorization: Bearer {tokens[who]['token']}' "
        f"-H 'content-type: application/json' -d '{body}'    # as the {who}"
        for who in ("rep", "manager", "executive")
    ] + [f"curl -s {base}/models",
         f"# the dashboard, in a browser: {base}/dashboard?token={tokens['executive']['token']}"]


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(help="Number of simulated accounts.")] = 2000,
    months: Annotated[int, typer.Option(help="Months of simulated history.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    trials: Annotated[int, typer.Option(help="Optuna trials for the opportunity-loss model.")] = 10,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the champion at the end.")] = True,
    port: Annotated[int, typer.Option(help="Port to serve on.", min=1, max=65535)] = 3000,
    as_json: JsonOpt = False,
) -> None:
    """Run the main job end to end on the embedded defaults: simulate, ingest with quarantine, build the feature
    views, train the opportunity-loss model, audit it, approve it as a demo validator, promote it and serve it."""
    from experiments.risk_run import run_risk_training
    from features.ingest import discover_sources
    from features.ingest import ingest as run_ingest
    from features.pipeline import build_view, materialize, resolve_cutoffs, train_text_model
    from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation
    from monitoring import gate, review
    from salesml.access import load_principals
    from training.tasks import load_config

    settings = get_settings()
    out = settings.home / "demo_data"
    steps = 8
    with failures(as_json):
        if serve_after:  # before minutes of work, not after
            check_port_free("127.0.0.1", port)
        config = SimulationConfig(accounts=accounts, months=months, seed=seed)
        stderr.print(f"[bold]1/{steps}[/] simulating {accounts:,} accounts over {months} months into {out}")
        with stderr.status("simulating"):
            org = simulate_organisation(config)
            written = write_organisation(org, out)
        stderr.print(f"[bold]2/{steps}[/] ingesting into the feature store {settings.feature_store_path}")
        with open_store(settings) as store:
            with progress_bar("validating") as progress:
                report = run_ingest(discover_sources(out), store, chunk_rows=settings.ingest_chunk_rows,
                                    progress=progress)
            stderr.print(f"[bold]3/{steps}[/] training the text sentiment model and scoring tickets and news")
            sentiment = train_text_model(store)
            as_of = (config.end - pd_timedelta(days=1)).date()
            cutoffs = resolve_cutoffs(as_of, "monthly", config.start, as_of)
            built_views = {}
            for view in ("opportunity", "customer", "product_week"):
                stderr.print(f"[bold]4/{steps}[/] building the {view} view as of {as_of}")
                built = build_view(store, view, as_of, None if view == "product_week" else cutoffs,
                                   threads=settings.threads)
                built_views[view] = materialize(store, built, settings.home / "features" / f"{view}.parquet")
            people = _demo_principals(settings, store)
        stderr.print(f"[bold]5/{steps}[/] training {DEMO_MODEL} ({trials} Optuna trials)")
        default = Path(__file__).resolve().parents[1] / "experiments" / "configs" / f"{DEMO_TASK}.yaml"
        train_config = load_config(default, task=DEMO_TASK, trials=trials, threads=settings.threads)
        with progress_bar("trials") as progress:
            trained = run_risk_training(settings, DEMO_TASK, train_config, current_identity(settings),
                                         progress=lambda done, best: progress("trials", done, trials),
                                         status=lambda text: stderr.print(f"[dim]{text}[/]"))
        version = trained["version"]
        stderr.print(f"[bold]6/{steps}[/] auditing {DEMO_MODEL} version {version}")
        with stderr.status("auditing"):
            outcome = gate.audit_version(settings, DEMO_MODEL, version)
        validator = next(p for p in load_principals(settings.access_file) if p.name == "demo-validator")
        decision = None
        if outcome.gate == "REVIEW":
            stderr.print(f"[bold]7/{steps}[/] gate REVIEW: approving as the demo validator")
            decision = review.review(settings, DEMO_MODEL, version, "approve",
                                     "demo: approved by the demo validator after reading the audit report", validator)
        elif outcome.gate == "FAIL":
            failed = "; ".join(f"{c['name']}: {c['reason']}" for c in outcome.result["checks"] if c["status"] == "fail")
            raise CommandError(f"the audit failed, so the demo cannot promote version {version} ({failed}); "
                               f"report: {outcome.report}")
        else:
            stderr.print(f"[bold]7/{steps}[/] gate PASS: no approval needed")
        promoted = review.promote(settings, DEMO_MODEL, version, validator)
    result = {"simulated": written["tables"], "ingest": report.to_dict(), "sentiment": sentiment,
              "features": built_views, "home": str(settings.home), "trained": trained,
              "audit": {"gate": outcome.gate, "report": str(outcome.report)}, "review": decision,
              "promoted": promoted, "tokens_file": people["file"], "curl": _curl_examples(port, people)}

    def render(r: dict) -> None:
        render_ingest(r["ingest"])
        rich = new_table("view", "rows", "columns", "version", "file", right=("rows", "columns"), title="Feature views")
        for v in r["features"].values():
            rich.add_row(v["view"], f"{v['rows']:,}", str(len(v["columns"])), v["version"], v["out"])
        stdout.print(rich)
        m = r["trained"]["metrics"]
        stdout.print(f"{DEMO_MODEL} version {r['trained']['version']}: test ROC AUC {m['test_roc_auc']:.3f} "
                     f"(oracle {m.get('oracle_roc_auc') or float('nan'):.3f}); gate {r['audit']['gate']}; "
                     f"champion {r['promoted']['champion']}")
        stdout.print(f"audit report: {r['audit']['report']}")
        stdout.print(f"demo tokens (rep, manager, executive, validator): {r['tokens_file']}")
        stdout.print("try, once the service is up:")
        for line in r["curl"]:
            stdout.print(line, soft_wrap=True, highlight=False, markup=False)
        stdout.print(f"state lives in {r['home']} (set SALESML_HOME to move it)")

    emit(result, as_json, render)
    if serve_after:
        stderr.print(f"[bold]8/{steps}[/] serving the champion")
        serve(port=port, host="127.0.0.1", workers=None)


def pd_timedelta(**kwargs: int):
    """A pandas Timedelta (pandas is imported only when a command runs)."""
    import pandas as pd

    return pd.Timedelta(**kwargs)


if __name__ == "__main__":  # pragma: no cover
    app()

"""What every ``salesml`` command shares: the Typer apps, consoles, ``--json`` output, error handling, progress,
the feature store, and who is running the command."""

from __future__ import annotations

import json
import logging
import os
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
review_app = typer.Typer(help="Review audited candidates: list, show, approve or reject (model validators).",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")
policy_app = typer.Typer(help="The promotion policy: the checks, thresholds and severities each task is audited with.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")
access_app = typer.Typer(help="Manage principals and tokens in SALESML_HOME/access.yaml (installation admin).",
                         no_args_is_help=True)
app.add_typer(access_app, name="access")


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
                   ("monitoring.review", "GateError"), ("monitoring.loop", "LoopError"),
                   ("monitoring.monitor", "MonitorError"), ("monitoring.backtest", "BacktestError"),
                   ("salesml.access", "AccessError"))


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
        # Never folded: a path or an id cut across lines cannot be pasted back.
        stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
    table = new_table("table", "read", "stored", "of which repeats", "of which flagged", "quarantined", "rules",
                      right=("read", "stored", "of which repeats", "of which flagged", "quarantined"),
                      title=f"Ingestion report (load {result['load_id']}, as of {result['as_of']})")
    for name, t in result["tables"].items():
        rules = ", ".join(f"{k}: {v}" for k, v in t["by_rule"].items())
        warned = ", ".join(f"{k}: {v} (warning)" for k, v in t.get("by_warning", {}).items())
        conditions = ", ".join(f"{k}: {v} (stored)" for k, v in t.get("conditions", {}).items() if v)
        table.add_row(name, f"{t['read']:,}", f"{t['stored']:,}", f"{t.get('duplicates', 0):,}",
                      f"{t.get('flagged', 0):,}", f"{t['quarantined']:,}",
                      "; ".join(x for x in (rules, warned, conditions) if x))
    stdout.print(table)
    if "source" in result:
        stdout.print(f"source: {result['source']}")
    if any(t.get("flagged") for t in result["tables"].values()):
        stdout.print("flagged rows: `salesml data flags`; quarantined rows: `salesml data quarantine`")


def current_identity(settings: Settings) -> str:
    """Who runs the command: the principal of SALESML_TOKEN, or ``local:<os user>`` without a token."""
    from salesml.access import authenticate, local_identity

    if settings.token is None:
        return local_identity()
    return authenticate(settings.access_file, settings.token.get_secret_value()).name


def current_principal(settings: Settings):
    """The principal of SALESML_TOKEN (required for reviews, promotions and rollbacks)."""
    from salesml.access import AccessError, authenticate

    if settings.token is None:
        raise AccessError("this command needs your identity: set SALESML_TOKEN to a token from `salesml access add`")
    return authenticate(settings.access_file, settings.token.get_secret_value())


def parse_date(text: str | None, option: str = "--as-of") -> date | None:
    """A YYYY-MM-DD option value as a date (``None`` stays ``None``).

    Raises:
        CommandError: naming the option and the value.
    """
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{option} must be a date YYYY-MM-DD, not {text!r}") from None


#: The old spelling of ``salesml train TASK`` and ``salesml score TASK``: ``... churn --task TASK``.
LEGACY_TRAIN = "churn"


def resolve_legacy_task(task: str | None, legacy: str | None, command: str) -> str:
    """The task a command names: ``TASK``, or ``--task`` after the old ``churn`` (``salesml train churn --task X``,
    ``salesml score churn --task X``).

    Raises:
        CommandError: when no task is named, or two different ones.
    """
    if task == LEGACY_TRAIN and legacy:
        return legacy
    from training.registry import KIND_NAMES

    if task in KIND_NAMES and legacy:  # `salesml score demand --task T`: the kind, then the task
        return legacy
    if task and legacy and task != legacy:
        raise CommandError(f"name the task once: `salesml {command} {legacy}` (TASK and --task differ)")
    chosen = task or legacy
    if not chosen or chosen == LEGACY_TRAIN:
        raise CommandError(f"name a task: `salesml {command} TASK` (see `salesml tasks`); "
                           f"`salesml {command} churn --task TASK` is the old spelling")
    return chosen

"""Training commands: ``salesml train TASK`` for any task of the registry (``train churn --task`` is the old
spelling), and ``salesml tasks``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from salesml.cli.common import (
    CommandError,
    JsonOpt,
    app,
    current_identity,
    emit,
    failures,
    new_table,
    open_store,
    resolve_legacy_task,
    stderr,
    stdout,
)
from salesml.settings import get_settings

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


@app.command()
def train(
    task: Annotated[str | None, typer.Argument(
        help="The task: risk (opportunity_loss, customer_churn, or an imported task table such as telco_churn), "
             "demand (product_demand, sales_periods), customer_value or customer_segments; `salesml tasks` lists "
             "them with their kinds.", show_default=False)] = None,
    legacy_task: Annotated[str | None, typer.Option(
        "--task", help="The task, in the old spelling `salesml train churn --task TASK` (still accepted).")] = None,
    trials: Annotated[int | None, typer.Option(help="Finished trials the study should reach (resumes a study).")
                      ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds of tuning in this run at most.")] = None,
    config: Annotated[Path | None, typer.Option(help="Training config YAML (default: "
                                                     "experiments/configs/<task>.yaml when it exists).")] = None,
    baseline: Annotated[bool, typer.Option(help="Train the task's baseline instead (opportunity_loss: the "
                                                "stage-based win rates).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Tune (Optuna), train and evaluate a model of TASK's kind; track it in MLflow and register a version of
    <kind>.<task>."""
    from training.clv import FitError
    from training.demand import InsufficientHistoryError
    from training.registry import get_task, resolve
    from training.risk import InsufficientDataError
    from training.tasks import load_config
    from training.value import InsufficientValueDataError

    settings = get_settings()
    with failures(as_json):
        task = resolve_legacy_task(task, legacy_task, "train")
        if settings.feature_store_path.exists():
            with open_store(settings, read_only=True) as store:
                definition = get_task(task, store)
        else:
            definition = get_task(task)
        if baseline and not definition.baseline:
            raise CommandError(f"task {task} has no baseline to train (only tuned models)")
        kind = definition.definition()
        run = resolve(kind.tracked_run)
        default = CONFIGS / f"{task}.yaml"
        cfg = load_config(config or (default if default.is_file() else None), resolve(kind.config), task=task,
                          trials=trials, timeout=timeout, threads=settings.threads)
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
                result = run(settings, task, cfg, trainer, baseline, progress, status)
            except (InsufficientDataError, InsufficientHistoryError, InsufficientValueDataError, FitError) as exc:
                raise CommandError(str(exc)) from None

    def render(r: dict) -> None:
        m = r["metrics"]
        stdout.print(f"registered [bold]{r['model']}[/] version {r['version']} (run {r['run_id']})")
        rich = new_table("metric", "value", right=("value",), title="Test metrics")
        for key, value in m.items():
            if key.startswith(("test_", "oracle", "early_warning", "lead_time", "baseline_", "best_baseline",
                               "wape_vs", "elasticity_", "holdout_", "purchases_")) or key.endswith("_spearman"):
                rich.add_row(key, "-" if value is None else f"{value:.4f}")
        stdout.print(rich)
        for group in r.get("unavailable_feature_groups", []):
            stdout.print(f"unavailable feature group [bold]{group['group']}[/]: {group['reason']}", highlight=False)

    emit(result, as_json, render)


@app.command()
def tasks(as_json: JsonOpt = False) -> None:
    """List the tasks salesml can train: the declared ones and the task tables imported into the store, with
    their kind, registered model name and data."""
    from training.registry import TaskCatalogue

    settings = get_settings()
    with failures(as_json):
        if settings.feature_store_path.exists():
            with open_store(settings, read_only=True) as store:
                catalogue = TaskCatalogue.of(store)
        else:
            catalogue = TaskCatalogue.of(None)
    result = {"tasks": catalogue.to_dicts()}

    def render(r: dict) -> None:
        rich = new_table("task", "kind", "model", "data", "entity", "what it predicts", title="Tasks")
        for t in r["tasks"]:
            rich.add_row(t["task"], t["kind"], t["model"], t["source"], t["entity"], t["description"])
        stdout.print(rich)

    emit(result, as_json, render)

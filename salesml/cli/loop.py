"""The monthly loop's commands: ``salesml retrain`` (and, with monitoring, ``monitor`` and ``schedule``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from salesml.cli.common import (
    CommandError,
    JsonOpt,
    app,
    current_identity,
    emit,
    failures,
    new_table,
    parse_date,
    progress_bar,
    stderr,
    stdout,
)
from salesml.settings import get_settings


@app.command()
def retrain(
    as_of: Annotated[str | None, typer.Option("--as-of", help="The data's as-of date, YYYY-MM-DD (default: "
                                                             "today); its month is the run's key.")] = None,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated tasks (default: every task with a champion).")
                     ] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Optuna trials per task (default: the task's config).")
                      ] = None,
    inbox: Annotated[Path | None, typer.Option(help="Folder of batches to ingest first: sub-folders of canonical "
                                                    "tables (default: SALESML_HOME/inbox).")] = None,
    policy: Annotated[Path | None, typer.Option(help="Promotion policy YAML (default: monitoring/policy.yaml).")
                      ] = None,
    configs: Annotated[Path | None, typer.Option(help="Folder of training configs <task>.yaml (default: "
                                                      "experiments/configs).")] = None,
    reason: Annotated[str, typer.Option(help="Why this run, tagged on each run and version.")] = "scheduled",
    as_json: JsonOpt = False,
) -> None:
    """Retrain every task for the month of --as-of: ingest the inbox, warm-start each study from the champion,
    train, audit, gate, and promote where the policy says auto_promote (else leave the candidate for a
    validator). Running it again for the same month does nothing new; a run killed part-way resumes."""
    from monitoring.loop import retrain as run_retrain

    settings = get_settings()
    with failures(as_json):
        day = parse_date(as_of) or datetime.now(UTC).date()
        names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        if tasks is not None and not names:
            raise CommandError("--tasks names no task")

        def say(text: str) -> None:
            stderr.print(f"[dim]{text}[/]", highlight=False)

        with progress_bar("retrain") as tick:
            report = run_retrain(settings, day, names, reason=reason, trainer=current_identity(settings),
                                 inbox=inbox, policy_path=policy, trials=trials, configs=configs, say=say,
                                 progress=tick)
    result = report.to_dict()

    def render(r: dict) -> None:
        rich = new_table("task", "candidate", "champion before", "figures", "gate", "outcome",
                         title=f"Retraining for {r['month']} (as of {r['as_of']}, {r['reason']})")
        for t in r["tasks"]:
            versus = t.get("versus_champion") or {}
            figure = "-"
            if versus.get("candidate") is not None:
                champion = versus.get("champion")
                figure = f"{versus.get('metric') or versus['check']} {versus['candidate']:.4f}" + (
                    f" vs {champion:.4f}" if isinstance(champion, (int, float)) else "")
            rich.add_row(t["task"], str(t.get("version") or "-"), str(t.get("champion_before") or "-"), figure,
                         str(t.get("gate") or "-"), t["status"])
        stdout.print(rich)
        for t in r["tasks"]:
            stdout.print(f"{t['task']}: {t['message']}", highlight=False)
        if r.get("summary"):
            stdout.print(f"summary: {r['summary']}", highlight=False)

    emit(result, as_json, render)
    if any(t["status"] == "failed" for t in result["tasks"]):
        raise typer.Exit(1)

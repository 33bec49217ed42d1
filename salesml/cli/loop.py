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


def task_names(tasks: str | None) -> list[str] | None:
    """The tasks of a comma-separated ``--tasks`` (``None``: every task with a champion).

    Raises:
        CommandError: when the option names no task.
    """
    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    if tasks is not None and not names:
        raise CommandError("--tasks names no task")
    return names


def say(text: str) -> None:
    """A step of a long command, dimmed, on stderr."""
    stderr.print(f"[dim]{text}[/]", highlight=False)


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
        names = task_names(tasks)

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


@app.command()
def monitor(
    as_of: Annotated[str | None, typer.Option("--as-of", help="The monitoring day, YYYY-MM-DD (default: today); "
                                                             "outcomes after it are not used.")] = None,
    window: Annotated[str | None, typer.Option(help="Drift window: days of logged scores such as 30d or 4w "
                                                    "(default: the policy's, 30d).")] = None,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated tasks (default: every task with a champion).")
                     ] = None,
    months: Annotated[int, typer.Option(min=1, help="Months of the inference log to judge, back from --as-of.")
                      ] = 12,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML with the monitoring thresholds (default: "
                                                     "monitoring/policy.yaml).")] = None,
    retrain_on_alert: Annotated[bool | None, typer.Option("--retrain-on-alert/--no-retrain",
                                                          help="Retrain alerted tasks at once (default: the "
                                                               "policy's retrain_on_alert).")] = None,
    configs: Annotated[Path | None, typer.Option(help="Training configs <task>.yaml an alert's retraining uses "
                                                      "(default: experiments/configs).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Join each champion's inference log to the outcomes that have landed (deals lost or won, orders, units
    sold, spend), compute its live figures month by month and its drift against the training reference, and
    raise the alerts the policy's thresholds call for (JSON, HTML report, audit log, the service's /metrics).
    Exits 3 when an alert fired."""
    from monitoring.monitor import monitor as run_monitor
    from monitoring.monitor import parse_window

    settings = get_settings()
    with failures(as_json):
        day = parse_date(as_of) or datetime.now(UTC).date()
        names = task_names(tasks)
        days = parse_window(window) if window is not None else None

        report = run_monitor(settings, day, names, window_days=days, months=months, policy_path=policy,
                             retrain_on_alert=retrain_on_alert, trainer=current_identity(settings),
                             configs=configs, say=say)
    result = report.to_dict()

    def render(r: dict) -> None:
        rich = new_table("task", "champion", "metric", "training", "live (newest month)", "labelled", "drifted",
                         "alerts", title=f"Monitoring as of {r['as_of']} (drift window {r['window_days']} days)")
        for t in r["tasks"]:
            judged = [m for m in t["months"] if m.get("labelled")]
            latest = judged[-1] if judged else {}
            live, base = latest.get(t["metric"]), t["training"].get(t["metric"])
            rich.add_row(t["task"], str(t["champion"] or "-"), t["metric"],
                         f"{base:.4f}" if isinstance(base, float) else "-",
                         f"{live:.4f} ({latest['month']})" if isinstance(live, float) else "-",
                         str(latest.get("labelled", 0)),
                         f"{t['drift']['drifted_share']:.0%}" if t.get("drift") else "-",
                         ", ".join(a["alert"] for a in t["alerts"]) or "none")
        stdout.print(rich)
        for t in r["tasks"]:
            for a in t["alerts"]:
                stdout.print(f"[bold red]ALERT[/] {t['task']}: {a['message']}", highlight=False)
            for note in t["notes"]:
                stdout.print(f"{t['task']}: {note}", highlight=False)
        for run in r["retrains"]:
            stdout.print(f"retrained {run['task']}: {run.get('status')} {run.get('message') or ''}",
                         highlight=False)
        stdout.print(f"report: {r['report']}", highlight=False)

    emit(result, as_json, render)
    if result["alerts"]:
        raise typer.Exit(3)


@app.command()
def schedule(
    retrain_cron: Annotated[str, typer.Option(help="When retraining runs, as a crontab line (minute hour day month "
                                                   "weekday); it retrains on the data as of the month just closed."
                                              )] = "0 2 1 * *",
    monitor_cron: Annotated[str, typer.Option(help="When monitoring runs, as a crontab line.")] = "0 6 * * *",
    timezone: Annotated[str, typer.Option(help="Time zone of both schedules.")] = "UTC",
    show: Annotated[bool, typer.Option("--list", help="Show the jobs and their next run times, then exit.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run monthly retraining and daily monitoring in this process (APScheduler, jobs kept in
    SALESML_HOME/loop/schedule.sqlite: a restart neither loses nor repeats a run). Stop with Ctrl-C or SIGTERM."""
    import signal
    import threading

    from monitoring.schedule import ScheduleConfig, ScheduleError, build_scheduler, run_schedule

    settings = get_settings()
    config = ScheduleConfig(retrain_cron, monitor_cron, timezone)
    with failures(as_json):
        try:
            if show:
                jobs = build_scheduler(settings, config).next_runs
            else:
                config.triggers()
        except ScheduleError as exc:
            raise CommandError(str(exc)) from None
    if show:
        emit({"jobs": jobs, "store": str(settings.home / "loop" / "schedule.sqlite")}, as_json,
             lambda r: [stdout.print(f"{job}: next run {when}", highlight=False) for job, when in r["jobs"].items()])
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    say(f"scheduling retraining ({retrain_cron}) and monitoring ({monitor_cron}) in {timezone}; Ctrl-C stops")
    run_schedule(settings, config, stop, say)
    say("scheduler stopped")


@app.command()
def backtest(
    start: Annotated[str, typer.Option("--from", help="The first backtested month, YYYY-MM.")],
    months: Annotated[int, typer.Option(min=1, max=36, help="Months to backtest.")] = 12,
    scenario: Annotated[list[str] | None, typer.Option(help="A simulator scenario, e.g. "
                                                            "competitor_entry@2025-07:EMEA, price_shock@2025-07, "
                                                            "biased_history@2025-04 (repeatable).")] = None,
    accounts: Annotated[int, typer.Option(min=50, help="Simulated accounts.")] = 700,
    history: Annotated[int, typer.Option(min=4, help="Months of history before --from that the first (static) "
                                                     "champion trains on.")] = 12,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 7,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated tasks (default: every task the simulator feeds: "
                                                   "opportunity_loss, customer_churn, product_demand, "
                                                   "customer_value, customer_segments).")] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Optuna trials per retraining (default: the configs').")
                      ] = None,
    configs: Annotated[Path | None, typer.Option(help="Folder of training configs <task>.yaml (default: "
                                                      "experiments/configs).")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: monitoring/policy.yaml).")] = None,
    out: Annotated[Path | None, typer.Option(help="A new folder for the backtest's store, registry, logs and "
                                                  "report (default: SALESML_HOME/backtests/<from>-<months>m-<time>)."
                                             )] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay the monthly loop on a simulated organisation: each month's data delivered at its end, then
    monitoring, retraining, the gate and a scripted validator; the loop, a static champion and no model side by
    side against the simulator's ground truth, with the ROI, in a self-contained HTML report."""
    from monitoring.backtest import BACKTEST_TASKS, HEADLINE_METRICS, BacktestConfig, run_backtest

    settings = get_settings()
    with failures(as_json):
        config = BacktestConfig(start=start, months=months, history_months=history, accounts=accounts, seed=seed,
                                scenarios=list(scenario or []), tasks=task_names(tasks) or list(BACKTEST_TASKS),
                                trials=trials)
        folder = out or settings.home / "backtests" / (f"{config.start:%Y-%m}-{months}m-"
                                                      f"{datetime.now(UTC):%Y%m%dT%H%M%S}")
        home = get_settings(home=folder.resolve())
        say(f"backtest home: {home.home}")
        report = run_backtest(home, config, configs=configs, policy_path=policy, say=say)
    result = report.to_dict()

    def render(r: dict) -> None:
        for task, rows in r["arms"].items():
            metric = HEADLINE_METRICS[r["kinds"].get(task, "risk")][0]
            rich = new_table("month", *(a for a in ("loop", "static", "baseline")), title=f"{task}: {metric}")
            by = {(x["month"], x["arm"]): x.get(metric) for x in rows if x.get("region") is None}
            for m in [m for m in r["months"] if m["backtested"]]:
                rich.add_row(m["month"], *(f"{by.get((m['month'], a)):.4f}" if isinstance(by.get((m["month"], a)),
                                                                                         float) else "-"
                                           for a in ("loop", "static", "baseline")))
            stdout.print(rich)
        for task, by_arm in r["roi"].items():
            for arm, figures in by_arm.items():
                shown = {k: v for k, v in figures.items() if k != "how"}
                stdout.print(f"{task} {arm}: " + ", ".join(f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}"
                                                           for k, v in shown.items()), highlight=False)
        stdout.print(f"report: {r['report']} ({r['timings']['total_seconds']:.0f} s)", highlight=False)

    emit(result, as_json, render)

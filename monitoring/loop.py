"""The monthly loop's retraining: ingest what has arrived, retrain every task as of a date, audit, gate, promote.

``retrain`` is the pipeline behind ``salesml retrain --as-of DATE``. For each task it warm-starts the month's
Optuna study from the champion's best parameters (the champion's run logged them as ``study/best_trial.json``),
trains as of DATE with the month and the reason tagged on the run and the version, audits the candidate, and then
promotes it where the policy says ``auto_promote`` and the gate is PASS, or leaves it for a validator (REVIEW) or
blocked (FAIL). The champion moves only at promotion.

It is idempotent per (task, month): the month's outcome is written to ``SALESML_HOME/loop/retrain/<YYYY-MM>.json``
once a task is done, and a second run for that month reports the recorded outcome and does nothing. It is
crash-safe because the registry, not the process, holds the state: a version is registered with its month tag
and marked ``salesml.registered`` last, so a rerun after a kill deletes a version cut short during registration,
resumes a registered one at the audit or the promotion instead of training again, and marks the killed run's
MLflow run as killed. Only one retrain runs at a time (a lock file under ``SALESML_HOME/loop``).
"""

from __future__ import annotations

import fcntl
import hashlib
import html
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from experiments.registry import (
    CHAMPION,
    TAG_GATE,
    TAG_KIND,
    TAG_REGISTERED,
    TAG_RETRAIN_MONTH,
    TAG_RETRAIN_REASON,
)
from salesml.access import Principal
from salesml.settings import Settings

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
#: Who promotes a version the policy lets through without review (as ``gate.audit_version`` does).
AUTO_PROMOTER = Principal("policy:auto_promote", "model_validator", "all", "")
#: What a task's retraining ended in.
STATUSES = ("promoted", "awaiting_review", "blocked", "already_done", "failed")


class LoopError(RuntimeError):
    """The loop cannot run as asked (the message says why and what to do)."""


@dataclass
class RetrainReport:
    """What one ``retrain`` did: the month, what it ingested, and per task the outcome."""

    month: str
    as_of: str
    reason: str
    ingested: list[dict] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    summary: str | None = None

    def to_dict(self) -> dict:
        """The JSON form."""
        return {"month": self.month, "as_of": self.as_of, "reason": self.reason, "ingested": self.ingested,
                "tasks": self.tasks, "summary": self.summary}


def month_of(day: date) -> str:
    """The loop's month key of a date (``YYYY-MM``)."""
    return f"{day:%Y-%m}"


def loop_folder(settings: Settings) -> Path:
    """Where the loop keeps its ledgers and lock (``SALESML_HOME/loop``)."""
    return settings.home / "loop"


def ledger_path(settings: Settings, month: str) -> Path:
    """The month's ledger: each finished task's outcome."""
    return loop_folder(settings) / "retrain" / f"{month}.json"


def read_ledger(settings: Settings, month: str) -> dict[str, dict]:
    """The outcomes recorded for a month, by task (empty when the month has not run)."""
    path = ledger_path(settings, month)
    return json.loads(path.read_text()) if path.is_file() else {}


def write_json_atomically(path: Path, data: object) -> None:
    """Write JSON so that a reader (or a crash) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(scratch, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, path)


@contextmanager
def loop_lock(settings: Settings) -> Iterator[None]:
    """Hold the loop's lock for the duration (one retrain or monitoring run at a time).

    Raises:
        LoopError: when another process holds it.
    """
    folder = loop_folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "loop.lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LoopError(f"the monthly loop is already running ({holder}); wait for it to finish") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------ ingestion


def _batch_digest(folder: Path) -> str:
    """A batch's identity: its files' names, sizes and modification times."""
    parts = sorted(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in folder.iterdir() if p.is_file())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def inbox_batches(inbox: Path) -> list[Path]:
    """The batches of an inbox, oldest name first: each sub-folder holding table files, or the inbox itself when
    it holds them directly."""
    from features.ingest import discover_sources

    if not inbox.is_dir():
        return []
    folders = sorted(p for p in inbox.iterdir() if p.is_dir() and not p.name.startswith("."))
    batches = [p for p in folders if discover_sources(p)]
    if not batches and discover_sources(inbox):
        batches = [inbox]
    return batches


def ingest_inbox(settings: Settings, inbox: Path, as_of: date, say: Callable[[str], None],
                 progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
    """Ingest the inbox's batches not ingested before (the record is ``SALESML_HOME/loop/ingested.json``, by
    folder and content), with the load's as-of date ``as_of``; rows dated later are quarantined by the rules.

    Raises:
        LoopError: when a batch cannot be read (nothing of it is stored, and the retraining does not start).
    """
    from features.ingest import IngestionError, discover_sources, ingest
    from features.store import FeatureStore

    record_path = loop_folder(settings) / "ingested.json"
    done = json.loads(record_path.read_text()) if record_path.is_file() else {}
    out = []
    for batch in inbox_batches(inbox):
        key, digest = str(batch.resolve()), _batch_digest(batch)
        if done.get(key, {}).get("digest") == digest:
            continue
        say(f"ingesting {batch}")
        try:
            with FeatureStore.from_settings(settings) as store:
                report = ingest(discover_sources(batch), store, as_of=as_of, chunk_rows=settings.ingest_chunk_rows,
                                progress=progress)
        except IngestionError as exc:
            raise LoopError(f"the batch {batch} cannot be ingested, so nothing was retrained: {exc}") from None
        summary = report.to_dict()
        done[key] = {"digest": digest, "load_id": summary.get("load_id"), "as_of": f"{as_of:%Y-%m-%d}"}
        write_json_atomically(record_path, done)
        out.append({"batch": key, **summary})
    if out:
        from features.pipeline import rescore_texts

        with FeatureStore.from_settings(settings) as store:
            if rescore_texts(store) is not None:
                say("scored the new tickets and news with the stored sentiment model")
    return out


# ------------------------------------------------------------------------------------------------ registry state


def month_versions(client, name: str, month: str) -> list:
    """The versions of ``name`` the loop registered for ``month`` (threshold variants included), oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name='{name}' and tag.`{TAG_RETRAIN_MONTH}` = '{month}'")
    except MlflowException:
        return []
    return sorted(found, key=lambda v: int(v.version))


def clear_interrupted(client, name: str, month: str) -> list[str]:
    """Delete the month's versions whose registration was cut short, and mark the month's runs a killed process
    left running as KILLED.

    Returns:
        What was cleared, as sentences for the report.
    """
    notes = []
    for v in month_versions(client, name, month):
        if v.tags.get(TAG_REGISTERED) != "complete":
            client.delete_model_version(name, v.version)
            notes.append(f"deleted version {v.version}: its registration was cut short")
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        for run in client.search_runs([experiment.experiment_id],
                                      f"tags.`{TAG_RETRAIN_MONTH}` = '{month}' and attributes.status = 'RUNNING'"):
            client.set_terminated(run.info.run_id, "KILLED")
            notes.append(f"marked run {run.info.run_id} killed: its process stopped before registering")
    return notes


def champion_warm_start(client, name: str) -> tuple[str | None, list[dict]]:
    """The champion's version and the parameter sets to enqueue first: its run's best trial."""
    from experiments.registered import get_alias
    from experiments.tracking import read_best_trial

    champion = get_alias(client, name, CHAMPION)
    if champion is None:
        return None, []
    best = read_best_trial(client, champion.run_id)
    return str(champion.version), ([best["params"]] if best and best.get("params") else [])


def _after_registration() -> None:
    """A seam between registration and the audit (tests kill the process here)."""


# ------------------------------------------------------------------------------------------------ the loop


def retrain(settings: Settings, as_of: date, tasks: Sequence[str] | None = None, *, reason: str = "scheduled",
            trainer: str = "salesml-loop", inbox: Path | None = None, policy_path: Path | None = None,
            trials: int | None = None, configs: Path | None = None, say: Callable[[str], None] = lambda text: None,
            progress: Callable[[str, int, int], None] | None = None) -> RetrainReport:
    """Run the month of ``as_of`` for ``tasks``: ingest the inbox, then train, audit, gate and promote each task.

    Args:
        settings: where everything lives.
        as_of: the data's as-of date; its month is the loop's key.
        tasks: the tasks (default: every task that has a champion).
        reason: why this run (``scheduled``, or the monitoring alert that triggered it early); tagged on each run
            and version.
        trainer: who trains (a validator cannot approve their own version).
        inbox: folder of batches to ingest first (default ``SALESML_HOME/inbox``).
        policy_path: the promotion policy (default ``monitoring/policy.yaml``).
        trials: Optuna trials per task (default: the task's config).
        configs: folder of training configs, ``<task>.yaml`` (default ``experiments/configs``; a task without one
            trains on its kind's defaults).
        say: called with a short description of each step.
        progress: called with (what, done, total) during long steps.

    Raises:
        LoopError: when no task is given or has a champion, a task is unknown, another retrain is running, or the
            inbox cannot be ingested.
    """
    month = month_of(as_of)
    with loop_lock(settings):
        report = RetrainReport(month=month, as_of=f"{as_of:%Y-%m-%d}", reason=reason)
        report.ingested = ingest_inbox(settings, Path(inbox or settings.home / "inbox"), as_of, say, progress)
        definitions = task_definitions(settings, tasks, LoopError, "no task has a champion to retrain: name the "
                                       "tasks (--tasks opportunity_loss,...)")
        names = list(definitions)
        ledger = read_ledger(settings, month)
        for task in names:
            if task in ledger:
                done = ledger[task]
                say(f"{task}: already retrained for {month} (version {done.get('version')}, {done.get('status')})")
                report.tasks.append({**done, "status": "already_done", "recorded_status": done.get("status"),
                                     "message": f"nothing new: {task} was retrained for {month} already "
                                                f"(version {done.get('version')}, {done.get('status')})"})
                continue
            try:
                outcome = retrain_task(settings, definitions[task], month, as_of, reason, trainer, policy_path,
                                       trials, Path(configs or CONFIGS), say, progress)
            except training_errors() as exc:
                # Not recorded: the month stays open for the task, and the next run tries again.
                say(f"{task}: failed: {exc}")
                report.tasks.append({"task": task, "model": definitions[task].model_name, "month": month,
                                     "status": "failed", "gate": None, "message": str(exc)})
                continue
            ledger[task] = outcome
            write_json_atomically(ledger_path(settings, month), ledger)
            report.tasks.append(outcome)
        if all(t["status"] == "already_done" for t in report.tasks) and not report.ingested:
            earlier = settings.home / "reports" / "retrain" / f"{month}.html"
            report.summary = str(earlier) if earlier.is_file() else None
        else:
            report.summary = str(write_summary(settings, report))
    return report


def training_errors() -> tuple[type[Exception], ...]:
    """The errors a task's training raises for data it does not have (a failed task, not a crash)."""
    from training.clv import FitError
    from training.demand import InsufficientHistoryError
    from training.risk import InsufficientDataError
    from training.value import InsufficientValueDataError

    return InsufficientDataError, InsufficientHistoryError, InsufficientValueDataError, FitError


def task_definitions(settings: Settings, tasks: Sequence[str] | None, error: type[Exception], none_message: str
                     ) -> dict:
    """The registry's definitions of ``tasks`` (default: every task with a champion), in order.

    Raises:
        error: with ``none_message`` when no task is given and none has a champion, or naming an unknown task.
    """
    from training.registry import UnknownTaskError, get_task

    names = list(tasks or _champion_tasks(settings))
    if not names:
        raise error(none_message)
    try:
        return {task: get_task(task) for task in names}
    except UnknownTaskError as exc:
        raise error(str(exc)) from None


def _champion_tasks(settings: Settings) -> list[str]:
    """The registry's tasks whose model has a champion, in the registry's order."""
    from experiments.registered import get_alias
    from experiments.tracking import configure_mlflow
    from training.registry import TASKS

    client = configure_mlflow(settings)
    out = []
    for task, definition in TASKS.items():
        if client.search_registered_models(f"name='{definition.model_name}'") and \
                get_alias(client, definition.model_name, CHAMPION) is not None:
            out.append(task)
    return out


def retrain_task(settings: Settings, definition, month: str, as_of: date, reason: str, trainer: str,
                 policy_path: Path | None, trials: int | None, configs: Path, say: Callable[[str], None],
                 progress: Callable[[str, int, int], None] | None) -> dict:
    """One task's month: clear what a killed run left, train (unless a version for the month is registered),
    audit (unless audited), and promote where the policy allows it. Returns the task's outcome."""
    from experiments.registered import get_alias
    from experiments.tracking import configure_mlflow
    from monitoring import gate, review
    from monitoring.policy import load_policy
    from training.registry import resolve

    task, name, kind = definition.name, definition.model_name, definition.definition()
    client = configure_mlflow(settings)
    champion_before, warm = champion_warm_start(client, name) if _registered(client, name) else (None, [])
    notes = clear_interrupted(client, name, month) if _registered(client, name) else []
    for note in notes:
        say(f"{task}: {note}")
    policy = load_policy(task, policy_path, kind.name)
    registered = [v for v in month_versions(client, name, month) if v.tags.get(TAG_KIND) != "threshold_variant"]
    trained = None
    if registered:
        version = str(registered[-1].version)
        say(f"{task}: version {version} was registered for {month} before; resuming at its audit")
    else:
        config = task_config(definition, configs, trials=trials, threads=settings.threads)
        config = config.model_copy(update={
            "as_of": as_of, "initial_trials": warm + list(config.initial_trials),
            "run_tags": {**config.run_tags, TAG_RETRAIN_MONTH: month, TAG_RETRAIN_REASON: reason}})
        say(f"{task}: training as of {as_of:%Y-%m-%d} ({config.trials} trials"
            + (f", warm-started from champion version {champion_before})" if warm else ")"))
        tick = progress or (lambda what, done, total: None)
        trained = resolve(kind.tracked_run)(settings, task, config, trainer,
                                            progress=lambda done, best: tick(f"{task} trials", done, config.trials),
                                            status=lambda text: say(f"{task}: {text}"))
        version = str(trained["version"])
    _after_registration()
    info = client.get_model_version(name, version)
    if info.tags.get(TAG_GATE, "pending") == "pending":
        say(f"{task}: auditing version {version}")
        audit = gate.audit_version(settings, name, version, policy_path).result
    else:
        audit = review.show_audit(settings, name, version)
    verdict = audit["gate"]
    if verdict == "PASS" and policy.auto_promote:
        review.promote(settings, name, version, AUTO_PROMOTER)
    after = get_alias(client, name, CHAMPION)
    champion_after = str(after.version) if after is not None else None
    if champion_after == version:
        status, message = "promoted", f"version {version} is the champion (gate {verdict})"
    elif verdict == "FAIL":
        failed = "; ".join(c["name"] for c in audit["checks"] if c["status"] == "fail")
        stays = f"champion version {champion_after} stays" if champion_after else "there is still no champion"
        status, message = "blocked", f"the gate blocked version {version} ({failed}); {stays}"
    else:
        why = "the gate asks for review" if verdict == "REVIEW" else "the policy does not promote automatically"
        status, message = "awaiting_review", (f"{why}: a validator decides with `salesml review approve {name} "
                                              f"{version} --reason ...` then `salesml promote {name} {version}`")
    say(f"{task}: {message}")
    run_id = info.run_id
    return {"task": task, "model": name, "month": month, "as_of": f"{as_of:%Y-%m-%d}", "reason": reason,
            "version": version, "run_id": run_id, "gate": verdict, "status": status, "message": message,
            "champion_before": champion_before, "champion_after": champion_after,
            "warm_start": warm, "resumed": trained is None, "cleared": notes,
            "checks": [{"name": c["name"], "status": c["status"], "reason": c["reason"]} for c in audit["checks"]],
            "versus_champion": _versus_champion(audit), "report": audit.get("report"),
            "metrics": (trained or {}).get("metrics") or _run_metrics(client, run_id)}


def task_config(definition, configs: Path, **overrides: object):
    """A task's training config: ``<configs>/<task>.yaml`` when it exists, else its kind's defaults, with
    ``overrides`` (``None`` values ignored)."""
    from training.registry import resolve
    from training.tasks import load_config

    file = configs / f"{definition.name}.yaml"
    return load_config(file if file.is_file() else None, resolve(definition.definition().config),
                       task=definition.name, **overrides)


def _registered(client, name: str) -> bool:
    return bool(client.search_registered_models(f"name='{name}'"))


def _versus_champion(audit: dict) -> dict | None:
    """The candidate's figure against the champion's on the same rows, from the performance (or, for segments,
    the stability) check."""
    for check in ("performance", "stability"):
        found = next((c for c in audit["checks"] if c["name"] == check), None)
        if found is not None:
            return {"check": check, **found["figures"]}
    return None


def _run_metrics(client, run_id: str) -> dict:
    return dict(client.get_run(run_id).data.metrics)


# ------------------------------------------------------------------------------------------------ the summary


def write_summary(settings: Settings, report: RetrainReport) -> Path:
    """Write the month's summary as JSON and a self-contained HTML page under ``SALESML_HOME/reports/retrain``.

    Returns:
        The HTML file.
    """
    from monitoring.report import render_page

    folder = settings.home / "reports" / "retrain"
    path = folder / f"{report.month}.html"
    rows = []
    for t in report.tasks:
        versus = t.get("versus_champion") or {}
        figure = "-"
        if versus.get("candidate") is not None:
            metric = versus.get("metric") or versus.get("check")
            champion = versus.get("champion")
            figure = (f"{metric} {versus['candidate']:.4f}"
                      + (f" vs champion {champion:.4f}" if isinstance(champion, (int, float)) else " (no champion)"))
        status = t["status"] if t["status"] != "already_done" else f"already done ({t.get('recorded_status')})"
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in (
            t["task"], t.get("version", "-"), t.get("champion_before") or "-", figure)) +
            f'<td><span class="badge {html.escape(str(t.get("gate")))}">{html.escape(str(t.get("gate")))}</span></td>'
            f"<td>{html.escape(status)}</td><td style=\"text-align:left\">{html.escape(t.get('message', ''))}</td></tr>")
    checks = []
    for t in report.tasks:
        items = "".join(f'<tr><td>{html.escape(c["name"])}</td><td><span class="badge {c["status"]}">{c["status"]}'
                        f'</span></td><td style="text-align:left">{html.escape(c["reason"])}</td></tr>'
                        for c in t.get("checks", []))
        link = f' <a href="{html.escape(str(t["report"]))}">audit report</a>' if t.get("report") else ""
        checks.append(f"<h2>{html.escape(t['task'])} version {html.escape(str(t.get('version')))}</h2>"
                      f"<p>{html.escape(t.get('message', ''))}{link}</p>"
                      f"<table><tr><th>check</th><th>status</th><th>reason</th></tr>{items}</table>")
    ingested = "".join(f"<li>{html.escape(b['batch'])}</li>" for b in report.ingested) or "<li>nothing new</li>"
    body = (f"<h1>Retraining for {html.escape(report.month)}</h1>"
            f"<p class=\"meta\">data as of {html.escape(report.as_of)}; reason: {html.escape(report.reason)}</p>"
            f"<h2>Ingested</h2><ul>{ingested}</ul><h2 id=\"summary\">Tasks</h2><table id=\"tasks\"><tr><th>task</th>"
            "<th>candidate</th><th>champion before</th><th>figures</th><th>gate</th><th>outcome</th><th>what happened"
            f"</th></tr>{''.join(rows)}</table>{''.join(checks)}")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(f"Retraining for {report.month}", body))
    write_json_atomically(folder / f"{report.month}.json", {**report.to_dict(), "summary": str(path)})
    return path

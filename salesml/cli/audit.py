"""Governance commands: audit a version and set its gate, validators' review, promotion and rollback, and the
effective policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from salesml.cli.common import (
    JsonOpt,
    app,
    current_principal,
    emit,
    failures,
    new_table,
    policy_app,
    review_app,
    stderr,
    stdout,
)
from salesml.settings import get_settings


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




@policy_app.command("show")
def policy_show(
    task: Annotated[str, typer.Argument(help="The task (opportunity_loss, telco_churn, ...).")],
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: monitoring/policy.yaml).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a task's effective policy (default, then its kind's section, then its own), checked as the gate
    checks it: an unknown check, metric or setting is an error naming the file and the place."""
    from monitoring.policy import load_policy

    with failures(as_json):
        effective = load_policy(task, policy)
    result = {"task": effective.task, "kind": effective.kind, "auto_promote": effective.auto_promote,
              "runs": effective.running(), "not_applicable": effective.not_applicable(),
              "checks": {name: check.model_dump(mode="json") for name, check in effective.checks.items()}}

    def render(r: dict) -> None:
        import yaml

        stdout.print(f"{r['task']} ({r['kind']}): runs {', '.join(r['runs'])}; auto_promote {r['auto_promote']}")
        stdout.print(yaml.safe_dump(r["checks"], sort_keys=False), highlight=False, markup=False)

    emit(result, as_json, render)

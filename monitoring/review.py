"""Validators' decisions and the MLflow aliases: review, promotion, rollback, the audit log and the candidate list.

Registry operations only: they import MLflow but none of the training or audit stack, so the commands that run
them take 2-3.5 s rather than 5-6. ``monitoring.gate`` audits a version and sets its gate; ``review`` records an
approval or rejection by a model validator; ``promote`` and ``rollback`` move the ``champion`` and ``previous``
aliases. Every decision is appended to ``SALESML_HOME/audit.log`` and written to the version's tags.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient

from experiments.registered import get_alias, get_version, resolve_model_name
from experiments.registry import (
    CHAMPION,
    PREVIOUS,
    TAG_DECIDED_AT,
    TAG_DECIDED_BY,
    TAG_DECISION,
    TAG_DECISION_REASON,
    TAG_GATE,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_REPORT,
    TAG_TRAINER,
)
from experiments.tracking import configure_mlflow
from salesml.access import AccessError, Principal
from salesml.settings import Settings


class GateError(PermissionError):
    """A review or promotion the rules do not allow (the message says which rule)."""


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def append_audit_log(settings: Settings, entry: dict) -> None:
    """Append one decision to the append-only audit log (a JSON line, flushed to disk)."""
    settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": now_iso(), **entry}, sort_keys=True)
    with open(settings.audit_log, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_audit_log(settings: Settings) -> list[dict]:
    """Every entry of the audit log, oldest first."""
    if not settings.audit_log.exists():
        return []
    return [json.loads(line) for line in settings.audit_log.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ review


def _require_validator(principal: Principal) -> None:
    if principal.role != "model_validator":
        raise AccessError(f"{principal.name} has role {principal.role}; only a model_validator may do this")


def review(settings: Settings, name: str, version: str, decision: str, reason: str, principal: Principal) -> dict:
    """Approve or reject an audited version.

    Raises:
        AccessError: when the principal is not a model validator.
        GateError: when a validator approves a version they trained, the version was not audited, or no reason is
            given.
    """
    if decision not in ("approve", "reject"):
        raise ValueError("decision must be approve or reject")
    _require_validator(principal)
    if not reason or not reason.strip():
        raise GateError("a decision needs a reason (--reason TEXT)")
    client = configure_mlflow(settings)
    name = resolve_model_name(client, name)
    info = get_version(client, name, version)
    gate = info.tags.get(TAG_GATE, "pending")
    if gate == "pending":
        raise GateError(f"{name} version {version} has not been audited: run `salesml audit {name} {version}` first")
    if decision == "approve" and info.tags.get(TAG_TRAINER) == principal.name:
        raise GateError(f"{principal.name} trained {name} version {version} and cannot approve it")
    at = now_iso()
    for key, value in {TAG_DECISION: "approved" if decision == "approve" else "rejected",
                       TAG_DECIDED_BY: principal.name, TAG_DECIDED_AT: at, TAG_DECISION_REASON: reason}.items():
        client.set_model_version_tag(name, str(version), key, value)
    entry = {"action": decision, "model": name, "version": str(version), "principal": principal.name,
             "role": principal.role, "reason": reason, "gate": gate}
    append_audit_log(settings, entry)
    return {**entry, "at": at}


def list_candidates(settings: Settings, prefix: str = "") -> list[dict]:
    """Every registered version with its gate, review decision and aliases, newest first."""
    client = configure_mlflow(settings)
    rows = []
    for model in client.search_registered_models():
        if prefix and not model.name.startswith(prefix):
            continue
        aliases = {str(v): k for k, v in (model.aliases or {}).items()}
        for v in client.search_model_versions(f"name='{model.name}'"):
            rows.append({"model": model.name, "version": str(v.version), "gate": v.tags.get(TAG_GATE, "pending"),
                         "decision": v.tags.get(TAG_DECISION), "trainer": v.tags.get(TAG_TRAINER),
                         "alias": aliases.get(str(v.version)), "report": v.tags.get(TAG_REPORT),
                         "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(
                             timespec="seconds")})
    return sorted(rows, key=lambda r: (r["model"], -int(r["version"])))


def show_audit(settings: Settings, name: str, version: str) -> dict:
    """The stored audit JSON of a version (with its review decision).

    Raises:
        GateError: when the version has not been audited.
    """
    client = configure_mlflow(settings)
    name = resolve_model_name(client, name)
    info = get_version(client, name, version)
    path = settings.home / "reports" / name / str(version) / "audit.json"
    if path.is_file():
        result = json.loads(path.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="salesml-audit-") as scratch:
            try:
                path = Path(client.download_artifacts(info.run_id, f"audit/v{version}/audit.json", scratch))
            except Exception as exc:  # noqa: BLE001 - no artifact: not audited
                raise GateError(f"{name} version {version} has not been audited") from exc
            result = json.loads(path.read_text())
    result["decision"] = {"decision": info.tags.get(TAG_DECISION), "by": info.tags.get(TAG_DECIDED_BY),
                          "at": info.tags.get(TAG_DECIDED_AT), "reason": info.tags.get(TAG_DECISION_REASON)}
    return result


# ------------------------------------------------------------------------------------------------ promotion


def _between_tag_and_alias_steps() -> None:
    """A seam between promotion's two steps (tests inject a crash here)."""


def promote(settings: Settings, name: str, version: str, principal: Principal) -> dict:
    """Make a version the champion, moving the old champion to ``previous``.

    Allowed when the gate is PASS, or REVIEW with an approval. The version's tags are written first, then the
    aliases; each alias update is one registry write, so a reader sees the old champion or the new one, never
    none, and a crash between the steps leaves the champion unchanged (rerunning completes it).

    Raises:
        AccessError: when the principal is not a model validator.
        GateError: when the gate or the review does not allow it.
    """
    _require_validator(principal)
    client = configure_mlflow(settings)
    name = resolve_model_name(client, name)
    info = get_version(client, name, version)
    gate = info.tags.get(TAG_GATE, "pending")
    decision = info.tags.get(TAG_DECISION)
    if gate == "FAIL" or gate == "pending":
        raise GateError(f"{name} version {version} cannot be promoted: its gate is {gate}")
    if decision == "rejected":
        raise GateError(f"{name} version {version} was rejected by {info.tags.get(TAG_DECIDED_BY)}")
    if gate == "REVIEW" and decision != "approved":
        raise GateError(f"{name} version {version} needs a validator's approval first (gate REVIEW): "
                        f"salesml review approve {name} {version} --reason ...")
    current = get_alias(client, name, CHAMPION)
    if current is not None and str(current.version) == str(version):
        return {"model": name, "champion": str(version), "previous": _version_of(client, name, PREVIOUS),
                "changed": False}
    at = now_iso()
    client.set_model_version_tag(name, str(version), TAG_PROMOTED_BY, principal.name)
    client.set_model_version_tag(name, str(version), TAG_PROMOTED_AT, at)
    _between_tag_and_alias_steps()
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(current.version))
    client.set_registered_model_alias(name, CHAMPION, str(version))
    entry = {"action": "promote", "model": name, "version": str(version), "principal": principal.name,
             "role": principal.role, "previous": str(current.version) if current is not None else None, "gate": gate}
    append_audit_log(settings, entry)
    return {"model": name, "champion": str(version), "previous": entry["previous"], "changed": True}


def _version_of(client: MlflowClient, name: str, alias: str) -> str | None:
    found = get_alias(client, name, alias)
    return str(found.version) if found is not None else None


def rollback(settings: Settings, name: str, principal: Principal, reason: str = "") -> dict:
    """Restore the ``previous`` version as champion (the demoted one becomes ``previous``).

    Raises:
        GateError: when there is no previous version.
    """
    _require_validator(principal)
    client = configure_mlflow(settings)
    name = resolve_model_name(client, name)
    previous = get_alias(client, name, PREVIOUS)
    if previous is None:
        raise GateError(f"{name} has no previous champion to roll back to")
    current = get_alias(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, str(previous.version))
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(current.version))
    entry = {"action": "rollback", "model": name, "version": str(previous.version), "principal": principal.name,
             "role": principal.role, "demoted": str(current.version) if current is not None else None,
             "reason": reason}
    append_audit_log(settings, entry)
    return {"model": name, "champion": entry["version"], "previous": entry["demoted"]}


"""Data governance: an installation's policy on its data standards.

The data model (``features.model``) and the standards (``features.standards``) say what a valid row is; every
rule there is blocking. A governance policy says how strict an installation is: for a table and a rule (and,
for a rule with one instance per column such as ``required_field``, for some columns) it sets

- the **severity**: ``blocking`` (the row is quarantined) or ``warning`` (the row is stored and flagged, the
  values the rule judged are stored as missing), optionally only on rows that meet a condition (``when``);
- the **parameters** of a rule built from them (the bounds of the ``*_in_range`` rules);

and it extends **controlled vocabularies** (one country's Central, East and West offices are regions too).

The policy salesml ships (``features/governance.yaml``) holds the decisions on deals with missing facts; an
installation's own file (``SALESML_HOME/standards.yaml``, or ``--standards FILE``) is applied after it, so its
entries win. The README documents the format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.model import TABLES, Table
from features.standards import Rule, rules_for

DEFAULT_POLICY = Path(__file__).with_name("governance.yaml")
POLICY_FILE = "standards.yaml"
#: Columns whose vocabulary a policy cannot extend: the stage machine and the activity kinds the views count.
FIXED_VOCABULARIES = ("stage", "from_stage", "to_stage", "activity_type", "outcome", "status", "subject_type",
                      "period_length", "role")


class GovernanceError(ValueError):
    """A governance policy that does not fit the data model (unknown table, rule, column or parameter)."""


class StandardPolicy(BaseModel):
    """How strict one standard is on one table."""

    model_config = ConfigDict(extra="forbid")
    table: str
    rule: str
    columns: list[str] | None = Field(None, description=(
        "Only the rule's instances on these columns (``required_field`` has one per column). Default: all."))
    severity: Literal["blocking", "warning"] | None = None
    when: dict[str, list[str | int | float | bool | None]] | None = Field(None, description=(
        "A warning only on rows whose columns hold one of these values (null: empty); blocking elsewhere."))
    params: dict[str, float | bool] = Field(default_factory=dict)
    reason: str = ""


class Governance(BaseModel):
    """A data-governance policy: severities and parameters of standards, and vocabulary extensions."""

    model_config = ConfigDict(extra="forbid")
    standards: list[StandardPolicy] = Field(default_factory=list)
    vocabularies: dict[str, list[str | int]] = Field(default_factory=dict, description=(
        "Extra allowed values: ``column`` (every table that has it) or ``table.column``."))
    sources: list[str] = Field(default_factory=list, exclude=True)

    def table(self, table: Table) -> Table:
        """``table`` with the vocabularies this policy extends."""
        extended = []
        changed = False
        for column in table.columns:
            extra = [*self.vocabularies.get(column.name, []), *self.vocabularies.get(f"{table.name}.{column.name}", [])]
            if column.allowed is not None and extra:
                added = tuple(v for v in dict.fromkeys(extra) if v not in column.allowed)
                if added:
                    column = replace(column, allowed=column.allowed + added)
                    changed = True
            extended.append(column)
        return replace(table, columns=tuple(extended)) if changed else table

    def rules_for(self, table: Table, extra: Sequence[Rule] = ()) -> list[Rule]:
        """The rules of ``table`` (with a task table's ``extra`` rules) under this policy."""
        return self.apply(rules_for(self.table(table), extra))

    def apply(self, rules: Sequence[Rule]) -> list[Rule]:
        """Set the severities and parameters this policy gives to ``rules``."""
        out = []
        for rule in rules:
            for entry in self.standards:
                if entry.table != rule.table or entry.rule != rule.name:
                    continue
                if entry.columns is not None and not set(rule.columns) <= set(entry.columns):
                    continue
                if entry.params:
                    rule = rule.with_params(entry.params)
                if entry.severity == "blocking":
                    rule = replace(rule, warning=False)
                elif entry.severity == "warning":
                    rule = replace(rule, warning={k: tuple(v) for k, v in entry.when.items()} if entry.when else True)
            out.append(rule)
        return out

    def file_columns(self, table: Table, rules: Sequence[Rule]) -> list[str]:
        """The columns a source file of ``table`` must have: those whose presence is required without exception."""
        relaxed = {r.columns[0] for r in rules if r.name == "required_field" and r.warning is not False}
        return [c for c in table.required_columns if c not in relaxed]


def _check(policy: Governance, where: str) -> None:
    """Refuse entries that name no table, rule, column or parameter of the data model."""
    for i, entry in enumerate(policy.standards, start=1):
        at = f"{where}: standards[{i}] ({entry.table}.{entry.rule})"
        if entry.table not in TABLES and not entry.table.startswith("task_"):
            raise GovernanceError(f"{at}: unknown table {entry.table!r}; known: {', '.join(TABLES)} or task_<name>")
        if entry.table.startswith("task_"):
            continue
        table = TABLES[entry.table]
        rules = [r for r in rules_for(table) if r.name == entry.rule]
        if not rules:
            names = sorted({r.name for r in rules_for(table)})
            raise GovernanceError(f"{at}: {entry.table} has no rule {entry.rule!r}; its rules: {', '.join(names)}")
        for column in [*(entry.columns or []), *(entry.when or {})]:
            if column not in table.column_index:
                raise GovernanceError(f"{at}: {entry.table} has no column {column!r}")
        if entry.columns is not None and not any(set(r.columns) <= set(entry.columns) for r in rules):
            raise GovernanceError(f"{at}: no instance of {entry.rule} covers only {entry.columns}")
        if entry.when and entry.severity != "warning":
            raise GovernanceError(f"{at}: `when` says where a warning applies; it needs `severity: warning`")
        if entry.rule == "unique_key" and entry.severity == "warning":
            raise GovernanceError(f"{at}: unique_key cannot be a warning: two rows of one key cannot both be stored")
        if entry.params:
            try:
                rules[0].with_params(entry.params)
            except ValueError as exc:
                raise GovernanceError(f"{at}: {exc}") from None
    for name in policy.vocabularies:
        table_name, _, column = name.rpartition(".")
        tables = [TABLES[table_name]] if table_name in TABLES else list(TABLES.values()) if not table_name else []
        if table_name and not tables:
            raise GovernanceError(f"{where}: vocabularies: unknown table {table_name!r}")
        coded = [t for t in tables if column in t.column_index and t.column(column).allowed is not None]
        if not coded:
            raise GovernanceError(f"{where}: vocabularies: no table has a coded column {name!r}")
        if column in FIXED_VOCABULARIES:
            raise GovernanceError(f"{where}: vocabularies: {column} is fixed by the data model and cannot be extended")


def read_policy(path: Path) -> Governance:
    """Read one governance YAML file.

    Raises:
        GovernanceError: when the file is missing, not YAML, or names no table, rule, column or parameter of the
            data model; the message gives the file and the entry.
    """
    path = Path(path)
    if not path.is_file():
        raise GovernanceError(f"standards file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise GovernanceError(f"{path}: not valid YAML: {exc}") from None
    try:
        policy = Governance.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors())
        raise GovernanceError(f"{path}: {problems}") from None
    _check(policy, str(path))
    return policy


def load_governance(path: Path | None = None, home: Path | None = None) -> Governance:
    """The policy in force: salesml's defaults, then the installation's file.

    Args:
        path: a policy file given on the command line (``--standards``); it replaces the home's file.
        home: SALESML_HOME, whose ``standards.yaml`` applies when ``path`` is not given.

    Raises:
        GovernanceError: for a policy file that is missing (when given) or invalid.
    """
    policy = read_policy(DEFAULT_POLICY)
    sources = [str(DEFAULT_POLICY)]
    chosen = Path(path) if path is not None else (Path(home) / POLICY_FILE if home is not None else None)
    if chosen is not None and (path is not None or chosen.is_file()):
        own = read_policy(chosen)
        vocabularies = {k: list(v) for k, v in policy.vocabularies.items()}
        for name, values in own.vocabularies.items():
            vocabularies[name] = [*vocabularies.get(name, []), *values]
        policy = Governance(standards=[*policy.standards, *own.standards], vocabularies=vocabularies)
        sources.append(str(chosen))
    policy.sources = sources
    return policy

"""Scoring functions: resolve records to features, check data scopes, score, explain, recommend actions.

Every function takes the model (and lookups) as arguments, so the service stays thin and tests can hand them a
stub. Client mistakes raise ``RequestError`` with the HTTP status, the field and the reason.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from training.explain import reason_codes, reasons_from_contributions
from training.models import GROUP_THRESHOLDS, alert_thresholds

ACTIONS_FILE = Path(__file__).resolve().parent / "actions.yaml"
SCORING_ROLES = ("sales_rep", "sales_manager", "executive", "application")
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
        "!=": operator.ne}


class RequestError(Exception):
    """A client mistake: HTTP status, the offending field and why."""

    def __init__(self, status: int, field: str, reason: str, ids: list[str] | None = None):
        super().__init__(reason)
        self.status, self.field, self.reason, self.ids = status, field, reason, ids or []

    def to_dict(self) -> dict:
        """The JSON error body."""
        out = {"error": {"status": self.status, "field": self.field, "reason": self.reason}}
        if self.ids:
            out["error"]["ids"] = self.ids
        return out


@dataclass
class Lookup:
    """What a task's records are resolved against.

    Attributes:
        id_field: the entity id field of a record (``opportunity_id``, ``account_id``, ``row_id``).
        features: current features by entity id (for records that carry only an id).
        owners: owning rep of each entity id (empty: the task has no owners, only ``all`` scopes may score it).
        as_of: the day the features describe (the view's cutoff), reported with every answer by id.
        source: where the features came from (the materialised view's table, or ``live@<snapshot>``).
    """

    id_field: str
    features: pd.DataFrame
    owners: dict[str, str] = field(default_factory=dict)
    matrix: np.ndarray | None = None
    rows: list[dict] = field(default_factory=list)
    position: dict[str, int] | None = None
    scores: list[dict] | None = None
    as_of: str | None = None
    source: str | None = None

    def prepare(self, model) -> None:
        """Transform the features once for the model (requests by id then only pick rows)."""
        if self.position is not None:
            return
        self.rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                     for r in self.features.to_dict("records")]
        pre = getattr(model, "preprocessor", None)
        self.matrix = pre.transform(self.features).to_numpy() if pre is not None and len(self.features) else None
        self.position = {str(k): i for i, k in enumerate(self.features.index)}


@dataclass
class Hierarchy:
    """The sales organisation: each rep's team, for team scopes."""

    team_of: dict[str, str]

    def owners_in(self, scope: str) -> set[str] | None:
        """Reps whose records a scope covers (``None``: everything)."""
        kind, _, value = scope.partition(":")
        if kind == "all":
            return None
        if kind == "rep":
            return {value}
        if kind == "team":
            return {rep for rep, team in self.team_of.items() if team == value}
        return set()


def load_rules(path: Path = ACTIONS_FILE) -> list[dict]:
    """Next-best-action rules from YAML.

    Raises:
        ValueError: for a rule without an id or action, or with an unknown operator.
    """
    rules = (yaml.safe_load(Path(path).read_text()) or {}).get("rules", [])
    for rule in rules:
        if not rule.get("id") or not rule.get("action"):
            raise ValueError(f"{path}: every rule needs an id and an action ({rule})")
        for feature, condition in (rule.get("when") or {}).items():
            bad = set(condition) - set(_OPS)
            if bad:
                raise ValueError(f"{path}: rule {rule['id']}: unknown operator(s) {bad} on {feature}")
    return rules


def next_best_actions(rules: list[dict], task: str, rows: list[Mapping], bands: Sequence[str]) -> list[list[dict]]:
    """The actions whose conditions hold, for each scored record.

    A condition on a missing value (None or NaN) does not hold. The rules are compiled once per call into
    (band, [(feature, operator, target)]) so that a 10,000-record batch costs tens of milliseconds.
    """
    compiled = [(rule.get("band"), [(feature, _OPS[op], target) for feature, condition in (rule.get("when") or {}).items()
                                    for op, target in condition.items()], rule["id"], rule["action"])
                for rule in rules if rule.get("task") in (None, task)]
    out = []
    for row, band in zip(rows, bands, strict=True):
        todo = []
        for rule_band, conditions, rule_id, action in compiled:
            if rule_band and rule_band != band:
                continue
            for feature, op, target in conditions:
                value = row.get(feature)
                if value is None or value != value or not op(value, target):  # value != value: NaN
                    break
            else:
                todo.append({"id": rule_id, "action": action})
        out.append(todo)
    return out


def check_role(role: str) -> None:
    """Only roles that call scoring endpoints may score.

    Raises:
        RequestError: 403 for other roles.
    """
    if role not in SCORING_ROLES:
        raise RequestError(403, "authorization", f"role {role} may not call scoring endpoints")


@dataclass
class Resolved:
    """Request records resolved to what the model reads.

    Attributes:
        ids: the entity id of each record, in request order.
        rows: each record's raw feature values (for reasons and actions).
        matrix: the model matrix (``None`` for models without a preprocessor; they read ``frame``).
        positions: when every record was given by id, their rows in the lookup.
        from_lookup: for each record, whether its features came from the lookup (by id) or from the request.
    """

    ids: list[str]
    rows: list[dict]
    matrix: np.ndarray | None
    positions: list[int] | None = None
    from_lookup: list[bool] | None = None

    @property
    def frame(self) -> pd.DataFrame:
        """The records as a frame."""
        return pd.DataFrame(self.rows)


NOT_A_NUMBER = "must be a number, a boolean or null"
NOT_FINITE = "must be a finite number"


def _unknown_category(value: object, known) -> str:
    return f"unknown category {value!r} (known: {', '.join(map(str, list(known)[:10]))})"


def check_feature_frame(frame: pd.DataFrame, model) -> tuple[pd.DataFrame, pd.Series]:
    """A file's feature values checked like a request's records, a chunk at a time: the cleaned features, and
    for each row what is wrong with it ("" when nothing).

    A file cannot type its values as JSON does, so numbers may come as text (a CSV column with one bad cell is read
    as text) and ``true``/``false`` count as 1/0, and a category may come as a number. A row is wrong when a
    numeric feature holds something that is not a number, or not a finite one, or a categorical feature holds a
    category the model never saw: the reasons a request is refused with.

    Returns:
        The features (numbers as float64, categories as text or None) and each row's problems, as
        ``"feature: reason (got value)"`` clauses joined by "; " (a category's reason names the category).
    """
    pre = getattr(model, "preprocessor", None)
    if pre is None:
        return frame[list(model.features)].copy(), pd.Series("", index=frame.index, dtype=object)
    clean: dict[str, pd.Series] = {}
    found: list[tuple[str, np.ndarray, str]] = []  # (feature, rows that break it, reason)
    for column in pre.numeric:
        raw = frame[column]
        if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
            flags = raw.astype("string").str.strip().str.lower().map({"true": 1.0, "false": 0.0}).astype("float64")
            values = pd.to_numeric(raw.where(flags.isna(), flags), errors="coerce").astype("float64")
        else:
            values = raw.astype("float64")
        found.append((column, (raw.notna() & values.isna()).to_numpy(), NOT_A_NUMBER))
        found.append((column, np.isinf(values.to_numpy()), NOT_FINITE))
        clean[column] = values
    for column in pre.categorical:
        raw = frame[column]
        text = raw.astype("string").astype(object).where(raw.notna(), None)
        known = pre.categories_[column]
        unseen = (text.notna() & ~text.isin(known)).to_numpy()
        found += [(column, unseen & (text == value).to_numpy(), _unknown_category(value, known))
                  for value in text[unseen].unique()]
        clean[column] = text
    categories = set(pre.categorical)
    problems = [[] for _ in range(len(frame))]
    for column, rows, reason in found:
        for at in np.flatnonzero(rows):
            if column in categories:  # the reason already names the category
                problems[at].append(f"{column}: {reason}")
                continue
            value = frame[column].iat[at]
            problems[at].append(f"{column}: {reason} (got {value.item() if isinstance(value, np.generic) else value!r})")
    return (pd.DataFrame(clean, index=frame.index)[list(model.features)],
            pd.Series(["; ".join(p) for p in problems], index=frame.index, dtype=object))


def _check_record(i: int, record: dict, features: list[str], numeric: set[str], categories: dict) -> dict:
    row = {}
    for feature in features:
        if feature not in record:
            raise RequestError(422, f"records.{i}.{feature}", "missing feature (send all features, or only the id)")
        value = record[feature]
        row[feature] = value
        if value is None:
            continue
        kind = type(value)
        if feature in numeric:
            # Exact types first: this runs for every value of 10,000-record requests.
            if kind is int or kind is bool or (kind is float and math.isfinite(value)):
                continue
            if isinstance(value, str) or not isinstance(value, (int, float)):
                raise RequestError(422, f"records.{i}.{feature}", NOT_A_NUMBER)
            if not math.isfinite(value):
                raise RequestError(422, f"records.{i}.{feature}", NOT_FINITE)
        else:
            if not isinstance(value, str):
                raise RequestError(422, f"records.{i}.{feature}", "must be a string or null")
            known = categories.get(feature)
            if known is not None and value not in known:
                raise RequestError(422, f"records.{i}.{feature}", _unknown_category(value, known))
    return row


def resolve_records(records: list[dict], model, lookup: Lookup, indexes: Sequence[int] | None = None) -> Resolved:
    """Turn request records into what the model reads.

    A record is either only the entity id (features come from the lookup) or a full feature record that also
    carries the id. Booleans count as numbers (0/1). For a fairness-mitigated variant, a full record may also
    carry the group attribute its thresholds depend on; without it the model's base threshold applies.

    ``indexes``: each record's position in the request, for the field names of errors (default: in order).

    Raises:
        RequestError: 422 naming the field for a missing id, an unknown id, a missing feature, a value of the
            wrong type, a non-finite number or an unknown category.
    """
    pre = getattr(model, "preprocessor", None)
    numeric = set(pre.numeric) if pre else set()
    categories = pre.category_codes() if pre else {}
    features = list(model.features)
    # A fairness-mitigated variant sets its alert threshold by a group the record may carry (not a feature).
    group_attribute = (model.metadata.get(GROUP_THRESHOLDS) or {}).get("attribute")
    lookup.prepare(model)
    ids, rows, unknown, given, looked_up = [], [], [], [], []
    for i, record in enumerate(records):
        at_request = indexes[i] if indexes is not None else i
        entity = record.get(lookup.id_field)
        if entity is None or entity == "":
            raise RequestError(422, f"records.{at_request}.{lookup.id_field}", f"every record needs {lookup.id_field}")
        entity = str(entity)
        ids.append(entity)
        if len(record) == 1:
            at = lookup.position.get(entity)
            if at is None:
                unknown.append(entity)
                continue
            rows.append(lookup.rows[at])
            looked_up.append((i, at))
            continue
        row = _check_record(at_request, record, features, numeric, categories)
        if group_attribute and group_attribute not in row:
            value = record.get(group_attribute)
            if value is not None and not isinstance(value, str):
                raise RequestError(422, f"records.{at_request}.{group_attribute}", "must be a string or null")
            row[group_attribute] = value
        rows.append(row)
        given.append(i)
    if unknown:
        raise RequestError(422, f"records.{lookup.id_field}", f"unknown {lookup.id_field}: {', '.join(unknown[:20])}",
                           unknown)
    positions = None if given else [at for _, at in looked_up]
    origin = [True] * len(rows)
    for i in given:
        origin[i] = False
    if pre is None:
        return Resolved(ids, rows, None, positions, origin)
    if not given:
        return Resolved(ids, rows, lookup.matrix[positions], positions, origin)
    matrix = np.empty((len(rows), len(features)))
    matrix[given] = pre.transform_records([rows[i] for i in given])
    if looked_up:
        matrix[[i for i, _ in looked_up]] = lookup.matrix[[at for _, at in looked_up]]
    return Resolved(ids, rows, matrix, None, origin)


def unknown_ids(records: list[dict], model, lookup: Lookup) -> list[int]:
    """Positions of the records given only by an id the lookup does not hold."""
    lookup.prepare(model)
    out = []
    for i, record in enumerate(records):
        entity = record.get(lookup.id_field)
        if len(record) == 1 and entity not in (None, "") and str(entity) not in lookup.position:
            out.append(i)
    return out


@dataclass
class Part:
    """Some of a request's records (their positions), resolved against one lookup."""

    indexes: list[int]
    resolved: Resolved
    lookup: Lookup


def resolve_parts(records: list[dict], model, lookup: Lookup, live: Callable[[], Lookup | None] | None = None
                  ) -> list[Part]:
    """Resolve a request's records; ids the lookup does not hold are resolved against ``live()``, features
    computed as of the store's latest data, when it is given and holds them.

    Raises:
        RequestError: as ``resolve_records`` (an id neither lookup holds is 422 unknown).
    """
    missing = unknown_ids(records, model, lookup)
    fresh = live() if missing and live is not None else None
    if fresh is None:
        return [Part(list(range(len(records))), resolve_records(records, model, lookup), lookup)]
    parts = []
    rest = sorted(set(range(len(records))) - set(missing))
    if rest:
        parts.append(Part(rest, resolve_records([records[i] for i in rest], model, lookup, rest), lookup))
    fresh.prepare(model)
    parts.append(Part(missing, resolve_records([records[i] for i in missing], model, fresh, missing), fresh))
    return parts


def out_of_scope(ids: list[str], scope: str, lookup: Lookup, hierarchy: Hierarchy) -> list[str]:
    """The ids a scope does not cover (every id, when the task has no owners and the scope is narrower than all)."""
    allowed = hierarchy.owners_in(scope)
    if allowed is None:
        return []
    return sorted({i for i in ids if lookup.owners.get(i) not in allowed})


def risk_bands(p: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """high at or above the alert threshold (one, or one per row), medium above half of it, else low."""
    return np.where(p >= threshold, "high", np.where(p >= threshold / 2, "medium", "low"))


def score_records(model, resolved: Resolved, task: str, name: str, version: str, rules: list[dict], id_field: str,
                  k: int = 3, approximate: bool = False, features_as_of: str | None = None) -> list[dict]:
    """Probabilities, risk bands, top-k reasons and next-best actions for resolved records (``approximate``:
    XGBoost's path-based contributions, see ``training.models.booster_predict``).

    Each result says how fresh its features are (``features_as_of``): the lookup's day for a record given by id,
    ``request`` for a record that brought its own features.
    """
    if resolved.matrix is not None and hasattr(model, "explain_matrix"):
        p, contributions = model.explain_matrix(resolved.matrix, approximate)
        reasons = reasons_from_contributions(contributions, list(model.features), resolved.rows, k)
    else:
        frame = resolved.frame
        p = model.predict_proba(frame)
        reasons = reason_codes(model, frame, k=k)
    bands = risk_bands(p, alert_thresholds(model, resolved.rows)).tolist()
    actions = next_best_actions(rules, task, resolved.rows, bands)
    version = str(version)
    origin = resolved.from_lookup or [True] * len(resolved.ids)
    fresh = [features_as_of if by_id else "request" for by_id in origin]
    return [{id_field: entity, "probability": probability, "risk_band": band, "reasons": why, "actions": todo,
             "model": name, "version": version, "features_as_of": as_of}
            for entity, probability, band, why, todo, as_of in zip(resolved.ids, np.round(p, 6).tolist(), bands,
                                                                  reasons, actions, fresh, strict=True)]


def score_lookup(model, lookup: Lookup, task: str, name: str, version: str, rules: list[dict],
                 approximate: bool = False, chunk: int = 10_000) -> None:
    """Score every entity of a lookup once, into ``lookup.scores`` (in lookup order).

    An id's features only change when the service loads a new champion or lookup, so requests by id are then
    answered from these results instead of running the booster again. Computed when the model is loaded.
    """
    lookup.prepare(model)
    ids = [str(i) for i in lookup.features.index]
    scores: list[dict] = []
    for start in range(0, len(ids), chunk):
        part = slice(start, start + chunk)
        matrix = lookup.matrix[part] if lookup.matrix is not None else None
        scores += score_records(model, Resolved(ids[part], lookup.rows[part], matrix), task, name, version, rules,
                                lookup.id_field, approximate=approximate, features_as_of=lookup.as_of)
    lookup.scores = scores


def score_request(model, resolved: Resolved, lookup: Lookup, task: str, name: str, version: str, rules: list[dict],
                  approximate: bool = False) -> list[dict]:
    """``score_records``, answering records given by id from ``lookup.scores`` when it was computed.

    The results of ids are shared between requests: callers read them and never change them.
    """
    if resolved.positions is not None and lookup.scores is not None:
        scores = lookup.scores
        return [scores[at] for at in resolved.positions]
    return score_records(model, resolved, task, name, version, rules, lookup.id_field, approximate=approximate,
                         features_as_of=lookup.as_of)

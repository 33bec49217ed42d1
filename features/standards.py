"""Data standards: the named, documented rules every ingested row must meet.

Each rule is a pandera check that marks the rows of one table that break it. ``validate_table`` parses a
source frame into the canonical types (values that do not parse break ``type_mismatch``), runs the table's
pandera schema lazily, and splits the frame into valid rows and quarantined rows, each quarantined row with
the names of every rule it broke. Rules that look at other tables (foreign keys, stage history against the
opportunity, line quantities against the order status) read them through a ``RuleContext`` that the
ingestion pipeline fills with the parents' valid rows.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pycountry

from features.model import TABLES, Column, Table
from features.stages import CLOSED_STAGES, OUTCOME_OF_STAGE, STAGES, classify_transitions

STRING = pd.StringDtype("pyarrow")
PANDAS_DTYPES = {
    "string": STRING,
    "int": "Int64",
    "float": "float64",
    "bool": "boolean",
    "date": "datetime64[ns]",
    "timestamp": "datetime64[ns]",
}
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

Check = Callable[[pd.DataFrame, "RuleContext"], pd.Series]


@dataclass(frozen=True)
class Rule:
    """A named data standard on one table.

    Attributes:
        name: rule name; quarantined rows carry it and reports count by it.
        table: the table it applies to.
        description: what a valid row looks like, in one sentence.
        columns: the columns the rule reads (shown in the quarantine detail).
        check: returns, for a frame of parsed rows, a boolean series that is True where the row passes.
            ``None`` for ``type_mismatch``, which parsing applies.
    """

    name: str
    table: str
    description: str
    columns: tuple[str, ...] = ()
    check: Check | None = field(default=None, compare=False, repr=False)
    warning: bool | Mapping[str, tuple] = field(default=False, compare=False)
    judges: tuple[str, ...] | None = None
    params: Mapping[str, float | bool] = field(default_factory=dict, compare=False)
    make: Callable[[Mapping], Check] | None = field(default=None, compare=False, repr=False)

    @property
    def judged_columns(self) -> tuple[str, ...]:
        """The columns whose values the rule judges: a warning stores them as missing (default: its columns)."""
        return self.columns if self.judges is None else self.judges

    def with_params(self, params: Mapping[str, float | bool]) -> Rule:
        """The rule with some parameters changed (only rules built from parameters take them).

        Raises:
            ValueError: for a rule without parameters, or a parameter it does not have.
        """
        if self.make is None:
            raise ValueError(f"rule {self.name} on {self.table} takes no parameters")
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(f"rule {self.name} on {self.table} has no parameter {', '.join(unknown)} "
                             f"(it has: {', '.join(self.params)})")
        merged = {**self.params, **params}
        shown = ", ".join(f"{k}={v}" for k, v in merged.items())
        description = self.description.split(" (set by policy:")[0] + f" (set by policy: {shown})"
        return replace(self, params=merged, check=self.make(merged), description=description)


@dataclass
class RuleContext:
    """What rules may know beyond the rows they check.

    Attributes:
        as_of: the load's as-of date; no timestamp may be later than the end of that day.
        parents: returns a parent table's valid rows (stored or from this load, minus those quarantined in
            this load), indexed by the parent's key, with its lookup columns.
        stored_rows: returns the stored rows of a table whose ``column`` is among ``values`` (used to check
            stage history that arrives in several loads).
        duplicate_keys: keys (as tuples) that occur more than once in the whole load of the table being
            checked, when it is validated in chunks.
    """

    as_of: pd.Timestamp
    parents: Callable[[str], pd.DataFrame] = lambda table: _empty_parent(table)
    stored_rows: Callable[[str, str, Sequence], pd.DataFrame] = lambda table, column, values: pd.DataFrame()
    duplicate_keys: set | None = None

    @property
    def as_of_end(self) -> pd.Timestamp:
        """The first instant after the as-of day."""
        return self.as_of.normalize() + pd.Timedelta(days=1)


@dataclass
class Validation:
    """The outcome of validating one frame.

    Attributes:
        valid: the parsed rows that broke no rule.
        quarantined: one row per invalid source row, indexed like the source, with columns ``rules`` (sorted
            rule names, comma separated), ``detail`` (what was wrong) and ``record`` (the raw row as JSON).
        flagged: the stored rows that broke a warning standard, in the same form (they are also in ``valid``,
            with the values the warning judged set to missing).
        repeats: source rows dropped because they repeat an earlier row of the frame exactly (same key, same
            values): one record, stored once.
    """

    valid: pd.DataFrame
    quarantined: pd.DataFrame
    flagged: pd.DataFrame = field(default_factory=lambda: _problem_frame())
    repeats: pd.Index = field(default_factory=lambda: pd.Index([], dtype="int64"))


def _empty_parent(table: str) -> pd.DataFrame:
    spec = TABLES[table]
    frame = pd.DataFrame({c: pd.Series(dtype=PANDAS_DTYPES[spec.column(c).dtype]) for c in spec.lookup_columns})
    frame.index = pd.Index([], dtype=STRING, name=spec.primary_key[0])
    return frame


# --------------------------------------------------------------------------------------------------------
# parsing


def parse_column(values: pd.Series, column: Column) -> tuple[pd.Series, pd.Series]:
    """Parse one source column into its canonical type.

    Args:
        values: the raw values (strings from CSV, or typed values from Parquet).
        column: the canonical column.

    Returns:
        The parsed series and a boolean series that is True where a present value did not parse.
    """
    present = values.notna()
    kind = column.dtype
    if values.dtype == object or isinstance(values.dtype, pd.StringDtype):
        as_text = values.astype("string")
        if kind != "string":
            # Blank cells in typed columns (e.g. Telco's " " TotalCharges) are missing values, not bad ones.
            as_text = as_text.str.strip()
        present = present & (as_text.str.len() > 0).fillna(False).astype(bool)
        values = as_text.where(present)
    if kind == "string":
        if pd.api.types.is_float_dtype(values.dtype):
            # An id read as float by a Parquet writer (e.g. 17850.0) keeps its integer spelling.
            whole = values.dropna()
            if (whole == np.floor(whole)).all():
                values = values.astype("Int64")
        parsed = values.astype("string").astype(STRING).where(present)
        return parsed, pd.Series(False, index=values.index)
    if kind in ("int", "float"):
        if pd.api.types.is_bool_dtype(values.dtype):
            parsed = pd.Series(np.nan, index=values.index)
        else:
            parsed = pd.to_numeric(values, errors="coerce").astype("float64")
        finite = np.isfinite(parsed.to_numpy(dtype="float64", na_value=np.nan))
        bad = present & ~pd.Series(finite, index=values.index)
        if kind == "int":
            good = parsed.where(present & ~bad, 0)
            whole = good == np.floor(good)
            bad = bad | (present & ~whole)
            parsed = parsed.where(~bad).round().astype("Int64")
        else:
            parsed = parsed.where(~bad)
        return parsed, bad
    if kind == "bool":
        if pd.api.types.is_bool_dtype(values.dtype):
            return values.astype("boolean"), pd.Series(False, index=values.index)
        text = values.astype("string").str.strip().str.lower()
        parsed = pd.Series(pd.NA, index=values.index, dtype="boolean")
        parsed[text.isin(list(_TRUE)).fillna(False).to_numpy(dtype=bool)] = True
        parsed[text.isin(list(_FALSE)).fillna(False).to_numpy(dtype=bool)] = False
        return parsed, present & parsed.isna()
    # date / timestamp
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = values
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        parsed = parsed.astype("datetime64[ns]")
    else:
        parsed = pd.to_datetime(values.astype("string"), errors="coerce", format="ISO8601", utc=True)
        parsed = parsed.dt.tz_localize(None).astype("datetime64[ns]")
    if kind == "date":
        parsed = parsed.dt.normalize()
    return parsed, present & parsed.isna()


def parse_frame(frame: pd.DataFrame, table: Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse a source frame into the canonical types of ``table``.

    Columns the frame lacks are added empty (the caller has already refused files that lack a required
    column).

    Returns:
        The parsed frame (canonical column order) and a frame of ``detail`` strings for rows in which some
        value did not parse, indexed like the source.
    """
    parsed: dict[str, pd.Series] = {}
    problems: list[pd.Series] = []
    for column in table.columns:
        if column.name in frame.columns:
            raw = frame[column.name]
        else:
            raw = pd.Series(pd.NA, index=frame.index, dtype="object")
        values, bad = parse_column(raw, column)
        parsed[column.name] = values
        if bad.any():
            shown = raw[bad].astype(str).str.slice(0, 60)
            problems.append(f"{column.name}=" + shown.map(repr) + f" is not {column.dtype}")
    details = pd.DataFrame({"detail": pd.Series(dtype=object)})
    if problems:
        details = pd.concat(problems).groupby(level=0).agg("; ".join).to_frame("detail")
    return pd.DataFrame(parsed, index=frame.index), details


# --------------------------------------------------------------------------------------------------------
# check helpers (True = row passes; missing values pass unless the rule is about presence)


def _ok(mask: pd.Series) -> pd.Series:
    return mask.fillna(True).astype(bool)


def _holds(left: pd.Series, right: pd.Series | object, op: Callable) -> pd.Series:
    """``op(left, right)``, counted as holding where either side is missing (NaN and NaT included)."""
    result = pd.Series(op(left, right), index=left.index).fillna(False).astype(bool)
    missing = left.isna() | (right.isna() if isinstance(right, pd.Series) else pd.isna(right))
    return result | missing.astype(bool)


def _between(column: str, low: float | None, high: float | None, *, low_open: bool = False) -> Check:
    def check(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
        values = df[column].astype("float64")
        ok = pd.Series(True, index=df.index)
        if low is not None:
            ok &= (values > low) if low_open else (values >= low)
        if high is not None:
            ok &= values <= high
        return ok | values.isna()

    return check


def _range(name: str, table: str, description: str, column: str, low: float | None, high: float | None,
           *, low_open: bool = False) -> Rule:
    """A rule bounding one column; its bounds (``min``, ``max``, ``min_exclusive``) are policy parameters."""

    def make(p: Mapping) -> Check:
        return _between(column, p["min"], p["max"], low_open=bool(p["min_exclusive"]))

    params = {"min": low, "max": high, "min_exclusive": low_open}
    return Rule(name, table, description, (column,), make(params), params=params, make=make)


def _not_after(first: str, second: str, *, slack: pd.Timedelta = pd.Timedelta(0)) -> Check:
    def check(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
        return _holds(df[first], df[second] + slack, operator.le)

    return check


def _in(column: str, allowed: Sequence) -> Check:
    allowed_set = list(allowed)

    def check(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
        values = df[column]
        return values.isna() | values.isin(allowed_set).fillna(False).astype(bool)

    return check


@cache
def _country_codes() -> frozenset[str]:
    return frozenset(c.alpha_2 for c in pycountry.countries)


@cache
def _currency_codes() -> frozenset[str]:
    return frozenset(c.alpha_3 for c in pycountry.currencies)


def _key_tuples(df: pd.DataFrame, key: Sequence[str]) -> pd.Series:
    if len(key) == 1:
        return df[key[0]].astype("object")
    return pd.Series(list(zip(*(df[k].astype("object") for k in key), strict=True)), index=df.index)


# --------------------------------------------------------------------------------------------------------
# generic rules, derived from the data model


def _required(table: Table) -> list[Rule]:
    """One ``required_field`` rule per required column, so a policy can relax one column (a deal's amount)."""

    def present(column: str) -> Check:
        def check(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
            ok = df[column].notna()
            if table.column(column).dtype == "string":
                ok &= df[column].str.strip().str.len().fillna(0) > 0
            return ok.astype(bool)

        return check

    return [Rule("required_field", table.name, f"{c} holds a value.", (c,), present(c)) for c in table.required_columns]


def _unique(table: Table) -> Rule:
    key = list(table.primary_key)

    def check(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
        repeated = ctx.duplicate_keys or set()
        return ~_key_tuples(df, key).map(repeated.__contains__).astype(bool)

    return Rule("unique_key", table.name,
                f"The key ({', '.join(key)}) occurs once in a load; every row sharing a repeated key is held.",
                tuple(key), check)


def _orphan(table: Table) -> list[Rule]:
    """One ``orphan`` rule per reference, so a warning empties only the reference that does not resolve."""

    def resolves(fk) -> Check:
        def check(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
            keys = ctx.parents(fk.parent).index
            if fk.parent == table.name:
                keys = keys.union(pd.Index(df[table.primary_key[0]].dropna()))
            return (df[fk.column].isna() | df[fk.column].isin(keys).fillna(False)).astype(bool)

        return check

    return [Rule("orphan", table.name,
                 f"{fk.column} resolves to a valid {fk.parent} row, stored or in this load; rows whose parent is "
                 "missing or quarantined are held.", (fk.column,), resolves(fk)) for fk in table.foreign_keys]


def _no_future(table: Table) -> list[Rule]:
    def before_end(column: str) -> Check:
        return lambda df, ctx: _holds(df[column], ctx.as_of_end, operator.lt)

    return [Rule("no_future_timestamp", table.name, f"{c.name} is not after the load's as-of date.", (c.name,),
                 before_end(c.name)) for c in table.columns if c.dtype in ("date", "timestamp") and not c.planned]


def _bounded_text(table: Table) -> list[Rule]:
    def fits(column: str, n: int) -> Check:
        return lambda df, ctx: _ok(df[column].str.len() <= n)

    return [Rule("bounded_text", table.name, f"{c.name} fits in {c.max_chars} characters.", (c.name,),
                 fits(c.name, c.max_chars)) for c in table.columns if c.max_chars]


def _vocabularies(table: Table) -> list[Rule]:
    rules: list[Rule] = []
    generic = []
    for c in table.columns:
        if c.allowed is None:
            continue
        if c.name in ("stage", "from_stage", "to_stage"):
            continue
        if c.name == "activity_type":
            rules.append(Rule("valid_activity_type", table.name,
                              f"activity_type is one of {', '.join(c.allowed)}.", (c.name,),
                              _in(c.name, c.allowed)))
        else:
            generic.append(c)
    stage_cols = [c.name for c in table.columns if c.name in ("stage", "from_stage", "to_stage")]
    if stage_cols:
        def stage_check(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
            ok = pd.Series(True, index=df.index)
            for c in stage_cols:
                ok &= _in(c, STAGES)(df, ctx)
            return ok

        rules.append(Rule("valid_stage", table.name,
                          f"{', '.join(stage_cols)} name a stage of the stage machine ({', '.join(STAGES)}).",
                          tuple(stage_cols), stage_check))
    rules += [Rule("allowed_value", table.name, f"{c.name} is one of {', '.join(map(str, c.allowed))}.", (c.name,),
                   _in(c.name, c.allowed)) for c in generic]
    return rules


def _codes(table: Table) -> list[Rule]:
    rules = []
    if "country" in table.column_index:
        rules.append(Rule("valid_country_code", table.name, "country is an ISO 3166-1 alpha-2 code.",
                          ("country",), lambda df, ctx: _in("country", sorted(_country_codes()))(df, ctx)))
    if "currency" in table.column_index:
        rules.append(Rule("valid_currency_code", table.name, "currency is an ISO 4217 code.", ("currency",),
                          lambda df, ctx: _in("currency", sorted(_currency_codes()))(df, ctx)))
    if "email" in table.column_index:
        rules.append(Rule("valid_email", table.name, "email looks like name@domain.tld.", ("email",),
                          lambda df, ctx: _ok(df["email"].str.match(_EMAIL.pattern))))
    return rules


def generic_rules(table: Table) -> list[Rule]:
    """The rules every table gets from its definition in the data model.

    Args:
        table: a canonical table or a task table.

    Returns:
        ``type_mismatch``, ``required_field``, ``unique_key``, and where the table has what they check:
        ``orphan``, ``no_future_timestamp``, ``bounded_text``, vocabulary and code rules.
    """
    typed = [c.name for c in table.columns if c.dtype != "string"]
    rules = [
        Rule("type_mismatch", table.name,
             f"Values parse as their column's type ({', '.join(f'{c.name}: {c.dtype}' for c in table.columns if c.dtype != 'string')}); "
             "numbers are finite, dates ISO 8601.", tuple(typed), judges=()),
        *_required(table),
        _unique(table),
    ]
    rules += _orphan(table)
    rules += _no_future(table) + _bounded_text(table)
    rules += _vocabularies(table)
    rules += _codes(table)
    return rules


# --------------------------------------------------------------------------------------------------------
# table-specific rules


def _manager_is_manager(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    people = ctx.parents("sales_reps")["role"]
    stored = people[~people.index.isin(df["rep_id"])]
    own = df.set_index("rep_id")["role"]
    people = pd.concat([stored.astype("object"), own.astype("object")]) if len(stored) else own
    people = people[~people.index.duplicated(keep="last")]
    role = df["manager_id"].map(people)
    return df["manager_id"].isna() | role.isna() | role.isin(["manager", "director"]).fillna(False).astype(bool)


def _parent_not_self(key: str, parent: str) -> Check:
    return lambda df, ctx: _ok(df[key] != df[parent])


def _customer_since_after_founded(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    return _holds(df["customer_since"].dt.year, df["founded_year"].astype("float64"), operator.ge)


def _founded_year(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    year = df["founded_year"]
    return _ok((year >= 1800) & (year <= ctx.as_of.year))


def _outcome_matches_stage(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    expected = df["stage"].astype("object").map(OUTCOME_OF_STAGE)
    outcome = df["outcome"].astype("object")
    return (expected.isna() & outcome.isna()) | (expected == outcome).fillna(False)


def _closed_at_matches_stage(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    closed = df["stage"].isin(CLOSED_STAGES).fillna(False).astype(bool)
    return (closed == df["closed_at"].notna()) | df["stage"].isna()


def _history_sequence(df: pd.DataFrame, ctx: RuleContext) -> pd.DataFrame:
    """This load's history rows plus stored rows of the same deals, in time order per deal."""
    own = df.assign(_new=True, _row=df.index)
    stored = ctx.stored_rows("opportunity_stage_history", "opportunity_id",
                             df["opportunity_id"].dropna().unique().tolist())
    if len(stored):
        stored = stored[~stored["history_id"].isin(df["history_id"])]
        if len(stored):
            stored = stored[list(df.columns)].astype(df.dtypes.to_dict()).assign(_new=False, _row=-1)
            own = pd.concat([own, stored], ignore_index=True)
    return own.sort_values(["opportunity_id", "changed_at"], kind="stable")


def _history_continuous(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    seq = _history_sequence(df, ctx)
    same = seq["opportunity_id"].eq(seq["opportunity_id"].shift())
    prev_to = seq["to_stage"].shift()
    broken = same & seq["from_stage"].ne(prev_to).fillna(True)
    broken &= seq["_new"]
    bad_rows = seq.loc[broken, "_row"]
    return pd.Series(~df.index.isin(bad_rows), index=df.index)


def _history_ends_at_current_stage(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    seq = _history_sequence(df, ctx)
    last = seq.drop_duplicates("opportunity_id", keep="last")
    current = last["opportunity_id"].map(ctx.parents("opportunities")["stage"])
    broken = last["_new"] & current.notna() & (last["to_stage"] != current).fillna(False)
    return pd.Series(~df.index.isin(last.loc[broken, "_row"]), index=df.index)


def _legal_transition(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    kind = classify_transitions(df["from_stage"], df["to_stage"])
    return kind.notna() | df["to_stage"].isna()


def _change_within_life(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    opps = ctx.parents("opportunities")
    created = df["opportunity_id"].map(opps["created_at"])
    closed = df["opportunity_id"].map(opps["closed_at"])
    at = df["changed_at"]
    return _holds(at, created.dt.floor("D"), operator.ge) & _holds(at, closed, operator.le)


def _links_same_account(links: Sequence[tuple[str, str]]) -> Check:
    def check(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
        ok = pd.Series(True, index=df.index)
        for column, parent in links:
            owner = df[column].map(ctx.parents(parent)["account_id"])
            ok &= _holds(owner.astype("object"), df["account_id"].astype("object"), operator.eq)
        return ok

    return check


def _quantity_sign(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    status = df["order_id"].map(ctx.parents("orders")["status"]).astype("object")
    negative = df["quantity"].astype("float64") < 0
    return _holds(negative, status.eq("cancelled").where(status.notna()), operator.eq) | df["quantity"].isna()


def _quantity_in_range(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    qty = df["quantity"].abs()
    return _ok((qty >= 1) & (qty <= 1_000_000))


def _price_bounds(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    le = operator.le
    return (_holds(df["price_floor"], df["list_price"], le) & _holds(df["list_price"], df["price_ceiling"], le)
            & _holds(df["price_floor"], df["price_ceiling"], le))


def _positive_prices(columns: Sequence[str], *, cost: str | None = None) -> Check:
    def check(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
        ok = pd.Series(True, index=df.index)
        for c in columns:
            ok &= _between(c, 0, 10_000_000, low_open=True)(df, ctx)
        if cost:
            ok &= _between(cost, 0, 10_000_000)(df, ctx)
        return ok

    return check


def _non_blank(column: str) -> Check:
    return lambda df, ctx: _ok(df[column].str.strip().str.len() > 0)


def _news_subject(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    about_account = df["subject_type"] == "account"
    about_competitor = df["subject_type"] == "competitor"
    ok = ~about_account.fillna(False) | df["account_id"].notna()
    ok &= ~about_competitor.fillna(False) | (df["competitor"].notna() & df["account_id"].isna())
    return ok.astype(bool)


def _sales_in_range(df: pd.DataFrame, ctx: RuleContext) -> pd.Series:
    return (_between("units", 0, 1e12)(df, ctx) & _between("revenue", 0, 1e13)(df, ctx)
            & _between("avg_price", 0, 1e7, low_open=True)(df, ctx))


def _specific_rules() -> list[Rule]:
    R = Rule
    return [
        R("manager_is_manager", "sales_reps", "A person's manager has role manager or director.", ("manager_id",),
          _manager_is_manager),
        R("parent_not_self", "sales_reps", "Nobody is their own manager.", ("rep_id", "manager_id"),
          _parent_not_self("rep_id", "manager_id")),
        R("parent_not_self", "accounts", "An account is not its own parent.", ("account_id", "parent_account_id"),
          _parent_not_self("account_id", "parent_account_id")),
        R("founded_year_in_range", "accounts", "founded_year is between 1800 and the as-of year.",
          ("founded_year",), _founded_year),
        R("customer_since_after_founded", "accounts", "An account became a customer no earlier than founded.",
          ("customer_since", "founded_year"), _customer_since_after_founded),
        _range("annual_revenue_in_range", "accounts", "annual_revenue is between 0 and 10^13.", "annual_revenue",
               0, 1e13),
        R("contact_left_after_started", "contacts", "A contact leaves no earlier than they started.",
          ("started_at", "left_at"), _not_after("started_at", "left_at")),
        _range("amount_in_range", "opportunities", "amount is above 0 and at most 10^9.", "amount", 0, 1e9,
               low_open=True),
        _range("discount_in_range", "opportunities", "discount is a fraction between 0 and 0.9.", "discount", 0, 0.9),
        R("closed_after_created", "opportunities", "closed_at is not before created_at.",
          ("created_at", "closed_at"), _not_after("created_at", "closed_at")),
        R("expected_close_after_created", "opportunities", "expected_close is not before the creation day.",
          ("created_at", "expected_close"), lambda df, ctx: _holds(df["expected_close"], df["created_at"].dt.floor("D"), operator.ge)),
        R("outcome_matches_stage", "opportunities",
          "outcome is won for closed_won, lost for closed_lost, and empty for open stages.", ("stage", "outcome"),
          _outcome_matches_stage),
        R("closed_at_matches_stage", "opportunities", "closed_at is set exactly when the stage is closed.",
          ("stage", "closed_at"), _closed_at_matches_stage),
        R("legal_stage_transition", "opportunity_stage_history",
          "from_stage -> to_stage is allowed by the stage machine (see `salesml data stages`).",
          ("from_stage", "to_stage"), _legal_transition),
        R("stage_history_continuous", "opportunity_stage_history",
          "Each change starts from the stage the previous change of the deal ended in.",
          ("opportunity_id", "from_stage", "changed_at"), _history_continuous),
        R("stage_change_within_opportunity_life", "opportunity_stage_history",
          "A change happens between the deal's creation day and its close.", ("opportunity_id", "changed_at"),
          _change_within_life),
        R("history_ends_at_current_stage", "opportunity_stage_history",
          "A deal's latest change ends in the deal's current stage.", ("opportunity_id", "to_stage"),
          _history_ends_at_current_stage),
        R("links_same_account", "activities",
          "The activity's opportunity and contact belong to the activity's account.",
          ("account_id", "opportunity_id", "contact_id"),
          _links_same_account([("opportunity_id", "opportunities"), ("contact_id", "contacts")])),
        R("links_same_account", "support_tickets", "The ticket's contact belongs to the ticket's account.",
          ("account_id", "contact_id"), _links_same_account([("contact_id", "contacts")])),
        R("price_in_range", "products", "Prices are above 0 and at most 10^7; unit_cost is 0 or more.",
          ("unit_cost", "list_price", "price_floor", "price_ceiling"),
          _positive_prices(["list_price", "price_floor", "price_ceiling"], cost="unit_cost")),
        R("price_bounds_ordered", "products", "price_floor <= list_price <= price_ceiling.",
          ("price_floor", "list_price", "price_ceiling"), _price_bounds),
        R("price_in_range", "price_changes", "list_price is above 0 and at most 10^7.", ("list_price",),
          _positive_prices(["list_price"])),
        _range("discount_in_range", "promotions", "discount_pct is a fraction between 0 and 0.9.", "discount_pct",
               0, 0.9),
        R("promotion_period_ordered", "promotions", "end_date is not before start_date.",
          ("start_date", "end_date"), _not_after("start_date", "end_date")),
        R("inventory_in_range", "inventory", "on_hand and on_order are between 0 and 10^9.",
          ("on_hand", "on_order"),
          lambda df, ctx: _between("on_hand", 0, 1e9)(df, ctx) & _between("on_order", 0, 1e9)(df, ctx)),
        R("price_in_range", "competitor_prices", "price is above 0 and at most 10^7.", ("price",),
          _positive_prices(["price"])),
        R("quantity_in_range", "order_lines", "quantity is a whole number of units, 1 to 10^6 in size.",
          ("quantity",), _quantity_in_range),
        R("quantity_sign_matches_status", "order_lines",
          "quantity is negative exactly on cancelled orders (returns) and positive otherwise.",
          ("order_id", "quantity"), _quantity_sign),
        _range("unit_price_in_range", "order_lines", "unit_price is above 0 and at most 10^7.", "unit_price", 0, 1e7,
               low_open=True),
        _range("discount_in_range", "order_lines", "discount is a fraction between 0 and 0.9.", "discount", 0, 0.9),
        _range("csat_in_range", "support_tickets", "csat is between 1 and 5.", "csat", 1, 5),
        R("resolved_after_created", "support_tickets", "resolved_at is not before created_at.",
          ("created_at", "resolved_at"), _not_after("created_at", "resolved_at")),
        R("non_blank_text", "support_tickets", "text is not only white space.", ("text",), _non_blank("text")),
        _range("budget_change_in_range", "budget_signals", "budget_change_pct is between -100 and 500.",
               "budget_change_pct", -100, 500),
        R("news_subject_consistent", "news_signals",
          "News about an account names the account; news about a competitor names the competitor and no account.",
          ("subject_type", "account_id", "competitor"), _news_subject),
        R("non_blank_text", "news_signals", "text is not only white space.", ("text",), _non_blank("text")),
        R("sales_in_range", "sales_periods", "units and revenue are 0 or more; avg_price is above 0.",
          ("units", "revenue", "avg_price"), _sales_in_range),
    ]


#: Rules that judge how a row's values fit together rather than one value: a warning stores the row as it is.
CONSISTENCY_RULES = frozenset({
    "unique_key", "manager_is_manager", "parent_not_self", "customer_since_after_founded",
    "contact_left_after_started", "closed_after_created", "expected_close_after_created", "outcome_matches_stage",
    "closed_at_matches_stage", "legal_stage_transition", "stage_history_continuous",
    "stage_change_within_opportunity_life", "history_ends_at_current_stage", "links_same_account",
    "price_bounds_ordered", "promotion_period_ordered", "quantity_sign_matches_status", "news_subject_consistent",
})


def _judging(rules: Sequence[Rule]) -> list[Rule]:
    return [replace(r, judges=()) if r.name in CONSISTENCY_RULES and r.judges is None else r for r in rules]


def specific_rules(table_name: str) -> list[Rule]:
    """The rules of one canonical table beyond those its definition gives (``generic_rules``)."""
    return _judging([r for r in _specific_rules() if r.table == table_name])


@cache
def canonical_rules() -> tuple[Rule, ...]:
    """Every rule on the canonical tables, generic ones first, table by table, all blocking (the data model's
    standards before any governance policy, ``features.governance``, sets severities)."""
    rules: list[Rule] = []
    for table in TABLES.values():
        rules += _judging(generic_rules(table))
        rules += specific_rules(table.name)
    return tuple(rules)


def rules_for(table: Table, extra: Sequence[Rule] = ()) -> list[Rule]:
    """The rules that apply to ``table`` (a canonical table, or a task table with its ``extra`` rules), as the data
    model defines them: every one blocking."""
    if table.name in TABLES and table == TABLES[table.name]:
        return [r for r in canonical_rules() if r.table == table.name]
    if table.name in TABLES:
        return _judging(generic_rules(table)) + specific_rules(table.name)
    return _judging(generic_rules(table)) + list(extra)


# --------------------------------------------------------------------------------------------------------
# validation


def build_schema(table: Table, rules: Sequence[Rule], ctx: RuleContext) -> pa.DataFrameSchema:
    """The pandera schema of ``table``: canonical dtypes, and one check per rule.

    Args:
        table: the table.
        rules: its rules (``type_mismatch`` is applied by parsing, not here).
        ctx: what cross-table rules may read.

    Returns:
        A ``DataFrameSchema`` whose failure cases name the rules as ``<name>@<position in rules>`` (a rule name
        can have several instances: ``required_field`` has one per column).
    """
    columns = {c.name: pa.Column(PANDAS_DTYPES[c.dtype], nullable=True) for c in table.columns}
    checks = [
        pa.Check(lambda df, _rule=rule: _rule.check(df, ctx), name=f"{rule.name}@{i}", ignore_na=False)
        for i, rule in enumerate(rules)
        if rule.check is not None
    ]
    return pa.DataFrameSchema(columns, checks=checks, strict=True, name=table.name)


def _describe(rule: Rule, rows: pd.DataFrame) -> pd.Series:
    if not rule.columns:
        return pd.Series(rule.name, index=rows.index)
    parts = [f"{c}=" + rows[c].astype("object").map(lambda v: "empty" if pd.isna(v) else repr(str(v)[:60]))
             for c in rule.columns if c in rows.columns]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + ", " + part
    return f"{rule.name}: " + joined


def _problem_frame(index: pd.Index | None = None) -> pd.DataFrame:
    index = pd.Index([], dtype="int64") if index is None else index
    return pd.DataFrame({"rules": pd.Series(dtype=object, index=index), "detail": pd.Series(dtype=object, index=index),
                         "record": pd.Series(dtype=object, index=index)})


def matches(conditions: Mapping[str, Sequence], rows: pd.DataFrame) -> pd.Series:
    """Rows whose columns hold one of the listed values, for every listed column (``None`` matches empty)."""
    ok = pd.Series(True, index=rows.index)
    for column, values in conditions.items():
        listed = [v for v in values if v is not None]
        hit = rows[column].astype("object").isin(listed).fillna(False).astype(bool)
        if any(v is None for v in values):
            hit |= rows[column].isna().astype(bool)
        ok &= hit
    return ok


def _warned(rule: Rule, rows: pd.DataFrame) -> pd.Series:
    """Which of the rows breaking ``rule`` are stored with a warning rather than quarantined."""
    if rule.warning is True:
        return pd.Series(True, index=rows.index)
    if not rule.warning:
        return pd.Series(False, index=rows.index)
    return matches(rule.warning, rows)


def find_repeats(frame: pd.DataFrame, table: Table) -> tuple[pd.Index, dict, set]:
    """Rows that repeat a key: exact repeats (one record) and keys whose rows conflict.

    Keys are parsed into their canonical types (``2024-01-01`` and ``2024-01-01T00:00:00`` are one date); values
    are compared as written.

    Returns:
        The index of every row that repeats an earlier row exactly, a map from each such row to the first row it
        repeats, and the keys (tuples for composite keys) whose rows differ.
    """
    key = list(table.primary_key)
    parsed = pd.DataFrame({k: parse_column(frame[k] if k in frame.columns else
                                           pd.Series(pd.NA, index=frame.index, dtype="object"),
                                           table.column(k))[0] for k in key}, index=frame.index)
    tuples = _key_tuples(parsed, key)
    repeated = tuples.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return pd.Index([], dtype=frame.index.dtype), {}, set()
    rows = frame[repeated]
    hashes = pd.util.hash_pandas_object(rows.astype("string"), index=False)
    pairs = pd.DataFrame({"key": tuples[repeated].map(repr).to_numpy(), "hash": hashes.to_numpy(),
                          "row": rows.index}, index=rows.index)
    first_of = pairs.groupby(["key", "hash"], sort=False)["row"].transform("first")
    exact = first_of[first_of.to_numpy() != pairs["row"].to_numpy()]
    versions = pairs.drop_duplicates(["key", "hash"]).groupby("key", sort=False).size()
    conflicting_repr = set(versions.index[versions > 1])
    conflicting = set(tuples[repeated][pairs["key"].isin(conflicting_repr).to_numpy()])
    return exact.index, exact.to_dict(), conflicting


def validate_table(frame: pd.DataFrame, table: Table, ctx: RuleContext, rules: Sequence[Rule] | None = None
                   ) -> Validation:
    """Validate the rows of one source frame against the data standards of ``table``.

    Rows that repeat an earlier row exactly are one record: they are dropped (``repeats``) before validation.
    A row that breaks a blocking standard is quarantined; one that breaks only warnings is stored and flagged,
    with the values those warnings judged set to missing.

    Args:
        frame: raw rows, indexed by their position in the source (used for source lines).
        table: the canonical (or task) table the rows are for.
        ctx: the load's as-of date and the parents cross-table rules read.
        rules: the rules to apply; default: every rule of the table under the default governance.

    Returns:
        The valid rows, parsed, the quarantined rows with the rules they broke, and the flagged rows.
    """
    rules = list(rules) if rules is not None else rules_for(table)
    if not any(r.name == "type_mismatch" for r in rules):
        # Parsing applies it whatever the list says: a value that does not parse is never stored as missing.
        rules.append(Rule("type_mismatch", table.name, "Values parse as their column's type.", judges=()))
    repeats = pd.Index([], dtype=frame.index.dtype)
    if ctx.duplicate_keys is None:
        repeats, _, conflicting = find_repeats(frame, table)
        frame = frame.drop(index=repeats)
        ctx = replace(ctx, duplicate_keys=conflicting)
    parsed, type_problems = parse_frame(frame, table)
    broken: dict[int, list[pd.Index]] = {}
    type_rule = next((i for i, r in enumerate(rules) if r.name == "type_mismatch"), None)
    held_for_type = type_problems.index
    if len(type_problems) and type_rule is not None:
        broken.setdefault(type_rule, []).append(type_problems.index)
        warned = _warned(rules[type_rule], parsed.loc[type_problems.index])
        held_for_type = type_problems.index[~warned.to_numpy()]
    candidates = parsed.drop(index=held_for_type)
    if len(held_for_type):
        # Rows held for a bad value still count as sharing a repeated key.
        for i, rule in enumerate(rules):
            if rule.name == "unique_key" and rule.check is not None:
                held = parsed.loc[held_for_type]
                repeated = held.index[~rule.check(held, ctx).to_numpy()]
                if len(repeated):
                    broken.setdefault(i, []).append(repeated)
    if len(candidates):
        schema = build_schema(table, rules, ctx)
        try:
            schema.validate(candidates, lazy=True, inplace=True)
        except pa.errors.SchemaErrors as errors:
            cases = errors.failure_cases
            known = {f"{r.name}@{i}" for i, r in enumerate(rules)}
            unexpected = cases[~cases["check"].isin(known)]
            if len(unexpected):
                raise RuntimeError(f"schema of {table.name} failed outside its rules:\n{unexpected}") from None
            cases = cases.dropna(subset=["index"]).drop_duplicates(["check", "index"])
            for name, group in cases.groupby("check"):
                broken.setdefault(int(str(name).rsplit("@", 1)[1]), []).append(pd.Index(group["index"]))
    blocking: dict[int, pd.Index] = {}
    warnings: dict[int, pd.Index] = {}
    for i, indexes in broken.items():
        index = (indexes[0].append(indexes[1:]) if len(indexes) > 1 else indexes[0]).unique()
        warned = _warned(rules[i], parsed.loc[index]).to_numpy()
        if warned.any():
            warnings[i] = index[warned]
        if (~warned).any():
            blocking[i] = index[~warned]
    unique_rule = next((i for i, r in enumerate(rules) if r.name == "unique_key"), None)
    orphan_rule = len(rules)  # the held children's own entry (below), whichever reference holds them
    children = _hold_children_of_held(frame, parsed, table, list(blocking.values()))
    if len(children):
        blocking[orphan_rule] = children
    held_rules = [*rules, Rule("orphan", table.name, "", ())]
    quarantined = _problems(frame, parsed, held_rules, blocking, type_problems, type_rule)
    stored = parsed.drop(index=quarantined.index)
    warnings = {i: idx.difference(quarantined.index) for i, idx in warnings.items() if i != unique_rule}
    warnings = {i: idx for i, idx in warnings.items() if len(idx)}
    flagged = _problems(frame, parsed, held_rules, warnings, type_problems, type_rule)
    for i, index in warnings.items():
        judged = [c for c in held_rules[i].judged_columns if c in stored.columns]
        if judged:
            stored.loc[index, judged] = None
    return Validation(valid=stored, quarantined=quarantined, flagged=flagged, repeats=repeats)


def _problems(frame: pd.DataFrame, parsed: pd.DataFrame, rules: Sequence[Rule], broken: Mapping[int, pd.Index],
              type_problems: pd.DataFrame, type_rule: int | None) -> pd.DataFrame:
    """One row per source row that broke some of the rules: their names, what was wrong, the raw record."""
    by_row: dict[object, list[str]] = {}
    details: dict[object, list[str]] = {}
    for i, index in broken.items():
        rule = rules[i]
        if i == type_rule:
            texts = type_problems.loc[index, "detail"]
        elif not rule.description:  # the orphan added for children of held parents in the same table
            texts = pd.Series("orphan: its parent in this table is held", index=index)
        else:
            texts = _describe(rule, parsed.loc[index])
        for row, text in zip(index, texts, strict=True):
            by_row.setdefault(row, []).append(rule.name)
            details.setdefault(row, []).append(text)
    bad_index = pd.Index(list(by_row), dtype=frame.index.dtype)
    if not len(bad_index):
        return _problem_frame(bad_index)
    out = pd.DataFrame(
        {
            "rules": [",".join(sorted(set(by_row[i]))) for i in bad_index],
            "detail": ["; ".join(details[i]) for i in bad_index],
        },
        index=bad_index,
    )
    out["record"] = records_json(frame.loc[bad_index])
    return out.sort_index()


def _hold_children_of_held(frame: pd.DataFrame, parsed: pd.DataFrame, table: Table, parts: list[pd.Index]
                           ) -> pd.Index:
    """Rows whose parent in the same table (a manager, a parent account) is held: they are held as ``orphan``."""
    self_refs = [fk.column for fk in table.foreign_keys if fk.parent == table.name]
    children = pd.Index([], dtype=frame.index.dtype)
    if not self_refs:
        return children
    key = table.primary_key[0]
    parts = [idx for idx in parts if len(idx)]
    held = parts[0].append(parts[1:]).unique() if parts else pd.Index([], dtype=frame.index.dtype)
    while True:
        held_keys = frame.loc[held, key].dropna().astype(str)
        ok_rows = parsed.index.difference(held)
        found = []
        for column in self_refs:
            refs = parsed.loc[ok_rows, column]
            found.append(refs.index[refs.isin(held_keys).fillna(False).astype(bool)])
        newly = found[0].append(found[1:]).unique()
        if not len(newly):
            return children
        children = children.append(newly).unique()
        held = held.append(newly).unique()


def records_json(rows: pd.DataFrame) -> pd.Series:
    """Each raw row as JSON text (see ``row_json``), indexed like ``rows``."""
    return rows.astype("object").where(rows.notna(), None).apply(row_json, axis=1)


def row_json(row: pd.Series) -> str:
    """A raw row as JSON text, every value a string (missing: null): how quarantine and flags keep records."""
    return json.dumps({k: (None if v is None else str(v)) for k, v in row.items()}, ensure_ascii=False)


def describe_rules(rules: Sequence[Rule] | None = None) -> list[dict]:
    """Rules as ``{"name", "table", "columns", "severity", "description"}``, for ``salesml data standards``.

    Args:
        rules: the rules to describe; default: every canonical rule as the data model defines it.
    """
    out = []
    for r in canonical_rules() if rules is None else rules:
        if r.warning is True:
            severity = "warning"
        elif r.warning:
            severity = "warning when " + "; ".join(
                f"{c} is {' or '.join('empty' if v is None else str(v) for v in vs)}" for c, vs in r.warning.items())
        else:
            severity = "blocking"
        out.append({"name": r.name, "table": r.table, "columns": list(r.columns), "severity": severity,
                    "description": r.description})
    return out

"""A B2B sales-organisation simulator: the embedded default data, with ground truth.

``simulate_organisation`` is a pure step: from a ``SimulationConfig`` it returns every canonical table plus a
separate ground-truth set that no feature may read. It is vectorised (numpy over accounts, deals and order
lines, one loop over weeks) and deterministic for a seed.

Mechanisms the models must find (coefficients in ``Mechanisms``):

* Opportunity loss. Each week an open deal may be *decided lost* with a hazard that rises when meetings and
  inbound e-mails fall (last 4 weeks against the 4 before), no meeting in 30 days, a decision maker of the
  account left in the last 90 days, the account's budget was cut in the last 90 days, negative competitor news
  hit the region in the last 30 days, the deal stalls in its stage, or a high discount was requested. A
  decided deal goes quiet and is recorded ``closed_lost`` 5 to 9 weeks later, so the signals precede the close
  by at least 30 days. Ground truth: each open deal's probability of closing lost within 90 days at every month
  end, from the latent state (including a decision already taken) with the hazards held at that month end.
* Customer churn. A latent segment sets order rate, basket, price sensitivity, complaint rate and base churn
  hazard; service-problem episodes raise ticket rate, negative ticket text and low CSAT; list price increases
  raise churn for price-sensitive accounts. A churned account orders no more. Ground truth: each customer's
  probability of no order in the next 90 days at every month end.
* Demand. Expected units of product p in week w are proportional to
  ``seasonality * promotion lift * (price / reference price) ** elasticity * (competitor price / price) **
  competitor elasticity``; orders draw Poisson quantities from it and limited inventory cuts what is sold.
  Elasticities are in ground truth.
* Segments: five latent segments (high_value_loyal, price_sensitive, at_risk, new, occasional), in ground truth.
* Text: ticket and news texts from templates with positive, neutral and negative wording (labels in ground
  truth).
* Scenarios: ``competitor_entry@YYYY-MM:REGION`` (from that month the region's loss hazard, discount pressure
  and negative competitor news rise, a new competitor prices 10-20% below us there, and it takes price-sensitive
  deals, those asking a discount above 20%, at about a sixth a week: such a deal keeps engaging with us until
  it signs elsewhere 2 to 5 weeks later, so the warning signs a model learnt before the entry do not show); ``biased_history``
  (in the first half of the window, 35% of won deals of small accounts are recorded as lost: label bias a
  fairness audit must catch), or ``biased_history@YYYY-MM`` (the same bias, arriving with that month's export, as
  a CRM migration that rewrites past outcomes would: ``unbiased_tables`` gives the tables as recorded before it);
  ``price_shock@YYYY-MM`` (list prices jump 15% that month).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, field_validator
from scipy.stats import poisson

from features.model import (
    CONTACT_CHANNELS,
    CREDIT_RATINGS,
    EMPLOYEE_BANDS,
    PAYMENT_TERMS,
    REGIONS,
    TABLES,
    TICKET_CHANNELS,
)
from features.sources.texts import (
    ACCOUNT_NEWS_TEMPLATES,
    COMPETITOR_NEWS_TEMPLATES,
    SENTIMENTS,
    TICKET_TEMPLATES,
    fill_templates,
)
from features.stages import Stage

SEGMENTS = ("high_value_loyal", "price_sensitive", "at_risk", "new", "occasional")
STAGE_CODES = (Stage.LEAD, Stage.QUALIFIED, Stage.PROPOSAL, Stage.NEGOTIATION)
CATEGORIES = ("Hardware", "Software", "Consumables", "Services", "Accessories")
PRODUCT_LINE_OF_CATEGORY = {
    "Hardware": "Devices",
    "Software": "Platform",
    "Consumables": "Supplies",
    "Services": "Services",
    "Accessories": "Devices",
}
OPPORTUNITY_LINES = ("Platform", "Analytics", "Devices", "Services", "Supplies")
COMPETITORS = ("Northwind", "Contoso", "Globex", "Umbrella")
ENTRANT = "Initech"
LEAD_SOURCES = ("inbound", "outbound", "partner", "event", "referral")
COUNTRIES = {
    "NA": (("US", "USD", 0.8), ("CA", "CAD", 0.15), ("MX", "MXN", 0.05)),
    "EMEA": (("GB", "GBP", 0.25), ("DE", "EUR", 0.25), ("FR", "EUR", 0.15), ("NL", "EUR", 0.1),
             ("ES", "EUR", 0.08), ("SE", "SEK", 0.07), ("ZA", "ZAR", 0.05), ("AE", "AED", 0.05)),
    "APAC": (("JP", "JPY", 0.25), ("AU", "AUD", 0.25), ("SG", "SGD", 0.15), ("IN", "INR", 0.2),
             ("KR", "KRW", 0.15)),
    "LATAM": (("BR", "BRL", 0.45), ("AR", "ARS", 0.15), ("CL", "CLP", 0.2), ("CO", "COP", 0.2)),
}
REGION_WEIGHTS = np.array([0.4, 0.3, 0.2, 0.1])
INDUSTRIES = {
    "Manufacturing": ("Automotive", "Industrial equipment", "Electronics"),
    "Retail": ("Grocery", "Fashion", "E-commerce"),
    "Healthcare": ("Hospitals", "Pharma", "Medical devices"),
    "Financial services": ("Banking", "Insurance", "Asset management"),
    "Technology": ("Software", "IT services", "Telecom"),
    "Logistics": ("Freight", "Warehousing", "Last mile"),
    "Public sector": ("Local government", "Education", "Defence"),
}
FIRST_NAMES = np.array(["Ana", "Ben", "Chen", "Dana", "Eli", "Farah", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena",
                        "Mo", "Nia", "Omar", "Pia", "Quinn", "Ravi", "Sara", "Tom", "Uma", "Vik", "Wen", "Yara"])
LAST_NAMES = np.array(["Ali", "Brown", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jensen",
                       "Kim", "Lopez", "Meyer", "Novak", "Okafor", "Patel", "Rossi", "Silva", "Tanaka", "Weber"])
NAME_A = np.array(["Blue", "North", "Bright", "Silver", "Prime", "Green", "Rapid", "Summit", "Urban", "Atlas",
                   "Nova", "Delta", "Pioneer", "Harbor", "Apex", "Crest"])
NAME_B = np.array(["River", "Peak", "Stone", "Field", "Bridge", "Wave", "Forge", "Grove", "Point", "Gate",
                   "Works", "Labs", "Systems", "Logistics", "Foods", "Health"])
NAME_C = np.array(["Ltd", "Inc", "GmbH", "Group", "Holdings", "Partners", "Co", "AG", "SA", "plc"])
CONTACT_ROLES = np.array(["Procurement manager", "IT director", "Operations lead", "Finance manager", "Engineer",
                          "Analyst", "Office manager", "Project manager"])
DM_ROLES = np.array(["Chief executive", "Chief financial officer", "VP operations", "Head of procurement",
                     "Chief information officer"])


class Scenario(BaseModel):
    """A scenario switched on for the simulation (see the module docstring)."""

    kind: Literal["competitor_entry", "biased_history", "price_shock"]
    month: date | None = None
    region: str | None = None

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """Parse ``competitor_entry@YYYY-MM:REGION``, ``biased_history[@YYYY-MM]`` or ``price_shock@YYYY-MM``.

        Raises:
            ValueError: naming the accepted forms.
        """
        forms = "competitor_entry@YYYY-MM:REGION, biased_history, biased_history@YYYY-MM, price_shock@YYYY-MM"
        m = re.fullmatch(r"(competitor_entry)@(\d{4})-(\d{2}):(\w+)", text)
        if m:
            region = m.group(4).upper()
            if region not in REGIONS:
                raise ValueError(f"scenario {text!r}: region must be one of {', '.join(REGIONS)}")
            return cls(kind="competitor_entry", month=date(int(m.group(2)), int(m.group(3)), 1), region=region)
        m = re.fullmatch(r"(price_shock|biased_history)@(\d{4})-(\d{2})", text)
        if m:
            return cls(kind=m.group(1), month=date(int(m.group(2)), int(m.group(3)), 1))
        if text == "biased_history":
            return cls(kind="biased_history")
        raise ValueError(f"unknown scenario {text!r}; accepted forms: {forms}")

    def label(self) -> str:
        """The scenario as written on the command line."""
        if self.kind == "competitor_entry":
            return f"competitor_entry@{self.month:%Y-%m}:{self.region}"
        if self.month is not None:
            return f"{self.kind}@{self.month:%Y-%m}"
        return self.kind


class Mechanisms(BaseModel):
    """Coefficients of the simulated mechanisms (log-odds per week unless said otherwise)."""

    loss_base: float = -4.7
    loss_activity_drop: float = 1.2
    loss_no_meeting_30d: float = 0.6
    loss_dm_departure: float = 1.4
    loss_budget_cut: float = 1.1
    loss_competitor_news: float = 0.35
    loss_stall: float = 0.9
    loss_high_discount: float = 1.0
    loss_quality: float = -0.4
    loss_competitor_entry: float = 0.8
    #: The entrant's own pull: weekly log-odds that it takes an open deal of its region whose discount request is
    #: above ``entrant_discount`` (price-sensitive buyers), and the same for the others. A deal it takes keeps
    #: engaging with us until it signs elsewhere, 2 to 5 weeks later: the old warning signs do not show.
    entrant_price_sensitive: float = -1.5
    entrant_other: float = -5.0
    entrant_discount: float = 0.2
    loss_close_delay_weeks: int = 10
    loss_close_delay_extra: float = 1.0
    loss_close_delay_max: int = 12
    stale_weeks: int = 40
    biased_history_flip: float = 0.35
    churn_negative_ticket: float = 1.0
    churn_many_tickets: float = 0.5
    churn_low_csat: float = 0.9
    churn_price_increase: float = 8.0
    price_shock: float = 0.15


class SimulationConfig(BaseModel):
    """What to simulate."""

    accounts: int = Field(2000, ge=20, le=2_000_000, description="Number of accounts.")
    months: int = Field(24, ge=3, le=120, description="Length of the window in months.")
    seed: int = Field(7, description="Random seed; the same seed gives the same data.")
    start: date = Field(date(2024, 1, 1), description="First day of the window.")
    scenarios: list[Scenario] = Field(default_factory=list)
    accounts_per_rep: int = Field(40, ge=5)
    reps_per_team: int = Field(6, ge=2)
    products: int = Field(40, ge=5, le=5000)
    mechanisms: Mechanisms = Field(default_factory=Mechanisms)

    @field_validator("scenarios", mode="before")
    @classmethod
    def _parse_scenarios(cls, value: object) -> object:
        if isinstance(value, list):
            return [Scenario.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @property
    def end(self) -> pd.Timestamp:
        """First day after the window."""
        return pd.Timestamp(self.start) + pd.DateOffset(months=self.months)


@dataclass
class SimulatedOrganisation:
    """Every canonical table of the simulated organisation, and ground truth kept apart from it."""

    tables: dict[str, pd.DataFrame]
    ground_truth: dict[str, pd.DataFrame]
    config: SimulationConfig
    notes: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ helpers


def _ids(prefix: str, n: int, width: int, start: int = 1) -> pd.Series:
    numbers = pa.array(np.arange(start, start + n, dtype=np.int64)).cast(pa.string())
    padded = pc.utf8_lpad(numbers, width=width, padding="0")
    joined = pc.binary_join_element_wise(pa.scalar(prefix), padded, "")
    return pd.Series(pd.arrays.ArrowStringArray(joined))


def _pick(rng: np.random.Generator, options, n: int, p=None) -> np.ndarray:
    options = np.asarray(options, dtype=object)
    return options[rng.choice(len(options), size=n, p=p)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _rolling(matrix: np.ndarray, window: int) -> np.ndarray:
    """Sum over the last ``window`` columns, including the current one (columns are weeks)."""
    c = np.cumsum(matrix, axis=1, dtype=np.float64)
    out = c.copy()
    out[:, window:] = c[:, window:] - c[:, :-window]
    return out


def _marks(rows: np.ndarray, weeks: np.ndarray, shape: tuple[int, int], values=None) -> np.ndarray:
    m = np.zeros(shape, dtype=np.float64)
    ok = (weeks >= 0) & (weeks < shape[1])
    np.add.at(m, (rows[ok], weeks[ok]), 1.0 if values is None else np.asarray(values)[ok])
    return m


def _inverse_cdf(rng: np.random.Generator, cdf_rows: np.ndarray) -> np.ndarray:
    """One draw per row from categorical distributions given as cumulative rows."""
    u = rng.random(len(cdf_rows))[:, None]
    return np.minimum((u > cdf_rows).sum(axis=1), cdf_rows.shape[1] - 1)


def _week_times(rng: np.random.Generator, week_start_ns: np.ndarray, weeks: np.ndarray) -> np.ndarray:
    """A random business-time instant in each given week (working days, 08:00-18:00)."""
    day = rng.integers(0, 5, size=len(weeks))
    seconds = rng.integers(8 * 3600, 18 * 3600, size=len(weeks))
    return week_start_ns[weeks] + (day * 86400 + seconds) * 1_000_000_000


@dataclass
class _Calendar:
    start: pd.Timestamp
    end: pd.Timestamp
    weeks: int
    week_start: pd.DatetimeIndex
    week_ns: np.ndarray
    month_ends: pd.DatetimeIndex
    month_end_week: np.ndarray

    @classmethod
    def build(cls, config: SimulationConfig) -> _Calendar:
        start = pd.Timestamp(config.start)
        end = config.end
        weeks = (end - start).days // 7
        week_start = pd.date_range(start, periods=weeks, freq="7D")
        month_ends = pd.date_range(start, end - pd.Timedelta(days=1), freq="ME")
        month_end_week = np.minimum(((month_ends - start).days // 7).to_numpy(), weeks - 1)
        return cls(start, end, weeks, week_start, week_start.asi8.copy(), month_ends, month_end_week)

    def first_week_from(self, day: date) -> int:
        """The first week that starts on or after ``day`` (scenarios start on a week boundary)."""
        return max(0, -(-(pd.Timestamp(day) - self.start).days // 7))

    def week_of(self, ts_ns: np.ndarray) -> np.ndarray:
        return ((ts_ns - self.week_ns[0]) // (7 * 86400 * 1_000_000_000)).astype(np.int64)


# ------------------------------------------------------------------------------------------------ organisation


def _simulate_reps(rng: np.random.Generator, config: SimulationConfig, cal: _Calendar) -> pd.DataFrame:
    n_reps = max(len(REGIONS), round(config.accounts / config.accounts_per_rep))
    per_region = np.maximum(1, np.round(REGION_WEIGHTS * n_reps).astype(int))
    rows = []
    counter = 1
    team_counter = 1
    for region, n in zip(REGIONS, per_region, strict=True):
        director = f"R{counter:05d}"
        counter += 1
        rows.append((director, "director", None, None, region))
        n_teams = int(np.ceil(n / config.reps_per_team))
        sizes = np.full(n_teams, n // n_teams)
        sizes[: n % n_teams] += 1
        for size in sizes:
            team = f"TEAM{team_counter:03d}"
            team_counter += 1
            manager = f"R{counter:05d}"
            counter += 1
            rows.append((manager, "manager", team, director, region))
            for _ in range(size):
                rows.append((f"R{counter:05d}", "rep", team, manager, region))
                counter += 1
    frame = pd.DataFrame(rows, columns=["rep_id", "role", "team_id", "manager_id", "region"])
    n = len(frame)
    first = FIRST_NAMES[rng.integers(0, len(FIRST_NAMES), n)]
    last = LAST_NAMES[rng.integers(0, len(LAST_NAMES), n)]
    frame["name"] = [f"{a} {b}" for a, b in zip(first, last, strict=True)]
    frame["email"] = [f"{a.lower()}.{b.lower()}.{i}@salesml-demo.example" for i, (a, b) in
                      enumerate(zip(first, last, strict=True))]
    frame["country"] = [COUNTRIES[r][0][0] for r in frame["region"]]
    frame["hired_at"] = cal.start - pd.to_timedelta(rng.integers(60, 3650, n), unit="D")
    frame["quota"] = np.where(frame["role"] == "rep", np.round(rng.uniform(0.6e6, 1.6e6, n), -3), np.nan)
    return frame[TABLES["sales_reps"].column_names]


def _simulate_accounts(rng: np.random.Generator, config: SimulationConfig, cal: _Calendar, reps: pd.DataFrame
                       ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    n = config.accounts
    region_idx = rng.choice(len(REGIONS), size=n, p=REGION_WEIGHTS)
    region = np.asarray(REGIONS, dtype=object)[region_idx]
    country = np.empty(n, dtype=object)
    currency = np.empty(n, dtype=object)
    for r, options in COUNTRIES.items():
        rows = np.flatnonzero(region == r)
        p = np.array([o[2] for o in options])
        pick = rng.choice(len(options), size=len(rows), p=p / p.sum())
        country[rows] = [options[i][0] for i in pick]
        currency[rows] = [options[i][1] for i in pick]
    band_idx = rng.choice(len(EMPLOYEE_BANDS), size=n, p=[0.15, 0.25, 0.25, 0.2, 0.1, 0.05])
    size_band = np.where(band_idx <= 1, "small", np.where(band_idx <= 3, "mid", "enterprise")).astype(object)
    revenue = np.round(np.exp(rng.normal(13.0 + 1.2 * band_idx, 0.6)), -3)
    industry_names = list(INDUSTRIES)
    ind = rng.integers(0, len(industry_names), n)
    sub = rng.integers(0, 3, n)
    industry = np.asarray(industry_names, dtype=object)[ind]
    sub_industry = np.array([INDUSTRIES[industry_names[i]][j] for i, j in zip(ind, sub, strict=True)], dtype=object)
    segment_idx = rng.choice(len(SEGMENTS), size=n, p=[0.2, 0.25, 0.15, 0.15, 0.25])
    prospect = rng.random(n) < 0.18
    segment_idx = np.where(prospect, np.where(segment_idx == 3, 4, segment_idx), segment_idx)
    # Customers start before the window, except the "new" segment, who start inside its first 60%.
    since_days = -rng.integers(90, 8 * 365, n)
    new_start = rng.integers(0, max(1, int(0.6 * (cal.end - cal.start).days)), n)
    since_days = np.where(segment_idx == 3, new_start, since_days)
    customer_since = (cal.start + pd.to_timedelta(since_days, unit="D")).to_numpy()
    customer_since = np.where(prospect, np.datetime64("NaT"), customer_since)
    founded = np.minimum(cal.start.year - 1 - rng.gamma(2.0, 12.0, n).astype(int),
                         pd.DatetimeIndex(customer_since).year.fillna(cal.start.year).to_numpy() - 0)
    founded = np.maximum(founded, 1850).astype(int)
    rank = pd.Series(revenue).rank(pct=True).to_numpy()
    tier = np.where(rank > 0.95, "strategic", np.where(rank > 0.8, "key", np.where(rank > 0.3, "standard",
                                                                                       "long_tail"))).astype(object)
    lifecycle = np.where(prospect, "prospect", np.where(segment_idx == 3, "onboarding",
                                                        np.where(tier == "strategic", "strategic", "established")))
    budget_band = np.asarray(["low", "medium", "high", "very_high"], dtype=object)[
        np.clip(np.round(rank * 3 + rng.normal(0, 0.4, n)), 0, 3).astype(int)]
    credit = np.asarray(CREDIT_RATINGS, dtype=object)[np.clip(rng.binomial(6, 0.35, n), 0, 6)]
    ownership = _pick(rng, ["private", "public", "government", "nonprofit"], n, [0.65, 0.2, 0.08, 0.07])
    # Owner: a rep of the account's region.
    owner = np.empty(n, dtype=object)
    for r in REGIONS:
        rows = np.flatnonzero(region == r)
        pool = reps.loc[(reps["region"] == r) & (reps["role"] == "rep"), "rep_id"].to_numpy()
        owner[rows] = pool[rng.integers(0, len(pool), len(rows))]
    ids = _ids("A", n, 7)
    parent = np.full(n, None, dtype=object)
    has_parent = (rng.random(n) < 0.04) & (np.arange(n) > 10)
    for i in np.flatnonzero(has_parent):
        same = np.flatnonzero(region[:i] == region[i])
        if len(same):
            parent[i] = ids.iloc[int(same[rng.integers(0, len(same))])]
            ownership[i] = "subsidiary"
    names = [f"{a} {b} {c}" for a, b, c in zip(NAME_A[rng.integers(0, len(NAME_A), n)],
                                               NAME_B[rng.integers(0, len(NAME_B), n)],
                                               NAME_C[rng.integers(0, len(NAME_C), n)], strict=True)]
    created = np.where(prospect, (cal.start + pd.to_timedelta(rng.integers(-700, 30, n), unit="D")).to_numpy(),
                       customer_since - np.timedelta64(30, "D"))
    created = pd.DatetimeIndex(created) + pd.to_timedelta(rng.integers(8 * 3600, 18 * 3600, n), unit="s")
    frame = pd.DataFrame({
        "account_id": ids,
        "account_name": names,
        "industry": industry,
        "sub_industry": sub_industry,
        "employee_band": np.asarray(EMPLOYEE_BANDS, dtype=object)[band_idx],
        "size_band": size_band,
        "annual_revenue": revenue,
        "currency": currency,
        "region": region,
        "country": country,
        "city_tier": rng.choice([1, 2, 3], size=n, p=[0.3, 0.4, 0.3]),
        "ownership_type": ownership,
        "founded_year": founded,
        "credit_rating": credit,
        "budget_band": budget_band,
        "customer_since": pd.DatetimeIndex(customer_since).normalize(),
        "lifecycle_stage": lifecycle,
        "tier": tier,
        "owner_rep_id": owner,
        "parent_account_id": parent,
        "preferred_channel": _pick(rng, CONTACT_CHANNELS, n, [0.3, 0.25, 0.25, 0.1, 0.1]),
        "payment_terms": _pick(rng, PAYMENT_TERMS, n, [0.05, 0.1, 0.45, 0.15, 0.2, 0.05]),
        "marketing_opt_in": rng.random(n) < 0.6,
        "website": [f"www.{a.split()[0].lower()}{a.split()[1].lower()}{i}.example" for i, a in enumerate(names)],
        "created_at": created,
    })
    latent = {
        "segment": segment_idx,
        "region_idx": region_idx,
        "size": np.where(size_band == "small", 0, np.where(size_band == "mid", 1, 2)),
        "prospect": prospect,
        "since_week": np.where(prospect, 10**6, np.floor(since_days / 7).astype(np.int64)),
    }
    return frame[TABLES["accounts"].column_names], latent


def _simulate_contacts(rng: np.random.Generator, accounts: pd.DataFrame, latent: dict, cal: _Calendar
                       ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Contacts, the account x week "decision maker left in the last 13 weeks" matrix, and each contact's
    account position (contacts are sorted by account)."""
    n_acc = len(accounts)
    per = np.clip(2 + rng.poisson(1.0 + 1.5 * latent["size"]), 2, 12)
    acc = np.repeat(np.arange(n_acc), per)
    pos = np.arange(len(acc)) - np.repeat(np.cumsum(per) - per, per)
    n_dm = 1 + (latent["size"] >= 1).astype(int)
    dm = pos < n_dm[acc]
    n = len(acc)
    started = cal.start + pd.to_timedelta(-rng.integers(30, 6 * 365, n), unit="D")
    late = rng.random(n) < 0.1
    started = started.where(~late, cal.start + pd.to_timedelta(rng.integers(0, (cal.end - cal.start).days, n),
                                                                   unit="D"))
    # Decision makers leave at about 18% a year; others at about 12%.
    rate = np.where(dm, 0.18, 0.12) / 365.0
    base = np.maximum(started.asi8, cal.start.value)
    left = base + (rng.exponential(1.0 / rate) * 86400e9).astype(np.int64)
    left = np.where(left < cal.end.value, left, np.iinfo(np.int64).min)
    left_idx = pd.DatetimeIndex(left)
    # A departed decision maker is replaced 20-60 days later.
    gone = np.flatnonzero(dm & (left != np.iinfo(np.int64).min))
    repl_start = left[gone] + rng.integers(20, 60, len(gone)) * 86400 * 1_000_000_000
    keep = repl_start < cal.end.value
    gone, repl_start = gone[keep], repl_start[keep]
    all_acc = np.concatenate([acc, acc[gone]])
    all_dm = np.concatenate([dm, np.ones(len(gone), dtype=bool)])
    all_start = np.concatenate([started.asi8, repl_start])
    all_left = np.concatenate([left_idx.asi8, np.full(len(gone), np.iinfo(np.int64).min)])
    order = np.lexsort((all_start, all_acc))
    all_acc, all_dm, all_start, all_left = all_acc[order], all_dm[order], all_start[order], all_left[order]
    m = len(all_acc)
    first = FIRST_NAMES[rng.integers(0, len(FIRST_NAMES), m)]
    last = LAST_NAMES[rng.integers(0, len(LAST_NAMES), m)]
    ids = _ids("C", m, 8)
    domain = accounts["website"].str.replace("www.", "", regex=False).to_numpy()[all_acc]
    frame = pd.DataFrame({
        "contact_id": ids,
        "account_id": accounts["account_id"].to_numpy()[all_acc],
        "name": [f"{a} {b}" for a, b in zip(first, last, strict=True)],
        "email": [f"{a.lower()}.{b.lower()}@{d}" for a, b, d in zip(first, last, domain, strict=True)],
        "role": np.where(all_dm, DM_ROLES[rng.integers(0, len(DM_ROLES), m)],
                         CONTACT_ROLES[rng.integers(0, len(CONTACT_ROLES), m)]),
        "is_decision_maker": all_dm,
        "started_at": pd.DatetimeIndex(all_start).normalize(),
        "left_at": pd.DatetimeIndex(all_left).normalize(),
    })
    # Account x week: a decision maker left in the last 13 weeks (about 90 days).
    departed = all_dm & (all_left != np.iinfo(np.int64).min)
    weeks = cal.week_of(all_left[departed])
    dm_left = _rolling(_marks(all_acc[departed], weeks, (n_acc, cal.weeks)), 13) > 0
    return frame[TABLES["contacts"].column_names], dm_left, all_acc


def _simulate_news_and_budgets(rng: np.random.Generator, config: SimulationConfig, accounts: pd.DataFrame,
                               latent: dict, cal: _Calendar) -> dict:
    n_acc, weeks = len(accounts), cal.weeks
    years = weeks / 52.0
    # Account news.
    k = rng.poisson(1.2 * years, n_acc)
    acc = np.repeat(np.arange(n_acc), k)
    when = cal.week_ns[0] + (rng.random(len(acc)) * (weeks * 7 * 86400)).astype(np.int64) * 1_000_000_000
    p_neg = np.where(latent["segment"][acc] == 2, 0.45, 0.25)
    u = rng.random(len(acc))
    account_sent = np.where(u < p_neg, "negative", np.where(u < p_neg + 0.35, "neutral", "positive"))
    # Competitor news per region and week; entrants raise the rate and the share of bad news for us.
    entry = [s for s in config.scenarios if s.kind == "competitor_entry"]
    rate = np.full((len(REGIONS), weeks), 0.5)
    neg_share = np.full((len(REGIONS), weeks), 0.5)
    for s in entry:
        w0 = cal.first_week_from(s.month)
        r = REGIONS.index(s.region)
        rate[r, w0:] *= 3.0
        neg_share[r, w0:] = 0.8
    counts = rng.poisson(rate)
    reg, wk = np.nonzero(counts)
    reg, wk = np.repeat(reg, counts[reg, wk]), np.repeat(wk, counts[reg, wk])
    u = rng.random(len(reg))
    ns = neg_share[reg, wk]
    comp_sent = np.where(u < ns, "negative", np.where(u < ns + 0.3, "neutral", "positive"))
    comp_name = _pick(rng, COMPETITORS, len(reg))
    for s in entry:
        w0 = cal.first_week_from(s.month)
        hit = (reg == REGIONS.index(s.region)) & (wk >= w0) & (rng.random(len(reg)) < 0.5)
        comp_name[hit] = ENTRANT
    comp_when = _week_times(rng, cal.week_ns, wk)
    neg_comp = _rolling(_marks(reg[comp_sent == "negative"], wk[comp_sent == "negative"], (len(REGIONS), weeks)), 4)
    # Budgets: regular small changes, and cuts that follow bad account news.
    k = rng.poisson(4.0 * years, n_acc)
    b_acc = np.repeat(np.arange(n_acc), k)
    b_when = cal.week_ns[0] + (rng.random(len(b_acc)) * (weeks * 7 * 86400)).astype(np.int64) * 1_000_000_000
    b_change = np.round(rng.normal(2.0, 8.0, len(b_acc)), 1)
    cut = np.flatnonzero((account_sent == "negative") & (rng.random(len(acc)) < 0.6))
    c_when = when[cut] + rng.integers(3, 30, len(cut)) * 86400 * 1_000_000_000
    ok = c_when < cal.end.value
    b_acc = np.concatenate([b_acc, acc[cut][ok]])
    b_when = np.concatenate([b_when, c_when[ok]])
    b_change = np.concatenate([b_change, -np.round(rng.uniform(15, 45, ok.sum()), 1)])
    b_week = cal.week_of(b_when)
    budget_sum = _rolling(_marks(b_acc, b_week, (n_acc, weeks), b_change), 13)
    budget_cut = budget_sum <= -10.0

    names = accounts["account_name"].to_numpy()
    acc_text = fill_templates(rng, ACCOUNT_NEWS_TEMPLATES, account_sent, {"account": names[acc]})
    lines = _pick(rng, OPPORTUNITY_LINES, len(reg))
    comp_text = fill_templates(rng, COMPETITOR_NEWS_TEMPLATES, comp_sent,
                               {"competitor": comp_name, "line": lines,
                                "region": np.asarray(REGIONS, dtype=object)[reg]})
    n_news = len(acc) + len(reg)
    news = pd.DataFrame({
        "news_id": _ids("N", n_news, 8),
        "subject_type": np.concatenate([np.full(len(acc), "account", dtype=object),
                                        np.full(len(reg), "competitor", dtype=object)]),
        "account_id": np.concatenate([accounts["account_id"].to_numpy()[acc], np.full(len(reg), None)]),
        "competitor": np.concatenate([np.full(len(acc), None), comp_name]),
        "region": np.concatenate([accounts["region"].to_numpy()[acc], np.asarray(REGIONS, dtype=object)[reg]]),
        "published_at": pd.DatetimeIndex(np.concatenate([when, comp_when])),
        "text": np.concatenate([acc_text, comp_text]),
        "source": _pick(rng, ["Business Wire", "Reuters", "Trade Journal", "Local Press"], n_news),
    })
    news_sentiment = np.concatenate([account_sent, comp_sent])
    order = np.argsort(news["published_at"].to_numpy(), kind="stable")
    news = news.iloc[order].reset_index(drop=True)
    news_sentiment = news_sentiment[order]
    news["news_id"] = _ids("N", n_news, 8)
    budgets = pd.DataFrame({
        "account_id": accounts["account_id"].to_numpy()[b_acc],
        "observed_at": pd.DatetimeIndex(b_when).normalize(),
        "budget_change_pct": b_change,
        "source": _pick(rng, ["intent_data", "account_team", "annual_report"], len(b_acc)),
    }).sort_values(["observed_at", "account_id"], kind="stable").reset_index(drop=True)
    budgets.insert(0, "signal_id", _ids("B", len(budgets), 8))
    return {
        "news": news[TABLES["news_signals"].column_names],
        "news_sentiment": news_sentiment,
        "budgets": budgets[TABLES["budget_signals"].column_names],
        "neg_comp_news_4w": neg_comp,
        "budget_cut_13w": budget_cut,
    }


# ------------------------------------------------------------------------------------------------ pipeline


@dataclass
class _OppState:
    n: int
    account: np.ndarray
    created_week: np.ndarray
    created_ns: np.ndarray
    quality: np.ndarray
    engagement0: np.ndarray
    discount: np.ndarray
    region_idx: np.ndarray
    stage: np.ndarray = field(init=False)
    weeks_in_stage: np.ndarray = field(init=False)
    engagement: np.ndarray = field(init=False)
    decided: np.ndarray = field(init=False)
    entrant: np.ndarray = field(init=False)
    close_week: np.ndarray = field(init=False)
    closed: np.ndarray = field(init=False)
    outcome: np.ndarray = field(init=False)
    history: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.stage = np.full(self.n, -1, dtype=np.int8)
        self.weeks_in_stage = np.zeros(self.n, dtype=np.int16)
        self.engagement = self.engagement0.copy()
        self.decided = np.zeros(self.n, dtype=bool)
        self.entrant = np.zeros(self.n, dtype=bool)
        self.close_week = np.full(self.n, -1, dtype=np.int32)
        self.closed = np.zeros(self.n, dtype=bool)
        self.outcome = np.zeros(self.n, dtype=np.int8)  # 1 won, 2 lost
        self.history = np.zeros((8, self.n), dtype=np.float32)


def _simulate_opportunities(rng: np.random.Generator, config: SimulationConfig, accounts: pd.DataFrame,
                            latent: dict, cal: _Calendar, dm_left: np.ndarray, signals: dict) -> dict:
    mech = config.mechanisms
    n_acc, weeks = len(accounts), cal.weeks
    size = latent["size"]
    rate = 0.22 * np.where(size == 2, 1.8, np.where(size == 0, 0.7, 1.0)) * np.where(latent["prospect"], 0.7, 1.0)
    k = rng.poisson(rate * weeks / 4.345)
    acc = np.repeat(np.arange(n_acc), k)
    cw = rng.integers(0, weeks, len(acc))
    order = np.lexsort((acc, cw))
    acc, cw = acc[order], cw[order]
    n = len(acc)
    created_ns = _week_times(rng, cal.week_ns, cw)
    entry_week = np.full(len(REGIONS), 10**6)
    for s in config.scenarios:
        if s.kind == "competitor_entry":
            entry_week[REGIONS.index(s.region)] = cal.first_week_from(s.month)
    region_idx = latent["region_idx"][acc]
    discount = np.clip(rng.beta(2.0, 14.0, n) + np.where(latent["segment"][acc] == 1, 0.08, 0.0)
                       + np.where(cw >= entry_week[region_idx], 0.08, 0.0), 0, 0.6).round(3)
    st = _OppState(n=n, account=acc, created_week=cw, created_ns=created_ns, quality=rng.normal(0, 1, n),
                   engagement0=rng.beta(6, 2, n), discount=discount, region_idx=region_idx)
    stall_limit = np.array([4, 5, 6, 5], dtype=np.int16)
    delay_pmf = _delay_pmf(mech)
    entering = bool((entry_week < 10**6).any())
    hist_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    act_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (opp, week, type, count) packed
    truth: list[pd.DataFrame] = []
    rates = np.array([1.1, 1.4, 0.45, 0.35])  # email_in, email_out, meeting, call per week at full engagement
    pending_created = 0
    month_iter = 0
    for w in range(weeks):
        # New deals this week enter lead (80%) or qualified.
        new = np.arange(pending_created, np.searchsorted(cw, w, side="right"))
        pending_created = np.searchsorted(cw, w, side="right")
        if len(new):
            st.stage[new] = np.where(rng.random(len(new)) < 0.8, 0, 1)
            hist_rows.append((new, np.full(len(new), -1, np.int8), st.stage[new].copy(), created_ns[new]))
        active = np.flatnonzero((st.stage >= 0) & ~st.closed)
        if not len(active):
            continue
        drivers = _loss_drivers(st, active, w, dm_left, signals, stall_limit, entry_week)
        eta = _loss_eta(mech, st, active, drivers)
        pull = _entrant_pull(mech, st, active, drivers) if entering else None
        while month_iter < len(cal.month_ends) and cal.month_end_week[month_iter] == w:
            truth.append(_loss_truth(st, active, eta, cal.month_ends[month_iter], w, delay_pmf, pull))
            month_iter += 1
        # Engagement: occasional shocks (a champion goes cold), slow recovery; decided deals go dark.
        e = st.engagement[active]
        shock = rng.random(len(active)) < 0.015
        e = np.where(shock, e * rng.uniform(0.15, 0.45, len(active)), e + 0.15 * (st.engagement0[active] - e))
        st.engagement[active] = e
        dark = np.where(st.decided[active] & ~st.entrant[active], 0.03, 1.0)
        stage_boost = 1.0 + 0.3 * (st.stage[active] >= 2)
        lam = np.stack([rates[0] * e * dark, rates[1] * (0.6 + 0.4 * e) * np.where(dark < 1, 0.3, 1.0),
                        rates[2] * e * stage_boost * dark, rates[3] * e * dark], axis=1)
        counts = rng.poisson(lam)
        nz_opp, nz_type = np.nonzero(counts)
        act_rows.append((active[nz_opp], np.full(len(nz_opp), w, np.int32), nz_type.astype(np.int8),
                         counts[nz_opp, nz_type].astype(np.int16)))
        st.history = np.roll(st.history, 1, axis=0)
        st.history[0, active] = counts[:, 0] + counts[:, 2]
        # Loss decisions.
        undecided = ~st.decided[active]
        decide = undecided & (rng.random(len(active)) < _sigmoid(eta))
        stale = undecided & ((w - st.created_week[active]) >= mech.stale_weeks)
        decide |= stale
        dec = active[decide]
        st.decided[dec] = True
        delay = mech.loss_close_delay_weeks + np.minimum(rng.poisson(mech.loss_close_delay_extra, len(dec)),
                                                         mech.loss_close_delay_max - mech.loss_close_delay_weeks)
        st.close_week[dec] = w + delay
        if entering:  # the entrant takes some of the deals still undecided
            taken = active[~st.decided[active] & (rng.random(len(active)) < pull)]
            st.decided[taken] = st.entrant[taken] = True
            st.close_week[taken] = w + rng.integers(2, 6, len(taken))
        # Progress of deals still in play (not decided this week or before).
        live = active[~st.decided[active]]
        stage = st.stage[live]
        u = st.quality[live]
        e_live = st.engagement[live]
        ok_time = st.weeks_in_stage[live] >= 1
        r = rng.random(len(live))
        high = st.discount[live] > 0.2
        p_win = np.where(stage == 3, _sigmoid(-1.3 + 0.8 * u + 2.0 * (e_live - 0.5) - 0.5 * high),
                         np.where(stage == 2, 0.02, 0.0)) * ok_time
        p_adv = np.where(stage < 3, _sigmoid(-1.6 + 2.4 * (e_live - 0.5) + 0.4 * u), 0.0) * ok_time
        p_reg = np.where(stage >= 1, 0.015 + 0.04 * (e_live < 0.35), 0.0) * ok_time
        win = r < p_win
        adv = ~win & (r < p_win + p_adv)
        reg = ~win & ~adv & (r < p_win + p_adv + p_reg)
        changed = win | adv | reg
        if changed.any():
            opp = live[changed]
            frm = stage[changed]
            to = np.where(win[changed], 4, np.where(adv[changed], frm + 1,
                                                    np.where(frm == 3, rng.choice([1, 2], len(opp), p=[0.3, 0.7]),
                                                             frm - 1)))
            when = _week_times(rng, cal.week_ns, np.full(len(opp), w))
            hist_rows.append((opp, frm.astype(np.int8), to.astype(np.int8), when))
            st.stage[opp] = np.where(to == 4, st.stage[opp], to)
            st.weeks_in_stage[opp] = -1
            won = opp[to == 4]
            st.closed[won] = True
            st.outcome[won] = 1
        # Deals decided lost close when their delay is up.
        closing = active[st.decided[active] & (st.close_week[active] == w) & ~st.closed[active]]
        if len(closing):
            when = _week_times(rng, cal.week_ns, np.full(len(closing), w))
            hist_rows.append((closing, st.stage[closing].copy(), np.full(len(closing), 5, np.int8), when))
            st.closed[closing] = True
            st.outcome[closing] = 2
        st.weeks_in_stage[active] += 1
    return {
        "state": st,
        "history": hist_rows,
        "activities": act_rows,
        "truth": pd.concat(truth, ignore_index=True) if truth else pd.DataFrame(),
    }


def _delay_pmf(mech: Mechanisms) -> np.ndarray:
    extra_max = mech.loss_close_delay_max - mech.loss_close_delay_weeks
    pmf = poisson.pmf(np.arange(extra_max + 1), mech.loss_close_delay_extra)
    pmf[-1] += 1.0 - pmf.sum()
    out = np.zeros(mech.loss_close_delay_max + 1)
    out[mech.loss_close_delay_weeks:] = pmf
    return out


def _loss_drivers(st: _OppState, active: np.ndarray, w: int, dm_left: np.ndarray, signals: dict,
                  stall_limit: np.ndarray, entry_week: np.ndarray) -> dict[str, np.ndarray]:
    a = st.account[active]
    recent = st.history[:4, active].sum(axis=0)
    prior = st.history[4:8, active].sum(axis=0)
    age = w - st.created_week[active]
    stage = np.clip(st.stage[active], 0, 3)
    return {
        "activity_drop": ((prior >= 3) & (recent <= 0.4 * prior)).astype(float),
        "no_meeting": ((age >= 4) & (recent == 0)).astype(float),
        "dm_departure": dm_left[a, w].astype(float),
        "budget_cut": signals["budget_cut_13w"][a, w].astype(float),
        "competitor_news": np.minimum(signals["neg_comp_news_4w"][st.region_idx[active], w], 2.0),
        "stall": (st.weeks_in_stage[active] > stall_limit[stage]).astype(float),
        "high_discount": (st.discount[active] > 0.2).astype(float),
        "entry": (w >= entry_week[st.region_idx[active]]).astype(float),
    }


def _loss_eta(mech: Mechanisms, st: _OppState, active: np.ndarray, d: dict[str, np.ndarray]) -> np.ndarray:
    return (mech.loss_base + mech.loss_activity_drop * d["activity_drop"] + mech.loss_no_meeting_30d * d["no_meeting"]
            + mech.loss_dm_departure * d["dm_departure"] + mech.loss_budget_cut * d["budget_cut"]
            + mech.loss_competitor_news * d["competitor_news"] + mech.loss_stall * d["stall"]
            + mech.loss_high_discount * d["high_discount"] + mech.loss_quality * st.quality[active]
            + mech.loss_competitor_entry * d["entry"])


def _entrant_pull(mech: Mechanisms, st: _OppState, active: np.ndarray, d: dict[str, np.ndarray]) -> np.ndarray:
    """The weekly probability that the entrant takes each open deal (0 outside its region and before it enters)."""
    sensitive = st.discount[active] > mech.entrant_discount
    return d["entry"] * _sigmoid(np.where(sensitive, mech.entrant_price_sensitive, mech.entrant_other))


def _loss_truth(st: _OppState, active: np.ndarray, eta: np.ndarray, month_end: pd.Timestamp, w: int,
                delay_pmf: np.ndarray, pull: np.ndarray | None = None) -> pd.DataFrame:
    """P(closed lost within 90 days | latent state), hazards held at the month end (a deal the entrant takes
    closes within 5 weeks, so within the 90 days)."""
    horizon = 12  # whole weeks within 90 days
    h = _sigmoid(eta)
    stage = st.stage[active]
    e = st.engagement[active]
    u = st.quality[active]
    g = np.where(stage == 3, _sigmoid(-1.3 + 0.8 * u + 2.0 * (e - 0.5) - 0.5 * (st.discount[active] > 0.2)),
                 np.where(stage == 2, 0.02, 0.0))
    cdf = np.cumsum(delay_pmf)
    k = np.arange(horizon + 1)
    pull = np.zeros(len(active)) if pull is None else pull
    # Competing risks each week: decided lost (closing after the delay), won, or taken by the entrant (closing
    # within 5 weeks).
    survive = ((1 - h)[:, None] * (1 - g)[:, None] * (1 - pull)[:, None]) ** k[None, :]
    within = cdf[np.clip(horizon - k, 0, len(cdf) - 1)]
    p = (survive * (h[:, None] * within[None, :]
                    + ((1 - h) * pull)[:, None] * (k <= horizon - 5)[None, :])).sum(axis=1)
    decided = st.decided[active]
    pending = decided & (st.close_week[active] - w <= horizon)
    p = np.where(pending, 1.0, np.where(decided, 0.0, p))
    return pd.DataFrame({"opp": active, "month_end": month_end, "p_loss_90d": p, "decided_lost": decided})


def _opportunity_tables(rng: np.random.Generator, config: SimulationConfig, accounts: pd.DataFrame,
                        reps: pd.DataFrame, contacts: pd.DataFrame, contact_acc: np.ndarray, cal: _Calendar,
                        sim: dict) -> dict:
    st: _OppState = sim["state"]
    n = st.n
    acc_ids = accounts["account_id"].to_numpy()
    size = accounts["size_band"].to_numpy()[st.account]
    median = np.where(size == "small", 8_000, np.where(size == "mid", 40_000, 150_000))
    amount = np.round(median * np.exp(rng.normal(0, 0.6, n)), -2)
    owner = accounts["owner_rep_id"].to_numpy()[st.account].copy()
    region = accounts["region"].to_numpy()[st.account]
    reassign = rng.random(n) < 0.2
    for r in REGIONS:
        pool = reps.loc[(reps["region"] == r) & (reps["role"] == "rep"), "rep_id"].to_numpy()
        rows = np.flatnonzero(reassign & (region == r))
        owner[rows] = pool[rng.integers(0, len(pool), len(rows))]
    hist = sim["history"]
    h_opp = np.concatenate([h[0] for h in hist]) if hist else np.array([], dtype=np.int64)
    h_from = np.concatenate([h[1] for h in hist]) if hist else np.array([], dtype=np.int8)
    h_to = np.concatenate([h[2] for h in hist]) if hist else np.array([], dtype=np.int8)
    h_at = np.concatenate([h[3] for h in hist]) if hist else np.array([], dtype=np.int64)
    stage_names = np.array(["lead", "qualified", "proposal", "negotiation", "closed_won", "closed_lost"],
                           dtype=object)
    true_outcome = st.outcome.copy()
    recorded = st.outcome.copy()
    closed_at = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    closing = h_to >= 4
    closed_at[h_opp[closing]] = h_at[closing]
    # biased_history: in the first half of the window, some won deals of small accounts are recorded lost.
    if any(s.kind == "biased_history" for s in config.scenarios):
        cutoff = (cal.start + pd.DateOffset(months=config.months // 2)).value
        window = closed_at < cutoff
        flip = (true_outcome == 1) & (size == "small") & window & (closed_at > 0) & (
            rng.random(n) < config.mechanisms.biased_history_flip)
        recorded[flip] = 2
        rows = np.flatnonzero(closing & flip[h_opp])
        h_to[rows] = 5
    final_stage = np.where(recorded == 1, 4, np.where(recorded == 2, 5, st.stage)).astype(int)
    created = pd.DatetimeIndex(st.created_ns)
    opp_ids = _ids("O", n, 8)
    frame = pd.DataFrame({
        "opportunity_id": opp_ids,
        "account_id": acc_ids[st.account],
        "owner_rep_id": owner,
        "product_line": _pick(rng, OPPORTUNITY_LINES, n),
        "amount": amount,
        "currency": "USD",
        "discount": st.discount,
        "created_at": created,
        "expected_close": (created + pd.to_timedelta(rng.integers(30, 180, n), unit="D")).normalize(),
        "closed_at": pd.DatetimeIndex(closed_at),
        "stage": stage_names[final_stage],
        "outcome": np.where(recorded == 1, "won", np.where(recorded == 2, "lost", None)),
        "lead_source": _pick(rng, LEAD_SOURCES, n),
    })
    order = np.lexsort((h_at, h_opp))
    history = pd.DataFrame({
        "opportunity_id": opp_ids.to_numpy()[h_opp[order]],
        "from_stage": np.where(h_from[order] < 0, None, stage_names[np.maximum(h_from[order], 0)]),
        "to_stage": stage_names[h_to[order]],
        "changed_at": pd.DatetimeIndex(h_at[order]),
    })
    history.insert(0, "history_id", _ids("H", len(history), 9))
    truth = sim["truth"]
    loss_truth = pd.DataFrame({
        "opportunity_id": opp_ids.to_numpy()[truth["opp"].to_numpy()],
        "month_end": truth["month_end"].to_numpy(),
        "p_loss_90d": truth["p_loss_90d"].round(6).to_numpy(),
        "decided_lost": truth["decided_lost"].to_numpy(),
    }) if len(truth) else pd.DataFrame(columns=["opportunity_id", "month_end", "p_loss_90d", "decided_lost"])
    outcomes = pd.DataFrame({
        "opportunity_id": opp_ids,
        "true_outcome": np.where(true_outcome == 1, "won", np.where(true_outcome == 2, "lost", None)),
        "recorded_outcome": frame["outcome"].to_numpy(),
    })
    activities = _activities(rng, st, sim["activities"], frame, contacts, contact_acc, cal)
    return {"opportunities": frame, "history": history, "activities": activities, "loss_truth": loss_truth,
            "outcomes": outcomes}


def _activities(rng: np.random.Generator, st: _OppState, rows: list, opps: pd.DataFrame, contacts: pd.DataFrame,
                contact_acc: np.ndarray, cal: _Calendar) -> pd.DataFrame:
    if rows:
        opp = np.concatenate([r[0] for r in rows])
        week = np.concatenate([r[1] for r in rows])
        kind = np.concatenate([r[2] for r in rows])
        count = np.concatenate([r[3] for r in rows]).astype(np.int64)
    else:
        opp = week = kind = count = np.array([], dtype=np.int64)
    opp, week, kind = np.repeat(opp, count), np.repeat(week, count), np.repeat(kind, count)
    when = _week_times(rng, cal.week_ns, week)
    when = np.maximum(when, st.created_ns[opp] + 60 * 1_000_000_000)
    when = np.minimum(when, cal.end.value - 1_000_000_000)
    acc = st.account[opp]
    # A contact of the account, when one is employed there at the time.
    c_acc = contact_acc
    first = np.searchsorted(c_acc, acc, side="left")
    n_c = np.searchsorted(c_acc, acc, side="right") - first
    pick = first + (rng.random(len(acc)) * np.maximum(n_c, 1)).astype(np.int64)
    pick = np.minimum(pick, len(c_acc) - 1)
    c_start = contacts["started_at"].to_numpy().astype("datetime64[ns]").astype(np.int64)[pick]
    c_left = contacts["left_at"].to_numpy().astype("datetime64[ns]").astype(np.int64)[pick]
    employed = (n_c > 0) & (c_start <= when) & ((c_left == np.iinfo(np.int64).min) | (c_left > when))
    contact = np.where(employed, contacts["contact_id"].to_numpy()[pick], None)
    types = np.array(["email_in", "email_out", "meeting", "call"], dtype=object)
    order = np.argsort(when, kind="stable")
    frame = pd.DataFrame({
        "activity_type": types[kind[order]],
        "account_id": opps["account_id"].to_numpy()[opp[order]],
        "opportunity_id": opps["opportunity_id"].to_numpy()[opp[order]],
        "contact_id": contact[order],
        "rep_id": opps["owner_rep_id"].to_numpy()[opp[order]],
        "occurred_at": pd.DatetimeIndex(when[order]),
    })
    frame.insert(0, "activity_id", _ids("ACT", len(frame), 10))
    return frame


# ------------------------------------------------------------------------------------------------ commerce


def _simulate_products(rng: np.random.Generator, config: SimulationConfig, cal: _Calendar) -> dict:
    n, weeks = config.products, cal.weeks
    cat = np.arange(n) % len(CATEGORIES)
    rng.shuffle(cat)
    base_price = {"Hardware": 900.0, "Software": 400.0, "Consumables": 25.0, "Services": 1200.0,
                  "Accessories": 60.0}
    price0 = np.round(np.array([base_price[CATEGORIES[c]] for c in cat]) * np.exp(rng.normal(0, 0.35, n)), 2)
    cost = np.round(price0 * rng.uniform(0.35, 0.7, n), 2)
    floor = np.round(np.maximum(cost * 1.05, price0 * 0.6), 2)
    ceiling = np.round(price0 * rng.uniform(1.25, 1.6, n), 2)
    elasticity = np.round(rng.uniform(-2.8, -0.6, n), 3)
    comp_elasticity = np.round(rng.uniform(0.2, 0.8, n), 3)
    season_amp = rng.uniform(0.0, 0.35, n)
    season_phase = rng.uniform(0, 2 * np.pi, n)
    promo_lift = np.round(rng.uniform(1.1, 1.5, n), 3)
    share = rng.gamma(2.0, 1.0, n)
    # List price path: one or two changes per product, plus any price shock.
    list_price = np.repeat(price0[:, None], weeks, axis=1)
    changes = [(np.arange(n), np.zeros(n, dtype=np.int64), price0)]
    k = rng.integers(1, 3, n)
    for p in range(n):
        for wk in np.sort(rng.choice(np.arange(4, weeks), size=min(k[p], max(weeks - 4, 1)), replace=False)):
            factor = 1 + (rng.uniform(0.02, 0.1) if rng.random() < 0.8 else -rng.uniform(0.0, 0.05))
            list_price[p, wk:] = np.round(list_price[p, wk] * factor, 2)
            changes.append((np.array([p]), np.array([wk]), np.array([list_price[p, wk]])))
    for s in config.scenarios:
        if s.kind == "price_shock":
            wk = cal.first_week_from(s.month)
            if wk < weeks:
                list_price[:, wk:] = np.round(list_price[:, wk:] * (1 + config.mechanisms.price_shock), 2)
                changes.append((np.arange(n), np.full(n, wk), list_price[:, wk]))
    # Promotions: about three a year, one to three weeks, 10-30% off.
    promo = np.zeros((n, weeks))
    promos = []
    for p in range(n):
        for _ in range(rng.poisson(3 * weeks / 52)):
            w0 = int(rng.integers(0, weeks))
            length = int(rng.integers(1, 4))
            d = round(float(rng.uniform(0.1, 0.3)), 2)
            promo[p, w0:w0 + length] = np.maximum(promo[p, w0:w0 + length], d)
            promos.append((p, w0, min(w0 + length, weeks) - 1, d))
    # Competitors: two per product, a random walk around our initial price.
    comp_rows = []
    comp_price = np.zeros((n, weeks))
    for p in range(n):
        names = rng.choice(len(COMPETITORS), size=2, replace=False)
        walks = []
        for c in names:
            level = price0[p] * rng.uniform(0.9, 1.1) * np.exp(np.cumsum(rng.normal(0, 0.02, weeks)))
            walks.append(level)
            comp_rows.append((np.full(weeks, p), np.full(weeks, COMPETITORS[c], dtype=object),
                              np.full(weeks, None, dtype=object), np.arange(weeks), np.round(level, 2)))
        comp_price[p] = np.mean(walks, axis=0)
    for s in config.scenarios:
        if s.kind == "competitor_entry":
            w0 = cal.first_week_from(s.month)
            span = np.arange(w0, weeks)
            for p in range(n):
                if len(span):
                    comp_rows.append((np.full(len(span), p), np.full(len(span), ENTRANT, dtype=object),
                                      np.full(len(span), s.region, dtype=object), span,
                                      np.round(list_price[p, span] * rng.uniform(0.8, 0.9), 2)))
    week_of_year = cal.week_start.isocalendar().week.to_numpy().astype(float)
    season = 1 + season_amp[:, None] * np.sin(2 * np.pi * week_of_year[None, :] / 52 + season_phase[:, None])
    effective = list_price * (1 - promo)
    multiplier = (season * np.where(promo > 0, promo_lift[:, None], 1.0)
                  * (effective / price0[:, None]) ** elasticity[:, None]
                  * (comp_price / effective) ** comp_elasticity[:, None])
    ids = _ids("P", n, 5)
    names = [f"{CATEGORIES[c]} item {i + 1:03d}" for i, c in enumerate(cat)]
    products = pd.DataFrame({
        "product_id": ids,
        "name": names,
        "category": np.asarray(CATEGORIES, dtype=object)[cat],
        "product_line": [PRODUCT_LINE_OF_CATEGORY[CATEGORIES[c]] for c in cat],
        "unit_cost": cost,
        "list_price": list_price[:, -1],
        "price_floor": floor,
        "price_ceiling": np.maximum(ceiling, np.round(list_price[:, -1] * 1.05, 2)),
        "currency": "USD",
        "launched_at": (cal.start - pd.to_timedelta(rng.integers(100, 2000, n), unit="D")).normalize(),
    })
    ch_p = np.concatenate([c[0] for c in changes])
    ch_w = np.concatenate([c[1] for c in changes])
    ch_v = np.concatenate([c[2] for c in changes])
    price_changes = pd.DataFrame({
        "product_id": ids.to_numpy()[ch_p],
        "effective_from": cal.week_start[ch_w],
        "list_price": ch_v,
    }).drop_duplicates(["product_id", "effective_from"], keep="last").sort_values(
        ["product_id", "effective_from"]).reset_index(drop=True)
    promotions = pd.DataFrame(promos, columns=["p", "w0", "w1", "discount_pct"])
    promotions = pd.DataFrame({
        "promotion_id": _ids("PR", len(promotions), 6),
        "product_id": ids.to_numpy()[promotions["p"].to_numpy()] if len(promotions) else [],
        "start_date": cal.week_start[promotions["w0"].to_numpy()],
        "end_date": cal.week_start[promotions["w1"].to_numpy()] + pd.Timedelta(days=6),
        "discount_pct": promotions["discount_pct"].to_numpy(),
        "channel": "all",
    })
    cp = pd.DataFrame({
        "product_id": ids.to_numpy()[np.concatenate([c[0] for c in comp_rows])],
        "competitor": np.concatenate([c[1] for c in comp_rows]),
        "region": np.concatenate([c[2] for c in comp_rows]),
        "observed_at": cal.week_start[np.concatenate([c[3] for c in comp_rows])],
        "price": np.concatenate([c[4] for c in comp_rows]),
    })
    return {
        "products": products, "price_changes": price_changes, "promotions": promotions, "competitor_prices": cp,
        "category": cat, "share": share, "list_price": list_price, "promo": promo, "multiplier": multiplier,
        "elasticity": elasticity, "comp_elasticity": comp_elasticity, "price0": price0, "promo_lift": promo_lift,
        "season_amp": season_amp,
    }


_SEGMENT = {
    # order rate per week, extra lines per order, units per line, ticket rate per week, P(negative ticket),
    # base churn log-odds per week, price sensitivity
    "order_rate": np.array([0.55, 0.3, 0.18, 0.3, 0.08]),
    "basket": np.array([3.0, 2.0, 1.5, 2.0, 1.0]),
    "units": np.array([4.0, 3.0, 2.0, 2.5, 1.5]),
    "tickets": np.array([0.02, 0.03, 0.07, 0.04, 0.02]),
    "negative": np.array([0.12, 0.2, 0.35, 0.2, 0.15]),
    "churn": np.array([-7.0, -5.6, -4.6, -5.2, -5.6]),
    "price_sensitivity": np.array([0.3, 2.0, 1.0, 0.8, 1.0]),
}


def _simulate_commerce(rng: np.random.Generator, config: SimulationConfig, accounts: pd.DataFrame, latent: dict,
                       cal: _Calendar, prod: dict) -> dict:
    mech = config.mechanisms
    n_acc, weeks = len(accounts), cal.weeks
    n_prod = len(prod["products"])
    seg = latent["segment"]
    size_mult = np.array([0.7, 1.0, 1.6])[latent["size"]]
    order_rate = _SEGMENT["order_rate"][seg] * np.exp(rng.normal(0, 0.3, n_acc)) * size_mult
    units = _SEGMENT["units"][seg] * size_mult
    basket = _SEGMENT["basket"][seg]
    sens = _SEGMENT["price_sensitivity"][seg]
    pref = rng.dirichlet(np.full(len(CATEGORIES), 0.8), n_acc)
    pref_cdf = np.cumsum(pref, axis=1)
    cat = prod["category"]
    within = np.zeros((len(CATEGORIES), n_prod))
    for c in range(len(CATEGORIES)):
        members = np.flatnonzero(cat == c)
        within[c, members] = prod["share"][members] / prod["share"][members].sum()
    within_cdf = np.cumsum(within, axis=1)
    negotiated = np.where(accounts["tier"].to_numpy() == "strategic", 0.12,
                          np.where(accounts["tier"].to_numpy() == "key", 0.07, 0.0))
    # Price exposure: category list-price change over the last 13 weeks, weighted by the account's mix.
    cat_index = np.vstack([prod["list_price"][cat == c].mean(axis=0) / prod["list_price"][cat == c, 0].mean()
                           if (cat == c).any() else np.ones(weeks) for c in range(len(CATEGORIES))])
    lagged = np.concatenate([np.repeat(cat_index[:, :1], 13, axis=1), cat_index[:, :-13]], axis=1)
    cat_change = cat_index / lagged - 1
    # Expected weekly units per product, for the stock policy (planners know promotions and prices).
    p_cat = pref.mean(axis=0)
    customers0 = (~latent["prospect"]).sum()
    base_units = (customers0 * np.mean(order_rate * (1 + basket) * units) * p_cat[cat] * within[cat, np.arange(n_prod)])
    expected = base_units[:, None] * prod["multiplier"]
    on_hand = np.ceil(3.0 * expected[:, 0]).astype(np.int64) + 5
    pending = np.zeros(n_prod, dtype=np.int64)

    churned = np.zeros(n_acc, dtype=bool)
    churn_week = np.full(n_acc, -1)
    problem = np.zeros(n_acc, dtype=bool)
    ring_tickets = np.zeros((13, n_acc), dtype=np.float32)
    ring_neg = np.zeros((13, n_acc), dtype=np.float32)
    ring_lowcsat = np.zeros((13, n_acc), dtype=np.float32)
    order_parts, line_parts, ticket_parts, inventory_parts, demand_parts, churn_truth = [], [], [], [], [], []
    month_iter = 0
    order_counter = 0
    for w in range(weeks):
        customer = (latent["since_week"] <= w) & ~latent["prospect"]
        active = customer & ~churned
        # Service-problem episodes.
        start_problem = rng.random(n_acc) < np.where(seg == 2, 0.02, 0.01)
        end_problem = rng.random(n_acc) < 0.15
        problem = np.where(problem, ~end_problem, start_problem) & customer
        exposure = pref @ cat_change[:, w]
        n_tickets13 = ring_tickets.sum(axis=0)
        eta = (_SEGMENT["churn"][seg] + mech.churn_negative_ticket * (ring_neg.sum(axis=0) >= 1)
               + mech.churn_many_tickets * (n_tickets13 >= 3) + mech.churn_low_csat * (ring_lowcsat.sum(axis=0) >= 1)
               + mech.churn_price_increase * sens * np.maximum(exposure, 0))
        c = _sigmoid(eta)
        m_bar = (prod["multiplier"][:, w] * within[cat, np.arange(n_prod)] * p_cat[cat]).sum()
        z = np.exp(-units * m_bar)
        p_empty = z * np.exp(basket * (z - 1))
        lam = order_rate * (1 - p_empty)
        while month_iter < len(cal.month_ends) and cal.month_end_week[month_iter] == w:
            churn_truth.append(_churn_truth(customer, churned, c, lam, cal.month_ends[month_iter]))
            month_iter += 1
        new_churn = active & (rng.random(n_acc) < c)
        churned |= new_churn
        churn_week[new_churn] = w
        active &= ~new_churn
        # Tickets.
        t_rate = _SEGMENT["tickets"][seg] * np.where(problem, 3.0, 1.0) * customer
        t_count = rng.poisson(t_rate)
        t_acc = np.repeat(np.arange(n_acc), t_count)
        p_neg = np.where(problem[t_acc], 0.7, _SEGMENT["negative"][seg][t_acc])
        p_pos = np.where(problem[t_acc], 0.1, 0.35)
        u = rng.random(len(t_acc))
        sentiment = np.where(u < p_neg, 0, np.where(u < p_neg + p_pos, 2, 1))
        csat = np.where(sentiment == 0, rng.choice([1, 2, 3], len(t_acc), p=[0.5, 0.35, 0.15]),
                        np.where(sentiment == 1, rng.choice([3, 4], len(t_acc)), rng.choice([4, 5], len(t_acc))))
        ring_tickets = np.roll(ring_tickets, 1, axis=0)
        ring_neg = np.roll(ring_neg, 1, axis=0)
        ring_lowcsat = np.roll(ring_lowcsat, 1, axis=0)
        ring_tickets[0] = t_count
        ring_neg[0] = np.bincount(t_acc[sentiment == 0], minlength=n_acc)
        ring_lowcsat[0] = np.bincount(t_acc[csat <= 2], minlength=n_acc)
        ticket_parts.append((t_acc, np.full(len(t_acc), w), sentiment, csat, problem[t_acc]))
        # Orders and lines.
        k = rng.poisson(order_rate * active)
        o_acc = np.repeat(np.arange(n_acc), k)
        n_lines = 1 + rng.poisson(basket[o_acc])
        l_order = np.repeat(np.arange(len(o_acc)), n_lines)
        l_acc = o_acc[l_order]
        l_cat = _inverse_cdf(rng, pref_cdf[l_acc])
        l_prod = _inverse_cdf(rng, within_cdf[l_cat])
        qty = rng.poisson(units[l_acc] * prod["multiplier"][l_prod, w])
        demand = np.bincount(l_prod, weights=qty, minlength=n_prod).astype(np.int64)
        # Limited inventory: lines are served in random order until stock runs out.
        perm = rng.permutation(len(l_prod))
        order_idx = perm[np.lexsort((np.arange(len(perm)), l_prod[perm]))]
        q_sorted = qty[order_idx]
        p_sorted = l_prod[order_idx]
        cum = np.cumsum(q_sorted)
        group_start = np.searchsorted(p_sorted, p_sorted, side="left")
        before = cum - q_sorted - np.where(group_start > 0, cum[group_start - 1], 0)
        served_sorted = np.clip(on_hand[p_sorted] - before, 0, q_sorted)
        served = np.empty_like(qty)
        served[order_idx] = served_sorted
        sold = np.bincount(l_prod, weights=served, minlength=n_prod).astype(np.int64)
        inventory_parts.append((np.arange(n_prod), np.full(n_prod, w), on_hand.copy(), pending.copy()))
        demand_parts.append((np.arange(n_prod), np.full(n_prod, w), expected[:, w], demand, sold))
        on_hand = on_hand - sold + pending
        disrupted = rng.random(n_prod) < 0.08
        target = np.ceil(2.5 * expected[:, min(w + 1, weeks - 1)]).astype(np.int64) + 2
        pending = np.maximum(target - on_hand, 0)
        pending = np.where(disrupted, (pending * 0.4).astype(np.int64), pending)
        keep = served > 0
        kept_orders = np.unique(l_order[keep])
        remap = np.full(len(o_acc), -1)
        remap[kept_orders] = np.arange(len(kept_orders)) + order_counter
        order_parts.append((o_acc[kept_orders], np.full(len(kept_orders), w)))
        disc = np.maximum(prod["promo"][l_prod, w], negotiated[l_acc])[keep]
        line_parts.append((remap[l_order[keep]], l_prod[keep], served[keep],
                           np.round(prod["list_price"][l_prod[keep], w] * (1 - disc), 2), np.round(disc, 3)))
        order_counter += len(kept_orders)
    return {
        "orders": order_parts, "lines": line_parts, "tickets": ticket_parts, "inventory": inventory_parts,
        "demand": demand_parts, "churn_truth": churn_truth, "churn_week": churn_week, "pref": pref,
        "sensitivity": sens,
    }


def _churn_truth(customer: np.ndarray, churned: np.ndarray, c: np.ndarray, lam: np.ndarray,
                 month_end: pd.Timestamp) -> pd.DataFrame:
    """P(no order in the next 13 weeks | latent state), hazards held at the month end."""
    horizon = 13
    stay_quiet = (1 - c) * np.exp(-lam)
    k = np.arange(horizon)
    p = (stay_quiet[:, None] ** k[None, :] * c[:, None]).sum(axis=1) + stay_quiet**horizon
    p = np.where(churned, 1.0, p)
    rows = np.flatnonzero(customer)
    return pd.DataFrame({"acc": rows, "month_end": month_end, "p_no_order_90d": p[rows], "churned": churned[rows]})


def _commerce_tables(rng: np.random.Generator, accounts: pd.DataFrame, contacts: pd.DataFrame,
                     contact_acc: np.ndarray, cal: _Calendar, prod: dict, sim: dict) -> dict:
    acc_ids = accounts["account_id"].to_numpy()
    prod_ids = prod["products"]["product_id"].to_numpy()
    o_acc = np.concatenate([o[0] for o in sim["orders"]])
    o_week = np.concatenate([o[1] for o in sim["orders"]])
    n_orders = len(o_acc)
    o_when = _week_times(rng, cal.week_ns, o_week)
    channel_map = {"field": "field", "inside_sales": "phone", "web": "web", "partner": "partner", "email": "web"}
    channel = np.array([channel_map[c] for c in accounts["preferred_channel"]], dtype=object)
    orders = pd.DataFrame({
        "order_id": _ids("ORD", n_orders, 9),
        "account_id": acc_ids[o_acc],
        "order_date": pd.DatetimeIndex(o_when),
        "status": "completed",
        "channel": channel[o_acc],
        "currency": "USD",
        "country": accounts["country"].to_numpy()[o_acc],
    })
    l_order = np.concatenate([x[0] for x in sim["lines"]])
    l_prod = np.concatenate([x[1] for x in sim["lines"]])
    l_qty = np.concatenate([x[2] for x in sim["lines"]]).astype(np.int64)
    l_price = np.concatenate([x[3] for x in sim["lines"]])
    l_disc = np.concatenate([x[4] for x in sim["lines"]])
    # About 2% of orders see a return 1-4 weeks later: a cancelled order with negative quantities.
    returned = np.flatnonzero(rng.random(n_orders) < 0.02)
    r_when = o_when[returned] + rng.integers(7, 28, len(returned)) * 86400 * 1_000_000_000
    ok = r_when < cal.end.value
    returned, r_when = returned[ok], r_when[ok]
    first_line = np.searchsorted(l_order, returned)
    r_orders = pd.DataFrame({
        "order_id": orders["order_id"].to_numpy()[returned] + "-R",
        "account_id": acc_ids[o_acc[returned]],
        "order_date": pd.DatetimeIndex(r_when),
        "status": "cancelled",
        "channel": channel[o_acc[returned]],
        "currency": "USD",
        "country": accounts["country"].to_numpy()[o_acc[returned]],
    })
    lines = pd.DataFrame({
        "order_id": orders["order_id"].to_numpy()[l_order],
        "product_id": prod_ids[l_prod],
        "quantity": l_qty,
        "unit_price": l_price,
        "discount": l_disc,
    })
    r_lines = pd.DataFrame({
        "order_id": r_orders["order_id"].to_numpy(),
        "product_id": prod_ids[l_prod[first_line]],
        "quantity": -np.maximum(1, (l_qty[first_line] * rng.uniform(0.2, 1.0, len(first_line))).astype(np.int64)),
        "unit_price": l_price[first_line],
        "discount": l_disc[first_line],
    })
    if len(r_orders):  # a small organisation may have no returns; pandas warns about concatenating empty frames
        orders = pd.concat([orders, r_orders], ignore_index=True)
        lines = pd.concat([lines, r_lines], ignore_index=True)
    lines.insert(0, "line_id", _ids("L", len(lines), 10))
    # Tickets.
    t_acc = np.concatenate([t[0] for t in sim["tickets"]])
    t_week = np.concatenate([t[1] for t in sim["tickets"]])
    t_sent = np.concatenate([t[2] for t in sim["tickets"]])
    t_csat = np.concatenate([t[3] for t in sim["tickets"]]).astype(float)
    t_problem = np.concatenate([t[4] for t in sim["tickets"]])
    t_when = _week_times(rng, cal.week_ns, t_week)
    resolve = t_when + (rng.exponential(np.where(t_problem, 6.0, 2.0)) * 86400).astype(np.int64) * 1_000_000_000
    resolved = pd.DatetimeIndex(np.where(resolve < cal.end.value, resolve, np.iinfo(np.int64).min))
    t_csat[rng.random(len(t_csat)) < 0.2] = np.nan
    sentiment_names = np.asarray(SENTIMENTS, dtype=object)[t_sent]
    c_acc = contact_acc
    first = np.searchsorted(c_acc, t_acc, side="left")
    n_c = np.searchsorted(c_acc, t_acc, side="right") - first
    pick = np.minimum(first + (rng.random(len(t_acc)) * np.maximum(n_c, 1)).astype(np.int64), len(c_acc) - 1)
    contact = np.where(n_c > 0, contacts["contact_id"].to_numpy()[pick], None)
    category = np.where(t_sent == 0, _pick(rng, ["delivery", "product_defect", "billing"], len(t_acc)),
                        np.where(t_sent == 1, _pick(rng, ["how_to", "account", "billing"], len(t_acc)),
                                 _pick(rng, ["other", "how_to"], len(t_acc))))
    products = prod["products"]["name"].to_numpy()
    text = fill_templates(rng, TICKET_TEMPLATES, sentiment_names,
                          {"product": products[rng.integers(0, len(products), len(t_acc))],
                           "order": _pick(rng, orders["order_id"].to_numpy()[:1000] if len(orders) else ["ORD0"],
                                          len(t_acc))})
    tickets = pd.DataFrame({
        "account_id": acc_ids[t_acc],
        "contact_id": contact,
        "created_at": pd.DatetimeIndex(t_when),
        "resolved_at": resolved,
        "channel": _pick(rng, TICKET_CHANNELS, len(t_acc)),
        "category": category,
        "text": text,
        "csat": pd.array(t_csat, dtype="Int64") if len(t_csat) else pd.array([], dtype="Int64"),
    })
    order = np.argsort(tickets["created_at"].to_numpy(), kind="stable")
    tickets = tickets.iloc[order].reset_index(drop=True)
    t_sent_sorted = sentiment_names[order]
    tickets.insert(0, "ticket_id", _ids("T", len(tickets), 8))
    inv = sim["inventory"]
    inventory = pd.DataFrame({
        "product_id": prod_ids[np.concatenate([i[0] for i in inv])],
        "snapshot_date": cal.week_start[np.concatenate([i[1] for i in inv])],
        "on_hand": np.concatenate([i[2] for i in inv]),
        "on_order": np.concatenate([i[3] for i in inv]),
    })
    dem = sim["demand"]
    demand = pd.DataFrame({
        "product_id": prod_ids[np.concatenate([d[0] for d in dem])],
        "week_start": cal.week_start[np.concatenate([d[1] for d in dem])],
        "expected_units": np.round(np.concatenate([d[2] for d in dem]), 3),
        "demand_units": np.concatenate([d[3] for d in dem]),
        "sold_units": np.concatenate([d[4] for d in dem]),
    })
    demand["stockout"] = demand["sold_units"] < demand["demand_units"]
    return {"orders": orders, "order_lines": lines, "support_tickets": tickets, "inventory": inventory,
            "demand": demand, "ticket_sentiment": t_sent_sorted}


# ------------------------------------------------------------------------------------------------ entry point


def simulate_organisation(config: SimulationConfig) -> SimulatedOrganisation:
    """Simulate every canonical table of a B2B sales organisation, and its ground truth.

    Args:
        config: size, window, seed and scenarios.

    Returns:
        The canonical tables and, apart from them, the ground truth: true loss and churn probabilities per
        month end, true outcomes, segments, elasticities, product-week demand and text sentiment labels.
    """
    cal = _Calendar.build(config)
    if cal.weeks < 8:
        raise ValueError("the window must span at least 8 weeks")
    names = ["reps", "accounts", "contacts", "signals", "opps", "opp_tables", "products", "commerce", "tables"]
    rngs = dict(zip(names, (np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(len(names))),
                    strict=True))
    reps = _simulate_reps(rngs["reps"], config, cal)
    accounts, latent = _simulate_accounts(rngs["accounts"], config, cal, reps)
    contacts, dm_left, contact_acc = _simulate_contacts(rngs["contacts"], accounts, latent, cal)
    signals = _simulate_news_and_budgets(rngs["signals"], config, accounts, latent, cal)
    opp_sim = _simulate_opportunities(rngs["opps"], config, accounts, latent, cal, dm_left, signals)
    opp = _opportunity_tables(rngs["opp_tables"], config, accounts, reps, contacts, contact_acc, cal, opp_sim)
    prod = _simulate_products(rngs["products"], config, cal)
    com_sim = _simulate_commerce(rngs["commerce"], config, accounts, latent, cal, prod)
    com = _commerce_tables(rngs["tables"], accounts, contacts, contact_acc, cal, prod, com_sim)

    tables = {
        "sales_reps": reps,
        "accounts": accounts,
        "contacts": contacts,
        "opportunities": opp["opportunities"],
        "opportunity_stage_history": opp["history"],
        "activities": opp["activities"],
        "products": prod["products"],
        "price_changes": prod["price_changes"],
        "promotions": prod["promotions"],
        "inventory": com["inventory"],
        "competitor_prices": prod["competitor_prices"],
        "orders": com["orders"],
        "order_lines": com["order_lines"],
        "support_tickets": com["support_tickets"],
        "budget_signals": signals["budgets"],
        "news_signals": signals["news"],
    }
    for name, frame in tables.items():
        tables[name] = frame[TABLES[name].column_names].reset_index(drop=True)

    acc_ids = accounts["account_id"].to_numpy()
    churn = pd.concat(com_sim["churn_truth"], ignore_index=True) if com_sim["churn_truth"] else pd.DataFrame(
        columns=["acc", "month_end", "p_no_order_90d", "churned"])
    week_start = cal.week_start
    churn_week = com_sim["churn_week"]
    ground_truth = {
        "opportunity_loss_probability": opp["loss_truth"],
        "opportunity_outcomes": opp["outcomes"],
        "customer_churn_probability": pd.DataFrame({
            "account_id": acc_ids[churn["acc"].to_numpy().astype(int)],
            "month_end": churn["month_end"].to_numpy(),
            "p_no_order_90d": churn["p_no_order_90d"].round(6).to_numpy(),
            "churned": churn["churned"].to_numpy(),
        }),
        "account_segments": pd.DataFrame({
            "account_id": acc_ids,
            "segment": np.asarray(SEGMENTS, dtype=object)[latent["segment"]],
            "price_sensitivity": com_sim["sensitivity"],
            "churned_at": pd.DatetimeIndex(np.where(churn_week >= 0, week_start[np.maximum(churn_week, 0)].asi8,
                                                    np.iinfo(np.int64).min)),
        }),
        "product_elasticities": pd.DataFrame({
            "product_id": prod["products"]["product_id"],
            "elasticity": prod["elasticity"],
            "competitor_elasticity": prod["comp_elasticity"],
            "reference_price": prod["price0"],
            "promotion_lift": prod["promo_lift"],
            "season_amplitude": prod["season_amp"].round(4),
        }),
        "product_week_demand": com["demand"],
        "text_sentiment": pd.concat([
            pd.DataFrame({"source": "support_tickets", "id": tables["support_tickets"]["ticket_id"],
                          "sentiment": com["ticket_sentiment"]}),
            pd.DataFrame({"source": "news_signals", "id": tables["news_signals"]["news_id"],
                          "sentiment": signals["news_sentiment"]}),
        ], ignore_index=True),
    }
    notes = {
        "config": config.model_dump(mode="json"),
        "scenarios": [s.label() for s in config.scenarios],
        "window": {"start": cal.start.date().isoformat(), "end": cal.end.date().isoformat(), "weeks": cal.weeks},
    }
    return SimulatedOrganisation(tables=tables, ground_truth=ground_truth, config=config, notes=notes)


#: Columns that hold a later state of a row (a deal's close, a contact's departure, a ticket's resolution, an
#: account's first purchase): a month-end export shows the row with them empty until they happen.
STATE_COLUMNS = {"accounts": ("customer_since",), "contacts": ("left_at",), "opportunities": ("closed_at",),
                 "support_tickets": ("resolved_at",)}


def snapshot_tables(tables: dict[str, pd.DataFrame], day: date) -> dict[str, pd.DataFrame]:
    """The canonical tables as a CRM and ERP export would show them at the end of ``day``.

    A row appears once every date it holds (other than a planned one, such as an expected close) has passed; a
    later state (``STATE_COLUMNS``) is empty until it happens, and an open deal shows the stage its stage history
    had reached; rows whose parent is not yet known are left out with it. Pure: the tables are not modified.
    """
    end = pd.Timestamp(day) + pd.Timedelta(days=1)
    out: dict[str, pd.DataFrame] = {}
    for name, frame in tables.items():
        table = TABLES.get(name)
        if table is None:
            out[name] = frame
            continue
        state = STATE_COLUMNS.get(name, ())
        keep = np.ones(len(frame), dtype=bool)
        for column in table.columns:
            if column.dtype in ("date", "timestamp") and not column.planned and column.name not in state \
                    and column.name in frame.columns:
                values = pd.to_datetime(frame[column.name])
                keep &= (values.isna() | (values < end)).to_numpy()
        for fk in table.foreign_keys:
            if fk.parent in out and fk.column in frame.columns:
                parent_key = TABLES[fk.parent].primary_key[0]
                keep &= (frame[fk.column].isna() | frame[fk.column].isin(out[fk.parent][parent_key])).to_numpy()
        part = frame[keep].copy()
        for column in state:
            later = pd.to_datetime(part[column]) >= end
            part[column] = part[column].mask(later)
            if name == "opportunities":
                part["outcome"] = part["outcome"].mask(later)
        if name == "opportunities" and "opportunity_stage_history" in tables:
            history = tables["opportunity_stage_history"]
            known = history[pd.to_datetime(history["changed_at"]) < end].sort_values("changed_at")
            reached = known.groupby("opportunity_id")["to_stage"].last()
            still_open = part["closed_at"].isna()
            part.loc[still_open, "stage"] = part.loc[still_open, "opportunity_id"].map(reached).fillna(
                part.loc[still_open, "stage"]).to_numpy()
        out[name] = part.reset_index(drop=True)
    return out


def unbiased_tables(org: SimulatedOrganisation) -> dict[str, pd.DataFrame]:
    """The tables with every deal's true outcome recorded: what the CRM held before a ``biased_history`` scenario
    rewrote the outcomes of small accounts' won deals (the deals' stages and their stage histories' final rows are
    put back too). Pure: the organisation is not modified."""
    truth = org.ground_truth["opportunity_outcomes"]
    flipped = set(truth.loc[truth["true_outcome"].ne(truth["recorded_outcome"]) & truth["true_outcome"].eq("won"),
                            "opportunity_id"])
    tables = dict(org.tables)
    if not flipped:
        return tables
    deals = tables["opportunities"].copy()
    rewrite = deals["opportunity_id"].isin(flipped)
    deals.loc[rewrite, "outcome"] = "won"
    deals.loc[rewrite, "stage"] = "closed_won"
    history = tables["opportunity_stage_history"].copy()
    final = history["opportunity_id"].isin(flipped) & history["to_stage"].eq("closed_lost")
    history.loc[final, "to_stage"] = "closed_won"
    tables["opportunities"], tables["opportunity_stage_history"] = deals, history
    return tables


def changed_rows(previous: dict[str, pd.DataFrame] | None, current: dict[str, pd.DataFrame]
                 ) -> dict[str, pd.DataFrame]:
    """The rows of ``current`` that are new or differ from ``previous`` (by primary key): an incremental export."""
    if previous is None:
        return dict(current)
    out = {}
    for name, frame in current.items():
        before = previous.get(name)
        if before is None or name not in TABLES:
            out[name] = frame
            continue
        key = list(TABLES[name].primary_key)
        old = before[key].assign(_row=pd.util.hash_pandas_object(before, index=False).to_numpy())
        now = frame[key].assign(_row=pd.util.hash_pandas_object(frame, index=False).to_numpy())
        same = now.merge(old.drop_duplicates(key), on=[*key, "_row"], how="left", indicator=True)["_merge"]
        out[name] = frame[(same != "both").to_numpy()].reset_index(drop=True)
    return out


def write_organisation(org: SimulatedOrganisation, out: Path, fmt: Literal["parquet", "csv"] = "parquet") -> dict:
    """Write the canonical tables to ``out/<table>.<fmt>`` and ground truth to ``out/ground_truth/``.

    Args:
        org: a simulated organisation.
        out: the folder to write (created; existing table files are replaced).
        fmt: file format of the canonical tables; ground truth is always Parquet.

    Returns:
        ``{"out": folder, "tables": {table: rows}, "ground_truth": {name: rows}}``.
    """
    out = Path(out)
    truth_dir = out / "ground_truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in org.tables.items():
        for old in (out / f"{name}.csv", out / f"{name}.parquet"):
            old.unlink(missing_ok=True)
        if fmt == "csv":
            frame.to_csv(out / f"{name}.csv", index=False, date_format="%Y-%m-%dT%H:%M:%S")
        else:
            frame.to_parquet(out / f"{name}.parquet", index=False)
    for name, frame in org.ground_truth.items():
        frame.to_parquet(truth_dir / f"{name}.parquet", index=False)
    (truth_dir / "README.md").write_text(
        "Ground truth of the simulated organisation. No feature may read these files; they exist to measure\n"
        "how close models come to the truth (oracle AUC, elasticity error, segment recovery).\n"
    )
    (truth_dir / "simulation.json").write_text(json.dumps(org.notes, indent=2, default=str))
    return {
        "out": str(out),
        "tables": {name: len(frame) for name, frame in org.tables.items()},
        "ground_truth": {name: len(frame) for name, frame in org.ground_truth.items()},
    }

"""The backtest: the monthly loop replayed on a simulated organisation, with three arms and the ROI.

``run_backtest`` simulates an organisation whose window starts ``history_months`` before the first backtested
month, and then lives through it month by month. At the end of each month the month's data is delivered, as a
CRM and ERP export would show it that day (``features.sources.simulator.snapshot_tables``: deals still open show
no close, rows dated later do not exist yet), into the loop's inbox, and ingested with that day as the load's
as-of date. Then the loop runs as it does in production: ``monitor`` judges the champions on the outcomes that
have landed (and on drift), ``retrain`` trains, audits and gates a candidate per task, with the alerts as the
reason where there were any, and a scripted validator approves the REVIEW versions that pass every blocking
check. The champion then scores what is open (and logs it, as the service would), which the next months'
monitoring judges.

Every task the simulator feeds is replayed (``BACKTEST_TASKS``: opportunity loss, customer churn, product demand,
customer value, customer segments). Three arms score the same rows at every month end: the loop's champion, the
static champion (the version trained at the end of the month before the backtest, never replaced), and no model
(for risk the outcome rate of each stage, the deal's or the customer's lifecycle stage, fitted each month on the
outcomes known by then; seasonal naive for demand; last year's spend carried forward for value; KMeans on
recency, frequency and value, refitted monthly, for segments), with the simulator's own probability beside them as
the ceiling for 90-day risk models. Their figures are computed against the simulator's ground truth, which no step
of the loop reads: a deal scored at a month end is lost when its true outcome is lost and it closed within the
model's horizon; an account churned when the simulator's orders hold no completed one within the horizon; value is
what those orders were worth; demand is the units sold (and, for the inventory cost, the units demanded) of each
product and week; segments are the simulator's latent ones. A value version scores the accounts' purchases as of
the month end with its fitted parameters (its summaries refreshed), so that a static model's figure shows its
parameters ageing, not a frozen snapshot.

A month's figures are those of the scores made at the end of the month before, as they play out in the month.
With ``biased_history@YYYY-MM`` the exports before that month carry the true outcomes and the one of that month
rewrites them (small accounts' won deals of the window's first half recorded lost), as a CRM migration would.
"""

from __future__ import annotations

import html
import io
import resource
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from salesml.access import Principal
from salesml.settings import Settings

ARMS = ("loop", "static", "baseline")
ARM_LABELS = {"loop": "monthly loop", "static": "static champion", "baseline": "no model",
              "oracle": "ground truth (ceiling)"}
#: The simulator's true loss probability is over 90 days: the ceiling is drawn for models of that horizon.
ORACLE_HORIZON = 90
#: The scripted validator of a backtest: approves REVIEW versions whose every blocking check passed, and promotes
#: them and the PASS versions the policy leaves to a validator.
VALIDATOR = Principal("backtest:validator", "model_validator", "all", "")
#: Months simulated after the last backtested month, so that its scores' outcomes (up to a 90-day horizon, plus
#: the ROI's lead) are in the ground truth.
TAIL_MONTHS = 4
#: The tasks a backtest replays: those the simulator's tables feed (risk, demand, value and segments).
BACKTEST_TASKS = ("opportunity_loss", "customer_churn", "product_demand", "customer_value", "customer_segments")
#: The no-model arm of a risk task: the outcome rate of each value of this column of its view, refitted monthly
#: (the pipeline stage for deals, the lifecycle stage for customers).
BASELINE_COLUMNS = {"opportunity": "stage", "customer": "lifecycle_stage"}
#: Segments of the no-model KMeans when no segmentation was ever promoted (else as many as the first one found).
BASELINE_SEGMENTS = 5
#: The figures per arm and month that the report plots, by kind.
HEADLINE_METRICS = {"risk": ("roc_auc", "calibration_error"), "demand": ("wape",),
                    "value": ("wape", "spearman", "p_alive_calibration_error"),
                    "segments": ("ari", "stability_ari", "noise_share")}


class BacktestError(RuntimeError):
    """The backtest cannot run as asked (the message says why)."""


class BacktestConfig(BaseModel):
    """What to backtest (the ``salesml backtest`` options)."""

    model_config = ConfigDict(extra="forbid")
    start: date = Field(description="The first backtested month (its first day).")
    months: int = Field(12, ge=1, le=36, description="Months backtested.")
    history_months: int = Field(12, ge=4, le=60, description="Months of data before the first backtested month "
                                                               "that the first (static) champion trains on.")
    accounts: int = Field(700, ge=50, le=200_000)
    seed: int = 7
    scenarios: list[str] = Field(default_factory=list, description="Simulator scenarios, e.g. "
                                                                   "competitor_entry@2025-07:NORTH.")
    tasks: list[str] = Field(default_factory=lambda: list(BACKTEST_TASKS), description="Tasks replayed (default: "
                             "every task the simulator feeds).")
    trials: int | None = Field(None, ge=1, description="Optuna trials per retraining (default: the configs').")
    lead_days: int = Field(30, ge=0, description="A deal counts as caught when flagged this many days before it "
                                                 "was lost.")
    flag_threshold: float | None = Field(None, gt=0, lt=1, description="The probability at which a deal is "
                                         "flagged (default: the first champion's alert threshold, for every arm).")
    forecast_weeks: int = Field(4, ge=1, le=13, description="Weeks each month-end demand forecast covers.")
    stockout_cost: float = Field(0.30, ge=0, description="Cost of a unit short, as a share of its list price "
                                                         "(the margin lost).")
    holding_cost: float = Field(0.10, ge=0, description="Cost of a unit left over, as a share of its list price.")

    @field_validator("start", mode="before")
    @classmethod
    def _month(cls, value: object) -> object:
        if isinstance(value, str) and len(value) == 7:
            try:
                return date.fromisoformat(value + "-01")
            except ValueError:
                raise ValueError(f"--from must be a month YYYY-MM, not {value!r}") from None
        return value

    @field_validator("start")
    @classmethod
    def _first_day(cls, value: date) -> date:
        return value.replace(day=1)

    def month_ends(self) -> list[date]:
        """The month ends the loop runs at: the one before the first month (the first champion), then each month's."""
        first = pd.Timestamp(self.start) - pd.Timedelta(days=1)
        return [(first + pd.offsets.MonthEnd(k)).date() for k in range(self.months + 1)]

    def months_backtested(self) -> list[str]:
        """The backtested months, ``YYYY-MM``."""
        return [f"{(pd.Timestamp(self.start) + pd.DateOffset(months=k)):%Y-%m}" for k in range(self.months)]


@dataclass
class BacktestReport:
    """What a backtest did: per month the loop's state, per task and arm the figures, and the ROI."""

    config: dict
    kinds: dict[str, str] = field(default_factory=dict)
    months: list[dict] = field(default_factory=list)
    arms: dict[str, list[dict]] = field(default_factory=dict)
    roi: dict[str, dict] = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    report: str | None = None

    def to_dict(self) -> dict:
        """The JSON form."""
        return {"config": self.config, "kinds": self.kinds, "months": self.months, "arms": self.arms, "roi": self.roi,
                "timings": self.timings, "notes": self.notes, "report": self.report}

    def arm_series(self, task: str, arm: str, metric: str, region: str | None = None) -> list[float | None]:
        """One arm's figure per month (``None`` where it has none), overall or in a region."""
        rows = [r for r in self.arms.get(task, []) if r["arm"] == arm and r.get("region") == region]
        by_month = {r["month"]: r.get(metric) for r in rows}
        return [by_month.get(m["month"]) for m in self.months if m["backtested"]]


# ------------------------------------------------------------------------------------------------ pure steps


def risk_labels(opportunities: pd.DataFrame, outcomes: pd.DataFrame, ids: Sequence[str], day: date, horizon: int
                ) -> np.ndarray:
    """Ground truth for deals scored at the end of ``day``: 1 when the deal's true outcome is lost and it closed
    within ``horizon`` days after that day, else 0 (deals already closed are not scored, so not asked)."""
    deals = opportunities.set_index("opportunity_id")
    truth = outcomes.set_index("opportunity_id")["true_outcome"]
    end = pd.Timestamp(day) + pd.Timedelta(days=1)
    closed = pd.to_datetime(deals["closed_at"].reindex(list(ids)))
    lost = truth.reindex(list(ids)).eq("lost")
    return (lost & closed.ge(end) & closed.lt(end + pd.Timedelta(days=horizon))).to_numpy(dtype=int)


def churn_labels(purchases: pd.DataFrame, ids: Sequence[str], day: date, horizon: int) -> np.ndarray:
    """Ground truth for accounts scored at the end of ``day``: 1 when the account completed no order within
    ``horizon`` days after that day (``purchases`` as ``features.views.purchase_history`` gives them)."""
    from training.value import holdout_purchases

    bought = holdout_purchases(purchases, pd.Timestamp(day), horizon)["purchases"]
    return (~pd.Index([str(i) for i in ids]).isin(bought.index[bought > 0])).astype(int)


def value_month_figures(actual: np.ndarray, predicted: np.ndarray, ordered: np.ndarray, p_alive: np.ndarray
                        ) -> dict:
    """A value arm's figures in a month: monitoring's live figures (WAPE, MAE, P(alive) calibration) and the
    ranking figures (Spearman, the top 20%'s share of the realised value)."""
    from monitoring.live import value_figures
    from training.value import spearman, top_share

    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    out = value_figures(actual, predicted, ordered, p_alive)
    if len(actual) > 1:
        out |= {"spearman": spearman(actual, predicted), "top20_capture": top_share(actual, predicted, 0.2)}
    return out


def segment_month_figures(labels: pd.Series, truth: pd.Series, previous: pd.Series | None) -> dict:
    """A segmentation arm's figures in a month: the adjusted Rand index against the true segments (unassigned
    accounts count as one group), against the same arm's assignment a month before on the accounts in both
    (``stability_ari``), the number of segments and the unassigned share.

    Args:
        labels: segment per account (``-1`` unassigned), indexed by account.
        truth: the true segment per account.
        previous: the arm's labels of the month before, or ``None``.
    """
    from sklearn.metrics import adjusted_rand_score

    known = truth.reindex(labels.index)
    mask = known.notna().to_numpy()
    out = {"labelled": int(mask.sum()), "segments": int(labels[labels >= 0].nunique()),
           "noise_share": float((labels == -1).mean()) if len(labels) else None}
    if mask.sum() > 1:
        out["ari"] = float(adjusted_rand_score(known[mask].astype(str), labels[mask].astype(int)))
    if previous is not None:
        both = labels.index.intersection(previous.index)
        if len(both) > 1:
            out["stability_ari"] = float(adjusted_rand_score(previous.loc[both].astype(int),
                                                             labels.loc[both].astype(int)))
    return out


def risk_month_figures(y: np.ndarray, p: np.ndarray) -> dict:
    """ROC AUC, calibration error and rates of one arm's scores in a month (``roc_auc`` is absent without both
    outcomes)."""
    from monitoring.live import risk_figures

    y = np.asarray(y, dtype=int)
    if len(y) == 0 or y.min() == y.max():
        return {"labelled": int(len(y)), "positives": int(y.sum())}
    return risk_figures(y, p)


def caught_deals(scores: pd.DataFrame, opportunities: pd.DataFrame, outcomes: pd.DataFrame, threshold: float,
                 lead_days: int, first: date, last: date) -> dict:
    """The ROI of a risk arm: of the deals truly lost between ``first`` and ``last``, those the arm flagged
    (probability at or above ``threshold``) at a month end at least ``lead_days`` before the deal closed.

    Args:
        scores: ``opportunity_id``, ``day`` (the month end scored at), ``probability``.

    Returns:
        Counts and values of deals lost, caught and missed, and of deals flagged that were not lost (false alarms).
    """
    deals = opportunities.set_index("opportunity_id")
    truth = outcomes.set_index("opportunity_id")["true_outcome"]
    closed = pd.to_datetime(deals["closed_at"])
    window = closed.ge(pd.Timestamp(first)) & closed.lt(pd.Timestamp(last) + pd.Timedelta(days=1))
    lost = deals.index[window & truth.reindex(deals.index).eq("lost")]
    s = scores.assign(day=pd.to_datetime(scores["day"]))
    s = s[s["opportunity_id"].isin(deals.index)]
    s = s.assign(closed=closed.reindex(s["opportunity_id"]).to_numpy())
    early = s[(s["probability"] >= threshold)
              & (s["closed"].isna() | (s["closed"] - s["day"] >= pd.Timedelta(days=lead_days)))]
    flagged = set(early["opportunity_id"])
    amount = deals["amount"].astype(float)
    caught = [i for i in lost if i in flagged]
    missed = [i for i in lost if i not in flagged]
    scored_ids = set(s["opportunity_id"])
    not_lost = [i for i in flagged if truth.get(i) != "lost"]
    total = float(amount.reindex(lost).sum())
    return {"threshold": float(threshold), "lead_days": int(lead_days),
            "lost_deals": len(lost), "lost_value": total,
            "lost_scored": int(sum(1 for i in lost if i in scored_ids)),
            "caught_deals": len(caught), "caught_value": float(amount.reindex(caught).sum()),
            "missed_deals": len(missed), "missed_value": float(amount.reindex(missed).sum()),
            "caught_share": float(amount.reindex(caught).sum() / total) if total else None,
            "false_alarms": len(not_lost), "false_alarm_value": float(amount.reindex(not_lost).sum()),
            "how": (f"deals whose true outcome is lost and that closed from {first} to {last}; caught when the arm "
                    f"scored them at or above {threshold:.3f} at a month end at least {lead_days} days before "
                    "they closed; values are the deals' amounts; false alarms are flagged deals not truly lost")}


def inventory_cost(forecast: pd.DataFrame, demand: pd.DataFrame, prices: pd.Series, stockout_cost: float,
                   holding_cost: float) -> dict:
    """The cost of a forecast under an order-up-to rule: each month end, every product is stocked to its forecast
    of the coming weeks (``p50`` summed); units demanded beyond it are lost sales, units left over are held.

    Args:
        forecast: ``product_id``, ``day`` (the month end), ``week_start``, ``p50``.
        demand: ground truth ``product_id``, ``week_start``, ``demand_units``.
        prices: list price by product.
    """
    joined = forecast.merge(demand[["product_id", "week_start", "demand_units"]], on=["product_id", "week_start"])
    per = joined.groupby(["product_id", "day"], as_index=False).agg(stock=("p50", "sum"),
                                                                     demand=("demand_units", "sum"))
    short = (per["demand"] - per["stock"]).clip(lower=0)
    over = (per["stock"] - per["demand"]).clip(lower=0)
    price = per["product_id"].map(prices).astype(float).fillna(0.0)
    out = {"periods": int(len(per)), "units_demanded": float(per["demand"].sum()),
           "units_short": float(short.sum()), "units_over": float(over.sum()),
           "stockout_cost": float((short * price * stockout_cost).sum()),
           "holding_cost": float((over * price * holding_cost).sum())}
    out["total_cost"] = out["stockout_cost"] + out["holding_cost"]
    out["how"] = (f"each product stocked at every month end to its p50 forecast of the weeks that follow; units "
                  f"demanded (ground truth, before stock-outs) beyond that cost {stockout_cost:.0%} of the list price "
                  f"(margin lost), units left over {holding_cost:.0%} (holding)")
    return out


def seasonal_naive(history: pd.DataFrame, weeks: int, season: int, freq: str, threads: int = 1) -> pd.DataFrame:
    """The no-model forecast, statsforecast's SeasonalNaive (each week's value one season earlier), or its Naive
    (the last value) when a series is shorter than a season (``unique_id``, ``ds``, ``y`` in; ``unique_id``,
    ``ds``, ``step``, ``p50`` out)."""
    from statsforecast import StatsForecast
    from statsforecast.models import Naive, SeasonalNaive

    short = history.groupby("unique_id").size().min() < season
    model = Naive(alias="p50") if short else SeasonalNaive(season_length=season, alias="p50")
    out = StatsForecast(models=[model], freq=freq, n_jobs=threads).forecast(df=history, h=weeks)
    out = out.reset_index() if "unique_id" not in out.columns else out
    out = out.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    return out.assign(step=out.groupby("unique_id").cumcount() + 1)[["unique_id", "ds", "step", "p50"]]


# ------------------------------------------------------------------------------------------------ the pipeline


def run_backtest(settings: Settings, config: BacktestConfig, *, configs: Path | None = None,
                 policy_path: Path | None = None, say: Callable[[str], None] = lambda text: None) -> BacktestReport:
    """Replay the monthly loop on a simulated organisation (see the module's description).

    Args:
        settings: a fresh ``SALESML_HOME`` for the backtest's store, registry and logs.
        config: the organisation, the months and the scenarios.
        configs: training configs per task, ``<task>.yaml`` (default ``experiments/configs``).
        policy_path: the promotion and monitoring policy (default ``monitoring/policy.yaml``).
        say: called with a short description of each step.

    Raises:
        BacktestError: when the home already holds a registry, a task is not one the backtest covers, or a
            scenario is not understood.
    """
    from features.sources.simulator import SimulationConfig, simulate_organisation
    from training.registry import UnknownTaskError, get_task

    unknown = [t for t in config.tasks if t not in BACKTEST_TASKS]
    if unknown or not config.tasks:
        raise BacktestError(f"the backtest covers {', '.join(BACKTEST_TASKS)}; not "
                            f"{', '.join(unknown) or 'no task'}")
    try:
        for task in config.tasks:
            get_task(task)
    except UnknownTaskError as exc:
        raise BacktestError(str(exc)) from None
    if settings.feature_store_path.exists() or (settings.home / "loop").exists():
        raise BacktestError(f"{settings.home} already holds a registry or a feature store: a backtest needs a "
                            "fresh home (--out a new folder)")
    started = time.perf_counter()
    origin = (pd.Timestamp(config.start) - pd.DateOffset(months=config.history_months)).date()
    # On a Monday: the simulator's weeks are then the ISO weeks of the product-week view, so its true weekly demand
    # lines up with the forecasts.
    origin -= timedelta(days=origin.weekday())
    try:
        simulation = SimulationConfig(accounts=config.accounts, months=config.history_months + config.months
                                      + TAIL_MONTHS, seed=config.seed, start=origin, scenarios=config.scenarios)
    except ValueError as exc:
        raise BacktestError(f"invalid scenario: {exc}") from None
    say(f"simulating {config.accounts} accounts from {origin} ({simulation.months} months, scenarios: "
        f"{', '.join(config.scenarios) or 'none'})")
    org = simulate_organisation(simulation)
    report = BacktestReport(config=config.model_dump(mode="json"),
                            kinds={t: get_task(t).kind for t in config.tasks})
    state = _State(settings, config, org, Path(configs) if configs else None, policy_path, say)
    ends = config.month_ends()
    for k, day in enumerate(ends):
        tick = time.perf_counter()
        month = {"month": f"{day:%Y-%m}", "day": f"{day}", "backtested": k > 0}
        state.seconds = {}
        with state.timed("deliver"):
            month["delivered"] = state.deliver(day)
        if k == 0:
            month["retrain"] = state.retrain(day, {}, "initial champion")
            state.static = dict(state.champions())
            for task in sorted(set(config.tasks) - set(state.static)):
                why = "; ".join(t["message"] for t in month["retrain"] if t["task"] == task)
                state.notes.append(f"{task}: no static champion (the first candidate, at {day}, was not promoted: "
                                   f"{why}); its loop arm scores from the month it first has a champion")
                say(f"{task}: no first champion at {day}; the backtest goes on without a static arm for it")
        else:
            with state.timed("monitor"):
                month["monitoring"] = state.monitor(day)
            alerts = {t["task"]: t["alerts"] for t in month["monitoring"]["tasks"] if t["alerts"]}
            month["retrain"] = state.retrain(day, alerts, "scheduled")
        month["champions"] = state.champions()
        month["trained_on"] = state.trained_on(month["champions"])
        if k < len(ends) - 1:
            state.score(day)
        month["seconds"] = round(time.perf_counter() - tick, 1)
        month["step_seconds"] = {k: round(v, 1) for k, v in state.seconds.items()}
        say(f"{day:%Y-%m}: done in {month['seconds']:.0f} s (champions "
            + ", ".join(f"{t} v{v}" for t, v in month["champions"].items()) + ")")
        report.months.append(month)
    # The month a score plays out in is the one after its month end: the backtested months.
    for m, scored in zip(report.months[1:], report.months[:-1], strict=True):
        m["scored_at"] = scored["day"]
    report.arms, report.roi, report.notes = state.figures(report.months)
    report.timings = {"total_seconds": round(time.perf_counter() - started, 1),
                      "per_month_seconds": [m["seconds"] for m in report.months],
                      "step_seconds": {k: round(sum(m["step_seconds"].get(k, 0.0) for m in report.months), 1)
                                       for k in dict.fromkeys(k for m in report.months for k in m["step_seconds"])},
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    report.report = str(write_backtest_report(settings, report))
    from monitoring.loop import write_json_atomically

    write_json_atomically(settings.home / "reports" / "backtest" / "backtest.json", report.to_dict())
    return report


class _State:
    """What the backtest carries from month to month: the organisation, the last delivery, the arms' scores."""

    def __init__(self, settings: Settings, config: BacktestConfig, org, configs: Path | None,
                 policy_path: Path | None, say: Callable[[str], None]):
        self.settings, self.config, self.org = settings, config, org
        self.configs, self.policy_path, self.say = configs, policy_path, say
        self.previous: dict | None = None
        self.static: dict[str, str] = {}
        self.risk_scores: dict[str, list[pd.DataFrame]] = {}
        self.forecasts: dict[str, list[pd.DataFrame]] = {}
        self.value_scores: dict[str, list[pd.DataFrame]] = {}
        self.segment_scores: dict[str, list[pd.DataFrame]] = {}
        self.purchases: pd.DataFrame | None = None
        self.notes: list[str] = []
        self.seconds: dict[str, float] = {}
        self.segment_counts: dict[str, int] = {}
        self.horizons: dict[str, int] = {}
        self.thresholds: dict[str, float] = {}
        self.models: dict[tuple[str, str], object] = {}
        self.windows: dict[tuple[str, str], dict] = {}
        # biased_history@YYYY-MM: the CRM held the true outcomes until that month's export rewrote them.
        self.bias_month = next((s.month for s in org.config.scenarios if s.kind == "biased_history" and s.month),
                               None)
        self.unbiased = None
        if self.bias_month is not None:
            from features.sources.simulator import unbiased_tables

            self.unbiased = unbiased_tables(org)

    @contextmanager
    def timed(self, step: str):
        """Add the wall time of the block to the month's ``step``."""
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - tick

    # -------------------------------------------------------------------- the loop's steps

    def deliver(self, day: date) -> dict:
        """Write the month's export (new and changed rows as known at the end of ``day``) into the inbox and
        ingest it with ``day`` as the load's as-of date."""
        from features.sources.simulator import changed_rows, snapshot_tables
        from monitoring.loop import ingest_inbox

        recorded = self.unbiased if self.bias_month is not None and day < self.bias_month else self.org.tables
        snapshot = snapshot_tables(recorded, day)
        first = self.previous is None
        delta = changed_rows(self.previous, snapshot)
        self.previous = snapshot
        folder = self.settings.home / "inbox" / f"{day}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, frame in delta.items():
            if len(frame):
                frame.to_parquet(folder / f"{name}.parquet", index=False)
        loads = ingest_inbox(self.settings, self.settings.home / "inbox", day, self.say)
        if first:  # as the demo does: the sentiment model, trained once; the loop scores new texts with it
            from features.pipeline import train_text_model
            from features.store import FeatureStore

            with FeatureStore.from_settings(self.settings) as store:
                train_text_model(store)
        tables = {t: v for load in loads for t, v in load.get("tables", {}).items()}
        return {"rows": int(sum(len(f) for f in delta.values())),
                "stored": int(sum(v.get("stored", 0) for v in tables.values())),
                "quarantined": int(sum(v.get("quarantined", 0) for v in tables.values()))}

    def monitor(self, day: date) -> dict:
        """Monitoring as of ``day``, without its own retraining (the month's retraining follows)."""
        from monitoring.monitor import monitor

        done = monitor(self.settings, day, self.config.tasks, policy_path=self.policy_path, retrain_on_alert=False,
                       say=self.say).to_dict()
        tasks = []
        for t in done["tasks"]:
            latest = next((m for m in reversed(t["months"]) if m.get("labelled")), None)
            tasks.append({"task": t["task"], "champion": t["champion"], "metric": t["metric"],
                          "live": {k: latest.get(k) for k in ("month", t["metric"], "calibration_error", "coverage",
                                                               "labelled") if k in latest} if latest else None,
                          "drifted_share": (t.get("drift") or {}).get("drifted_share"),
                          "early": {k: (t.get("early") or {}).get(k) for k in ("scored_at", "elapsed_days", "segments")}
                          if t.get("early") else None,
                          "alerts": [{k: a.get(k) for k in ("alert", "month", "value", "threshold", "message")}
                                     for a in t["alerts"]]})
        return {"tasks": tasks, "report": done.get("report")}

    def retrain(self, day: date, alerts: dict[str, list[dict]], default_reason: str) -> list[dict]:
        """The month's retraining of every task (with its alerts as the reason), then the scripted validator."""
        from monitoring.loop import retrain

        out = []
        for task in self.config.tasks:
            reason = ("alert: " + "; ".join(f"{a['alert']} ({a['message']})" for a in alerts[task]))[:500] \
                if task in alerts else default_reason
            with self.timed(f"retrain {task}"):
                done = retrain(self.settings, day, [task], reason=reason, trainer="backtest:loop",
                               policy_path=self.policy_path, trials=self.config.trials, configs=self.configs,
                               say=self.say)
            for t in done.tasks:
                t = dict(t)
                if t["status"] == "awaiting_review":
                    with self.timed(f"retrain {task}"):
                        t.update(self.validate(t))
                out.append({k: t.get(k) for k in ("task", "version", "gate", "status", "message", "reason",
                                                  "champion_before", "champion_after", "versus_champion")}
                           | {"failed_checks": [c["name"] for c in t.get("checks", []) if c["status"] == "fail"]})
        return out

    def validate(self, outcome: dict) -> dict:
        """The scripted validator: approve and promote a REVIEW version when no blocking check failed."""
        from monitoring.review import promote, review

        failed = [c["name"] for c in outcome.get("checks", []) if c["status"] == "fail"]
        if outcome.get("gate") not in ("REVIEW", "PASS") or failed:
            return {}
        if outcome["gate"] == "REVIEW":
            reason = "backtest: every blocking check passed (" + ", ".join(
                f"{c['name']} {c['status']}" for c in outcome.get("checks", [])) + ")"
            review(self.settings, outcome["model"], outcome["version"], "approve", reason, VALIDATOR)
        promote(self.settings, outcome["model"], outcome["version"], VALIDATOR)
        how = "approved by the scripted validator and promoted" if outcome["gate"] == "REVIEW" else \
            "promoted by the scripted validator (gate PASS; the policy does not promote automatically)"
        return {"status": "promoted", "champion_after": outcome["version"],
                "message": f"version {outcome['version']} {how}"}

    def champions(self) -> dict[str, str]:
        """Each task's champion version now."""
        from experiments.registered import get_alias
        from experiments.registry import CHAMPION
        from experiments.tracking import configure_mlflow
        from training.registry import get_task

        client = configure_mlflow(self.settings)
        out = {}
        for task in self.config.tasks:
            name = get_task(task).model_name
            if client.search_registered_models(f"name='{name}'"):
                champion = get_alias(client, name, CHAMPION)
                if champion is not None:
                    out[task] = str(champion.version)
        return out

    def trained_on(self, champions: dict[str, str]) -> dict[str, dict]:
        """The data each champion learnt from: its run's labelled window (``salesml.data_window``) and, for a
        timed split, the cutoff months it was trained, validated (calibrated) and tested on. A retraining at a
        month end can only learn from outcomes inside these windows, which lag the month by the label horizon
        and the held-out windows."""
        from experiments.registered import load_split
        from experiments.registry import TAG_WINDOW
        from experiments.tracking import configure_mlflow
        from training.registry import get_task

        client = configure_mlflow(self.settings)
        out = {}
        for task, version in champions.items():
            key = (task, version)
            if key not in self.windows:
                run_id = client.get_model_version(get_task(task).model_name, version).run_id
                split = load_split(client, run_id)
                self.windows[key] = {"data_window": client.get_run(run_id).data.tags.get(TAG_WINDOW),
                                     **{k: split[k] for k in ("train", "validation", "test") if k in split}}
            out[task] = self.windows[key]
        return out

    def model(self, task: str, version: str):
        """A version's model, loaded once."""
        from experiments.registered import load_version_model
        from experiments.tracking import configure_mlflow
        from training.registry import get_task

        key = (task, version)
        if key not in self.models:
            client = configure_mlflow(self.settings)
            self.models[key] = load_version_model(client, get_task(task).model_name, version)[0]
        return self.models[key]

    def arm_versions(self, task: str) -> dict[str, str]:
        """The versions the model arms score with now: the loop's champion and the static champion, each only
        when there is one (a gate may block a task's first candidates)."""
        versions = {"loop": self.champions().get(task), "static": self.static.get(task)}
        return {arm: v for arm, v in versions.items() if v is not None}

    def first_version(self, task: str) -> str | None:
        """The version a task's fixed settings (horizon, flag threshold, segment count) come from: the static
        champion, else the loop's first champion; ``None`` while the task has none."""
        versions = self.arm_versions(task)
        return versions.get("static", versions.get("loop"))

    def horizon(self, task: str) -> int:
        """A task's label horizon: its first version's run's, else its training config's."""
        if task not in self.horizons:
            from experiments.tracking import configure_mlflow
            from monitoring.loop import CONFIGS, task_config
            from monitoring.replay import champion_horizon
            from training.registry import get_task

            definition = get_task(task)
            version = self.first_version(task)
            if version is not None:
                client = configure_mlflow(self.settings)
                self.horizons[task] = champion_horizon(client, client.get_model_version(definition.model_name,
                                                                                        version))
            else:
                self.horizons[task] = int(task_config(definition, self.configs or CONFIGS).horizon_days)
        return self.horizons[task]

    # -------------------------------------------------------------------- scoring the arms

    def score(self, day: date) -> None:
        """Every arm scores what is open at the end of ``day``; the loop's champion logs it as the service would."""
        from training.registry import get_task

        scorers = {"risk": self.score_risk, "demand": self.score_demand, "value": self.score_value,
                   "segments": self.score_segments}
        for task in self.config.tasks:
            with self.timed(f"score {task}"):
                scorers[get_task(task).kind](task, day)

    def score_risk(self, task: str, day: date) -> None:
        from monitoring.replay import open_rows, replay_risk
        from training.models import alert_thresholds
        from training.registry import get_task

        versions = self.arm_versions(task)
        first = self.first_version(task)
        horizon = self.horizon(task)
        if task not in self.thresholds and first is not None:
            self.thresholds[task] = self.config.flag_threshold or float(alert_thresholds(
                self.model(task, first), pd.DataFrame(index=[0]))[0])
        rows = open_rows(self.settings, task, day, horizon)
        if not len(rows):
            return
        data = get_task(task).data
        baseline = self.stage_baseline(task, day, horizon)
        frame = pd.DataFrame({data.id_column: rows[data.id_column].astype(str).to_numpy(), "day": day,
                              "loop": np.nan, "static": np.nan, "loop_version": versions.get("loop"),
                              "baseline": baseline.predict_proba(rows.assign(stage=rows[BASELINE_COLUMNS[data.name]]))})
        if "loop" in versions:
            frame["loop"] = replay_risk(self.settings, task, day, rows=rows)["probability"]
        if "static" in versions:
            frame["static"] = self.model(task, versions["static"]).predict_proba(rows)
        self.risk_scores.setdefault(task, []).append(frame)

    def stage_baseline(self, task: str, day: date, horizon: int):
        """The no-model arm of a risk task: the outcome rate of each stage (``BASELINE_COLUMNS``) over the
        entities open at the last six month ends whose outcome (within the horizon) is known by ``day``."""
        from features.pipeline import build_view
        from features.store import FeatureStore
        from features.views import ViewConfig
        from training.baseline import StageBaseline
        from training.registry import get_task

        data = get_task(task).data
        ends = [(pd.Timestamp(day) - pd.offsets.MonthEnd(k)).date() for k in range(1, 13)]
        known = [d for d in ends if d + timedelta(days=horizon) <= day][:6]
        with FeatureStore.from_settings(self.settings, read_only=True) as store:
            frame = build_view(store, data.name, day, cutoffs=sorted(known), config=ViewConfig(horizon_days=horizon),
                               threads=self.settings.threads).frame
        label = data.label.format(h=horizon)
        frame = frame[frame[label].notna()]
        return StageBaseline().fit(frame[BASELINE_COLUMNS[data.name]], frame[label].to_numpy(dtype=float))

    def truth_purchases(self) -> pd.DataFrame:
        """Every completed order the simulator made, to its window's end (the value and churn ground truth)."""
        if self.purchases is None:
            import ibis

            from features.views import purchase_history

            tables = {name: ibis.memtable(self.org.tables[name]) for name in ("orders", "order_lines")}
            last = pd.to_datetime(self.org.tables["orders"]["order_date"]).max().date()
            self.purchases = purchase_history(tables, last).execute()
        return self.purchases

    def score_value(self, task: str, day: date) -> None:
        """The value arms on the accounts active at ``day``: each version's fitted model applied to the accounts'
        purchases as of ``day`` (what the version serves once its summaries are refreshed), and last year's
        spend carried forward as no model. The loop's figures are logged as the service logs them."""
        from features.pipeline import load_purchases
        from features.production import write_log_part
        from features.store import FeatureStore
        from monitoring.loop import CONFIGS, task_config
        from monitoring.replay import open_rows, value_log_columns
        from training.registry import get_task
        from training.value import ID, SUMMARY_COLUMNS, summarise_purchases

        definition = get_task(task)
        config = task_config(definition, self.configs or CONFIGS)
        versions = self.arm_versions(task)
        horizon = self.horizon(task)
        rows = open_rows(self.settings, task, day, horizon)
        if not len(rows):
            return
        with FeatureStore.from_settings(self.settings, read_only=True) as store:
            purchases = load_purchases(store, day)
        ids = rows[ID].astype(str)
        summaries = summarise_purchases(purchases, pd.Timestamp(day), unit_days=config.time_unit_days).reindex(ids)
        rows = rows.assign(**{c: summaries[c].to_numpy() for c in SUMMARY_COLUMNS})
        frame = pd.DataFrame({ID: ids.to_numpy(), "day": day, "loop_version": versions.get("loop")})
        for arm, version in versions.items():
            model = self.model(task, version)
            fitted = model.clv.predict(horizon, rows[list(SUMMARY_COLUMNS)])
            expected = np.nan_to_num(model.predict_rows(rows, horizon), nan=0.0)
            p_alive = np.nan_to_num(fitted["p_alive"].to_numpy(dtype=float), nan=0.0)
            frame[arm], frame[f"{arm}_p_alive"] = expected, p_alive
            if arm == "loop":
                ltv = np.nan_to_num(fitted["ltv"].to_numpy(dtype=float), nan=0.0)
                at = datetime.combine(day, datetime.min.time()) + timedelta(hours=18)
                write_log_part(self.settings.logs_dir, task, f"{day}", value_log_columns(
                    task, definition.model_name, version, pd.DataFrame({
                        ID: ids.to_numpy(), "expected_value": expected, "ltv": ltv, "p_alive": p_alive,
                        "value_band": model.band(ltv)}), at, day, horizon))
        spend = pd.to_numeric(rows["value_365d"], errors="coerce").fillna(0.0).to_numpy()
        frame["baseline"] = spend * horizon / 365.0
        frame["baseline_p_alive"] = (spend > 0).astype(float)
        self.value_scores.setdefault(task, []).append(frame)

    def score_segments(self, task: str, day: date) -> None:
        """The segmentation arms on the accounts active at ``day``: the loop's and the static champion assign
        them (HDBSCAN's approximate prediction), no model is KMeans on recency, frequency and value refitted each
        month with as many segments as the static champion has. The loop's assignments are logged."""
        from features.production import write_log_part
        from features.store import FeatureStore
        from monitoring.loop import CONFIGS, task_config
        from monitoring.replay import segments_log_columns
        from training.registry import get_task
        from training.segments import ID, SegmentScaler, load_segments_data

        definition = get_task(task)
        config = task_config(definition, self.configs or CONFIGS, threads=self.settings.threads).model_copy(
            update={"as_of": day, "ground_truth": None})
        with FeatureStore.from_settings(self.settings) as store:
            current = load_segments_data(store, task, config).current
        if not len(current):
            return
        ids = current[ID].astype(str).to_numpy()
        versions = self.arm_versions(task)
        frame = pd.DataFrame({ID: ids, "day": day, "loop_version": versions.get("loop")})
        for arm, version in versions.items():
            assigned = self.model(task, version).assign(current)
            frame[arm] = assigned["segment"].to_numpy(dtype=int)
            if arm == "loop":
                at = datetime.combine(day, datetime.min.time()) + timedelta(hours=18)
                write_log_part(self.settings.logs_dir, task, f"{day}", segments_log_columns(
                    task, definition.model_name, version, assigned.assign(**{ID: ids}), at))
        from sklearn.cluster import KMeans

        rfm = [c for c in config.rfm_features if c in current.columns]
        x = SegmentScaler.fit(current, rfm, [c for c in rfm if c in config.log_features]).transform(current)
        if task not in self.segment_counts:
            first = self.first_version(task)
            self.segment_counts[task] = BASELINE_SEGMENTS
            if first is not None:
                trained = self.model(task, first).assignments["segment"]
                self.segment_counts[task] = max(2, int(trained[trained >= 0].nunique()))
        k = min(self.segment_counts[task], len(current))
        frame["baseline"] = KMeans(n_clusters=k, n_init=10, random_state=config.seed).fit_predict(x)
        self.segment_scores.setdefault(task, []).append(frame)

    def score_demand(self, task: str, day: date) -> None:
        from features.production import write_log_part
        from features.store import FeatureStore
        from monitoring.loop import CONFIGS, task_config
        from monitoring.replay import demand_log_columns
        from training.demand import load_demand_data
        from training.registry import get_task

        definition = get_task(task)
        config = task_config(definition, self.configs or CONFIGS, threads=self.settings.threads).model_copy(
            update={"as_of": day})
        with FeatureStore.from_settings(self.settings) as store:
            series = load_demand_data(store, task, config).series
        history = series.frame
        weeks = self.config.forecast_weeks
        parts = {}
        for arm, version in self.arm_versions(task).items():
            model = self.model(task, version)
            known = history[history["unique_id"].isin(set(model.history_["unique_id"]))]
            forecast = model.forecast(min(weeks, model.max_horizon), history=known)
            parts[arm] = forecast
            if arm == "loop":
                at = datetime.combine(day, datetime.min.time()) + timedelta(hours=18)
                write_log_part(self.settings.logs_dir, task, f"{day}", demand_log_columns(
                    task, definition.model_name, version, forecast, at))
        parts["baseline"] = seasonal_naive(history[["unique_id", "ds", "y"]], weeks, series.season_length,
                                           series.freq, self.settings.threads)
        frames = [p[["unique_id", "ds", "step", "p50"]].assign(arm=arm) for arm, p in parts.items()]
        self.forecasts.setdefault(task, []).append(pd.concat(frames, ignore_index=True).assign(day=day))

    # -------------------------------------------------------------------- figures against the ground truth

    def figures(self, months: list[dict]) -> tuple[dict, dict, list[str]]:
        """Per task, arm and month the figures; the ROI; notes on what could not be computed."""
        arms: dict[str, list[dict]] = {}
        roi: dict[str, dict] = {}
        notes: list[str] = list(self.notes)
        backtested = [m for m in months if m["backtested"]]
        month_of = {m["scored_at"]: m["month"] for m in backtested}
        first, last = date.fromisoformat(backtested[0]["scored_at"]), date.fromisoformat(backtested[-1]["day"])
        regions = self.org.tables["accounts"].set_index("account_id")["region"]
        entry = [s for s in self.org.config.scenarios if s.kind == "competitor_entry"]
        for task, parts in self.risk_scores.items():
            from training.registry import get_task

            definition = get_task(task)
            id_column, horizon = definition.data.id_column, self.horizons[task]
            scores = pd.concat(parts, ignore_index=True)
            deals = self.org.tables["opportunities"]
            truth = self.org.ground_truth["opportunity_outcomes"]
            if id_column == "opportunity_id":
                region = deals.set_index("opportunity_id")["account_id"].map(regions)
            else:
                region = regions.rename(index=str)
            rows = []
            oracle = None
            if horizon == ORACLE_HORIZON and definition.oracle is not None:
                spec = definition.oracle
                table = self.org.ground_truth.get(Path(spec.file).stem)
                if table is not None:
                    oracle = table.assign(day=pd.to_datetime(table["month_end"]).dt.date, _id=table[
                        spec.id_column].astype(str)).set_index(["_id", "day"])[spec.column]
            for day, g in scores.groupby("day"):
                ids = g[id_column]
                if id_column == "opportunity_id":
                    y = risk_labels(deals, truth, ids, day, horizon)
                else:
                    y = churn_labels(self.truth_purchases(), ids, day, horizon)
                where = region.reindex(ids).to_numpy()
                arms_here = list(ARMS)
                if oracle is not None:
                    g = g.assign(oracle=oracle.reindex(pd.MultiIndex.from_arrays([ids.astype(str),
                                                                                   [day] * len(g)])).to_numpy())
                    arms_here.append("oracle")
                for arm in arms_here:
                    p = g[arm].to_numpy(float)
                    # The ground truth misses the deals created in a month's last days: the ceiling leaves them out.
                    known = ~np.isnan(p)
                    if not known.any():  # no version of this arm yet
                        continue
                    rows.append({"month": month_of[f"{day}"], "arm": arm, "region": None,
                                 **risk_month_figures(y[known], p[known])})
                    for s in entry:
                        inside = where == s.region
                        for name, mask in ((s.region, inside), (f"not {s.region}", ~inside)):
                            rows.append({"month": month_of[f"{day}"], "arm": arm, "region": name,
                                         **risk_month_figures(y[mask & known], p[mask & known])})
            arms[task] = rows
            if id_column != "opportunity_id":
                notes.append(f"{task}: no ROI figure (the ROI counts deals flagged before they were lost)")
                continue
            if task not in self.thresholds:
                notes.append(f"{task}: no ROI figure (no version was ever promoted, so no alert threshold)")
                continue
            threshold = self.thresholds[task]
            roi[task] = {arm: caught_deals(scores.dropna(subset=[arm]).rename(columns={arm: "probability"}), deals,
                                           truth, threshold, self.config.lead_days, first, last)
                         for arm in ARMS if scores[arm].notna().any()}
        for task, parts in self.value_scores.items():
            from training.value import holdout_purchases

            rows = []
            for day, g in pd.concat(parts, ignore_index=True).groupby("day"):
                actual = holdout_purchases(self.truth_purchases(), pd.Timestamp(day), self.horizons[task]).reindex(
                    g["account_id"], fill_value=0.0)
                for arm in [a for a in ARMS if a in g and g[a].notna().any()]:
                    rows.append({"month": month_of[f"{day}"], "arm": arm, "region": None, **value_month_figures(
                        actual["value"].to_numpy(), g[arm].to_numpy(), (actual["purchases"] > 0).to_numpy(float),
                        g[f"{arm}_p_alive"].to_numpy())})
            arms[task] = rows
            notes.append(f"{task}: each version's fitted model scores the accounts' purchases as of the month end; "
                         f"no model carries last year's spend forward over the {self.horizons[task]} days")
        for task, parts in self.segment_scores.items():
            truth = self.org.ground_truth["account_segments"]
            truth = truth.assign(account_id=truth["account_id"].astype(str)).set_index("account_id")["segment"]
            rows, previous = [], {}
            for day, g in pd.concat(parts, ignore_index=True).groupby("day"):
                for arm in [a for a in ARMS if a in g and g[a].notna().any()]:
                    labels = g.set_index("account_id")[arm].astype(int)
                    rows.append({"month": month_of[f"{day}"], "arm": arm, "region": None,
                                 **segment_month_figures(labels, truth, previous.get(arm))})
                    previous[arm] = labels
            arms[task] = rows
        for task, parts in self.forecasts.items():
            from training.demand import wape

            forecast = pd.concat(parts, ignore_index=True).rename(columns={"unique_id": "product_id",
                                                                          "ds": "week_start"})
            demand = self.org.ground_truth["product_week_demand"]
            joined = forecast.merge(demand, on=["product_id", "week_start"], how="inner")
            if len(joined) < len(forecast):
                notes.append(f"{task}: {len(forecast) - len(joined)} forecast weeks have no ground truth (past the "
                             "simulated window)")
            rows = []
            for (day, arm), g in joined.groupby(["day", "arm"]):
                actual, p50 = g["sold_units"].to_numpy(float), g["p50"].to_numpy(float)
                rows.append({"month": month_of[f"{day}"], "arm": arm, "region": None, "labelled": int(len(g)),
                             "wape": wape(actual, p50), "actual_units": float(actual.sum()),
                             "forecast_units": float(p50.sum())})
            arms[task] = rows
            prices = self.org.tables["products"].set_index("product_id")["list_price"]
            roi[task] = {arm: inventory_cost(forecast[forecast["arm"] == arm], demand, prices,
                                             self.config.stockout_cost, self.config.holding_cost)
                         for arm in ARMS if (forecast["arm"] == arm).any()}
        if not any(t in self.config.tasks for t in ("price_optimisation", "pricing")):
            notes.append("pricing uplift: not computed (the pricing engine is not built yet)")
        return arms, roi, notes


# ------------------------------------------------------------------------------------------------ the report


def _svg(fig) -> str:
    """A matplotlib figure as inline SVG (the report needs no file and no network)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _lines(title: str, months: list[str], series: dict[str, list], ylabel: str, marks: dict[int, str] | None = None
           ) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    x = np.arange(len(months))
    for label, values in series.items():
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        ax.plot(x, y, marker="o", label=label)
    for at, text in (marks or {}).items():
        ax.axvline(at, color="#c0392b", linestyle=":", linewidth=1)
        ax.annotate(text, (at, 1), xycoords=("data", "axes fraction"), fontsize=7, color="#c0392b",
                    rotation=90, va="top", ha="right")
    ax.set_xticks(x, months, rotation=45, fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _svg(fig)


def _bars(title: str, groups: dict[str, dict[str, float]], ylabel: str) -> str:
    """Grouped bars: one group per arm, one bar per figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    arms = list(groups)
    names = list(next(iter(groups.values())))
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        ax.bar(np.arange(len(arms)) + k * width, [groups[a][name] for a in arms], width, label=name)
    ax.set_xticks(np.arange(len(arms)) + width * (len(names) - 1) / 2, [ARM_LABELS.get(a, a) for a in arms])
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return _svg(fig)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.0f}"
    return html.escape("-" if value is None else str(value))


def _windows(windows: dict | None) -> str:
    """A champion's data windows for the report: "train .., validated .., tested .." for a timed split, else its
    labelled window."""
    if not windows:
        return "-"
    if "train" in windows:
        return (f"trained {windows['train']}, validated {windows.get('validation', '-')}, "
                f"tested {windows.get('test', '-')}")
    return windows.get("data_window") or "-"


def write_backtest_report(settings: Settings, report: BacktestReport) -> Path:
    """Write the backtest's self-contained HTML report (plots inline as SVG) under
    ``SALESML_HOME/reports/backtest``."""
    from monitoring.report import render_page

    months = [m for m in report.months if m["backtested"]]
    labels = [m["month"] for m in months]
    alerts = {}
    for k, m in enumerate(months):
        for t in (m.get("monitoring") or {}).get("tasks", []):
            for a in t["alerts"]:
                alerts.setdefault(k, set()).add(f"{t['task']}: {a['alert']}")
    for text in report.config["scenarios"]:  # the scenario's month, marked like the alerts
        month = text.partition("@")[2][:7]
        if month in labels:
            alerts.setdefault(labels.index(month), set()).add(f"scenario {text}")
    marks = {k: ", ".join(sorted(v)) for k, v in alerts.items()}
    parts = [f"<h1>Backtest: {html.escape(', '.join(report.config['scenarios']) or 'no scenario')}</h1>",
             f"<p class=\"meta\">{report.config['accounts']} simulated accounts (seed {report.config['seed']}), "
             f"{len(months)} months from {html.escape(labels[0] if labels else '-')}, the first champion trained on "
             f"{report.config['history_months']} months before; tasks {html.escape(', '.join(report.config['tasks']))}."
             " A month's figures are the scores made at the end of the month before, against the simulator's ground "
             "truth. Dotted lines mark the scenario's month and the months with monitoring alerts.</p>"]
    for task, rows in report.arms.items():
        metrics = HEADLINE_METRICS[report.kinds.get(task, "risk")]
        regions = sorted({r["region"] for r in rows if r["region"] is not None}, key=str)
        for metric in metrics:
            for region in [None, *regions]:
                series = {ARM_LABELS[a]: report.arm_series(task, a, metric, region)
                          for a in (*ARMS, "oracle") if any(r["arm"] == a for r in rows)}
                where = f" ({region})" if region else ""
                parts.append(_lines(f"{task}: {metric}{where} per month", labels, series, metric, marks))
    drift = {}
    for m in months:
        for t in (m.get("monitoring") or {}).get("tasks", []):
            drift.setdefault(t["task"], []).append(t.get("drifted_share"))
    if drift:
        parts.append(_lines("drifted share of features at each month end (monitoring)", labels, drift,
                            "drifted share", marks))
    rows = []
    for m in months:
        mon = {t["task"]: t for t in (m.get("monitoring") or {}).get("tasks", [])}
        for t in m.get("retrain", []):
            live = (mon.get(t["task"]) or {}).get("live") or {}
            rows.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in (
                m["month"], t["task"], m["champions"].get(t["task"]), _windows((m.get("trained_on") or {}).get(t["task"])),
                live.get((mon.get(t["task"]) or {}).get("metric")),
                (mon.get(t["task"]) or {}).get("drifted_share"),
                "; ".join(a["alert"] for a in (mon.get(t["task"]) or {}).get("alerts", [])) or "-",
                t.get("version"), t.get("gate"), t.get("status"), ", ".join(t.get("failed_checks") or []) or "-"))
                + "</tr>")
    parts.append("<h2>Month by month</h2><table id=\"months\"><tr><th>month</th><th>task</th><th>champion</th>"
                 "<th>champion learnt from</th><th>live metric (monitoring)</th><th>drifted share</th><th>alerts</th><th>candidate</th>"
                 f"<th>gate</th><th>outcome</th><th>failed checks</th></tr>{''.join(rows)}</table>")
    parts.append("<h2>Return on investment</h2>")
    for task, by_arm in report.roi.items():
        if not by_arm:
            continue
        keys = [k for k in next(iter(by_arm.values())) if k != "how"]
        head = "".join(f"<th>{html.escape(ARM_LABELS[a])}</th>" for a in by_arm)
        body = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{_cell(by_arm[a].get(k))}</td>"
                                                                    for a in by_arm) + "</tr>" for k in keys)
        if report.kinds.get(task) == "risk":
            chart = _bars(f"{task}: value of the deals truly lost", {a: {
                "caught (flagged 30+ days ahead)": f["caught_value"], "missed": f["missed_value"],
                "false alarms": f["false_alarm_value"]} for a, f in by_arm.items()}, "deal value")
        else:
            chart = _bars(f"{task}: cost of the forecasts under the inventory rule", {a: {
                "stock-outs": f["stockout_cost"], "overstock": f["holding_cost"]} for a, f in by_arm.items()}, "cost")
        parts.append(f"<h3>{html.escape(task)}</h3><p>{html.escape(next(iter(by_arm.values()))['how'])}</p>{chart}"
                     f"<table class=\"roi\"><tr><th>figure</th>{head}</tr>{body}</table>")
    parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>")
    parts.append(f"<p class=\"meta\">{report.timings.get('total_seconds')} s in all; peak RSS "
                 f"{report.timings.get('peak_rss_mb')} MB</p>")
    folder = settings.home / "reports" / "backtest"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "backtest.html"
    path.write_text(render_page("Backtest", "".join(parts)))
    return path

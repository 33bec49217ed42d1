"""Demand forecasting: one global gradient-boosted model over every series, price-aware and probabilistic.

The model is an mlforecast ``MLForecast`` over LightGBM or XGBoost regressors: lags, rolling and expanding windows
of the target, calendar features, a target transform, and exogenous prices, promotions, competitor prices and
holidays. What makes it a demand model rather than a generic forecaster:

- **Price-aware.** Own prices enter as ``price_index`` (log of the price over the series' reference price, the
  median of its training history) and competitors' as ``competitor_gap`` (log of their price over ours). The
  booster is constrained to be non-increasing in the first and non-decreasing in the second, so demand never
  rises with the product's own price. Forecasts are recursive (a step's forecast feeds the next step's lags), so
  the target's own lags and windows are constrained non-decreasing too: a lower forecast at one step can then only
  lower the next, and a higher price path never raises any step.
- **Probabilistic.** The p10 / p50 / p90 come from split conformal prediction on the rolling-origin backtest of
  the training window: residuals, scaled by each series' mean absolute level, are pooled across series per
  horizon step, and their quantiles are added to the point forecast. mlforecast's own ``PredictionIntervals``
  take each series' quantile over a handful of windows, which under-covers (an 80% interval from 4 windows has
  at most 8 residuals to place it); pooling across series gives hundreds per step.
- **Point in time.** A forecast from a history uses only that history: planned inputs (price, promotion) are the
  caller's what-if path or, without one, the last known price and no promotion; observed inputs (competitor
  prices, indicators) are carried forward; holidays are known a season ahead from the history's own flags.

Everything here is pure: frames in, frames and fitted objects out. ``DemandForecaster`` saves itself as plain
files (JSON, Parquet, the booster's native format) and is rebuilt from them without a pickle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from training.configs import StudyConfig
from training.models import make_regressor

if TYPE_CHECKING:
    from features.store import FeatureStore

log = logging.getLogger(__name__)

ID, TIME, TARGET = "unique_id", "ds", "y"
#: Interval levels every forecast carries: p10 and p90 bound the 80% interval.
QUANTILES = (0.1, 0.5, 0.9)
#: The derived price features and the direction demand must move in as each rises.
PRICE_INDEX, COMPETITOR_GAP = "price_index", "competitor_gap"
#: Feature set names (hyperparameters) and what they add; ``m`` is the season length.
LAG_SETS = ("recent", "recent_seasonal", "seasonal")
WINDOW_SETS = ("none", "short", "short_long")
TRANSFORMS = ("none", "log", "scale", "log_scale", "log_seasonal_diff")
FAMILIES = ("lightgbm", "xgboost")
BOOSTER_FILES = {"lightgbm": "booster.txt", "xgboost": "booster.json"}


class DemandConfig(StudyConfig):
    """Training config of a demand model (``experiments/configs/<task>.yaml``)."""

    target: str | None = Field(None, description="The column forecast (default: the task's, e.g. units).")
    horizon: int = Field(12, ge=1, le=104, description="Steps the model forecasts and is judged on.")
    max_horizon: int | None = Field(None, ge=1, description="Longest forecast served (default: 2 x horizon).")
    season_length: int | None = Field(None, ge=1, description="Steps per season (default from the frequency: "
                                      "52 weekly, 12 monthly).")
    trials: int = Field(20, ge=1, description="Completed trials the study should reach.")
    cv_windows: int = Field(3, ge=1, description="Rolling-origin windows (of `horizon` steps) for tuning.")
    test_windows: int = Field(1, ge=1, description="Latest windows held out for the test figures.")
    calibration_windows: int = Field(4, ge=1, description="Rolling-origin windows whose residuals calibrate the "
                                     "intervals of the final model.")
    max_estimators: int = Field(600, ge=10)
    baselines: list[Literal["seasonal_naive", "auto_ets", "auto_arima"]] = Field(
        default_factory=lambda: ["seasonal_naive", "auto_ets", "auto_arima"])
    price_columns: list[str] = Field(default_factory=lambda: ["price"], description="The own price (planned).")
    competitor_columns: list[str] = Field(default_factory=lambda: ["competitor_price"])
    planned_columns: list[str] = Field(default_factory=lambda: ["promotion"], description=(
        "Inputs the company decides ahead (0 in the future unless a what-if path gives them)."))
    observed_columns: list[str] = Field(default_factory=list, description=(
        "Inputs observed as they happen (carried forward into the future)."))
    holiday_column: str | None = Field("is_holiday", description="A 0/1 holiday flag, known a season ahead.")
    static_columns: list[str] = Field(default_factory=list, description="Per-series constants (e.g. category).")
    series_feature: bool = Field(False, description="Give the booster the series itself as a categorical feature, "
                                 "so that it can learn each series' own price response.")
    monotone_price: bool = Field(True, description="Demand non-increasing in the own price (sign constraints on the "
                                 "log-linear response, or booster constraints).")
    price_response: Literal["loglinear", "booster"] = Field("loglinear", description=(
        "loglinear: each series' own-price and competitor elasticities from a Poisson regression with controls, "
        "shrunk towards the pooled estimate, and the booster forecasts price-normalised demand; booster: the "
        "prices are booster features under monotone constraints."))
    elasticity_step: float = Field(0.1, gt=0, lt=0.5, description="Relative price change (+/-) over which the "
                                   "implied own-price elasticity is measured.")
    min_sales_weeks: int = Field(26, ge=1, description="Steps with sales a series needs for its elasticity.")
    max_series_per_request: int = Field(1000, ge=1, description="Most series one forecast request may name.")
    initial_trials: list[dict] = Field(default_factory=list, description="Parameter sets a new study tries first "
                                       "(Optuna parameter names: family, lags, windows, transform, rounds, "
                                       "lgb_learning_rate, ...).")
    as_of: date | None = Field(None, description="Data as-of date for view tasks (default: the latest order).")
    period_length: str | None = Field(None, description="Sales-periods tasks: the period length to forecast "
                                      "(week, month; default: the most common one in the table).")
    series: list[str] = Field(default_factory=list, description="Forecast only these series (default: all).")
    ground_truth: str | None = Field(None, description="Simulator ground_truth folder, for the elasticity "
                                     "oracle; '{home}' is SALESML_HOME.")

    @property
    def served_horizon(self) -> int:
        """The longest forecast the model answers."""
        return self.max_horizon or 2 * self.horizon


# ------------------------------------------------------------------------------------------------ series


@dataclass
class SeriesFrame:
    """Series in long format (``unique_id``, ``ds``, ``y`` and inputs) with what the model needs to know of them.

    Attributes:
        frame: one row per series and period, sorted, no gaps (missing periods are filled with 0 demand).
        freq: the pandas frequency (``W-MON``, ``W-FRI``, ``MS``).
        season_length: periods per season.
        price, competitor, planned, observed: the input columns present, by role.
        holiday: the holiday flag column, if present.
        static: per-series constants.
        names: ``unique_id`` -> the id callers use (``product_id`` or the series id).
    """

    frame: pd.DataFrame
    freq: str
    season_length: int
    price: list[str] = field(default_factory=list)
    competitor: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    observed: list[str] = field(default_factory=list)
    holiday: str | None = None
    static: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        """The series, sorted."""
        return sorted(self.frame[ID].unique())

    @property
    def end(self) -> pd.Timestamp:
        """The last period of the history."""
        return pd.Timestamp(self.frame[TIME].max())

    def until(self, end: pd.Timestamp) -> SeriesFrame:
        """The history up to ``end`` (inclusive): what was known at that period."""
        return self._with(self.frame[self.frame[TIME] <= end])

    def between(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """The rows with ``start < ds <= end``."""
        f = self.frame
        return f[(f[TIME] > start) & (f[TIME] <= end)].reset_index(drop=True)

    def _with(self, frame: pd.DataFrame) -> SeriesFrame:
        return SeriesFrame(frame.reset_index(drop=True), self.freq, self.season_length, self.price,
                           self.competitor, self.planned, self.observed, self.holiday, self.static)


def season_length_of(freq: str) -> int:
    """Periods per year for a pandas frequency: 52 for weeks, 12 for months, 4 for quarters, 7 for days."""
    code = pd.tseries.frequencies.to_offset(freq).name.split("-")[0].upper()
    return {"W": 52, "M": 12, "MS": 12, "ME": 12, "Q": 4, "QS": 4, "QE": 4, "D": 7, "B": 5}.get(code, 1)


def infer_freq(dates: pd.Series) -> str:
    """The frequency of a series' period starts (``W-MON``, ``W-FRI``, ``MS``...).

    Raises:
        ValueError: when the dates have no regular frequency.
    """
    unique = pd.DatetimeIndex(sorted(pd.to_datetime(dates).unique()))
    if len(unique) < 3:
        raise ValueError("a demand series needs at least 3 periods to tell its frequency")
    step = pd.Series(unique).diff().dropna().mode().iloc[0]
    if step == pd.Timedelta(days=7):
        return f"W-{unique[0].day_name()[:3].upper()}"
    if pd.Timedelta(days=28) <= step <= pd.Timedelta(days=31):
        return "MS" if (unique.day == 1).all() else "ME" if unique.is_month_end.all() else "MS"
    if step == pd.Timedelta(days=1):
        return "D"
    raise ValueError(f"periods {step} apart: demand needs weekly, monthly or daily periods")


def make_series_frame(rows: pd.DataFrame, *, id_column: str, time_column: str, target: str,
                      config: DemandConfig) -> SeriesFrame:
    """Turn rows of a view or a sales-periods table into a ``SeriesFrame``.

    Periods missing inside a series are added with 0 demand (a week without orders sold nothing) and inputs
    carried forward. Inputs named by the config but absent from ``rows`` are left out.

    Raises:
        ValueError: naming the missing id, time or target column, or a series without enough periods.
    """
    for column, what in ((id_column, "id"), (time_column, "time"), (target, "target")):
        if column not in rows.columns:
            raise ValueError(f"the {what} column {column!r} is not in the data (columns: {', '.join(rows.columns)})")
    freq = infer_freq(rows[time_column])
    season = config.season_length or season_length_of(freq)
    # An input the data never fills (a sales-periods table without prices) is no input at all.
    present = {c for c in rows.columns if rows[c].notna().any()}
    price = [c for c in config.price_columns if c in present]
    competitor = [c for c in config.competitor_columns if c in present]
    planned = [c for c in config.planned_columns if c in present]
    observed = [c for c in config.observed_columns if c in present]
    holiday = config.holiday_column if config.holiday_column in present else None
    static = [c for c in config.static_columns if c in present]
    inputs = [*price, *competitor, *planned, *observed, *([holiday] if holiday else [])]
    frame = rows[[id_column, time_column, target, *inputs, *static]].rename(
        columns={id_column: ID, time_column: TIME, target: TARGET})
    frame[ID] = frame[ID].astype(str)
    frame[TIME] = pd.to_datetime(frame[TIME])
    frame[TARGET] = pd.to_numeric(frame[TARGET], errors="coerce").astype(float)
    for column in inputs:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame = frame.groupby([ID, TIME], as_index=False).agg(
        {TARGET: "sum", **{c: "mean" for c in inputs}, **{c: "last" for c in static}})
    frame = _fill_gaps(frame, freq, inputs, static, planned, holiday)
    if config.series_feature:
        frame["series"] = frame[ID]
        static = [*static, "series"]
    short = frame.groupby(ID).size()
    if (short < 3).any():
        raise ValueError(f"series with fewer than 3 periods: {', '.join(short[short < 3].index[:5])}")
    return SeriesFrame(frame, freq, season, price, competitor, planned, observed, holiday, static)


def _fill_gaps(frame: pd.DataFrame, freq: str, inputs: list[str], static: list[str], planned: list[str],
               holiday: str | None) -> pd.DataFrame:
    span = frame.groupby(ID)[TIME].agg(["min", "max", "size"])
    step = _fixed_step(pd.tseries.frequencies.to_offset(freq))
    if step is not None and ((span["max"] - span["min"]).dt.days // step + 1 == span["size"]).all():
        # No period missing anywhere (the usual case): fill the inputs column by column, not series by series.
        out = frame.sort_values([ID, TIME], kind="stable").reset_index(drop=True)
        zero = [c for c in [*planned, *([holiday] if holiday else [])] if c in out.columns]
        out[zero] = out[zero].fillna(0.0)
        carried = [c for c in [*inputs, *static] if c not in zero]
        if carried and out[carried].isna().any().any():
            grouped = out.groupby(ID)[carried]
            out[carried] = grouped.ffill()
            out[carried] = out[carried].fillna(out.groupby(ID)[carried].bfill())
        return out
    full = []
    for uid, part in frame.groupby(ID, sort=True):
        index = pd.date_range(part[TIME].min(), part[TIME].max(), freq=freq)
        part = part.set_index(TIME).reindex(index)
        part.index.name = TIME
        part[ID] = uid
        part[TARGET] = part[TARGET].fillna(0.0)
        zero = [c for c in [*planned, *([holiday] if holiday else [])] if c in part.columns]
        part[zero] = part[zero].fillna(0.0)
        carried = [c for c in [*inputs, *static] if c not in zero]
        part[carried] = part[carried].ffill().bfill()
        full.append(part.reset_index())
    return pd.concat(full, ignore_index=True)[frame.columns].sort_values([ID, TIME], kind="stable").reset_index(
        drop=True)


# ------------------------------------------------------------------------------------------------ the model


class InsufficientHistoryError(ValueError):
    """The series are too short for what is asked of them (the message says how many periods)."""



@dataclass(frozen=True)
class DemandParams:
    """One point of the search space: the family, the features, the target transform and the booster's knobs."""

    family: str
    lags: str
    windows: str
    transform: str
    booster: dict

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"family": self.family, "lags": self.lags, "windows": self.windows, "transform": self.transform,
                "booster": dict(self.booster)}

    @classmethod
    def from_dict(cls, data: Mapping) -> DemandParams:
        """From ``to_dict``."""
        return cls(data["family"], data["lags"], data["windows"], data["transform"], dict(data["booster"]))


#: Where a new study starts: what a forecaster would try first.
DEFAULT_PARAMS = {
    "lightgbm": {"family": "lightgbm", "lags": "recent_seasonal", "windows": "short", "transform": "log_scale",
                 "lgb_learning_rate": 0.05, "lgb_num_leaves": 31, "lgb_min_child_samples": 20,
                 "lgb_colsample_bytree": 0.8, "lgb_subsample": 0.8, "lgb_reg_lambda": 1.0, "rounds": 300},
    "xgboost": {"family": "xgboost", "lags": "recent_seasonal", "windows": "short", "transform": "log_scale",
                "xgb_learning_rate": 0.05, "xgb_max_depth": 6, "xgb_min_child_weight": 1.0,
                "xgb_colsample_bytree": 0.8, "xgb_subsample": 0.8, "xgb_reg_lambda": 1.0, "rounds": 300},
}


def suggest_demand_params(trial, families: Sequence[str], max_estimators: int) -> DemandParams:
    """Sample a point of the demand search space from an Optuna trial (or ``optuna.trial.FixedTrial``)."""
    family = trial.suggest_categorical("family", list(families))
    lags = trial.suggest_categorical("lags", list(LAG_SETS))
    windows = trial.suggest_categorical("windows", list(WINDOW_SETS))
    transform = trial.suggest_categorical("transform", list(TRANSFORMS))
    rounds = trial.suggest_int("rounds", 50, max_estimators, log=True)
    if family == "lightgbm":
        booster = {
            "n_estimators": rounds,
            "learning_rate": trial.suggest_float("lgb_learning_rate", 0.01, 0.3, log=True),
            "num_leaves": trial.suggest_int("lgb_num_leaves", 4, 128, log=True),
            "min_child_samples": trial.suggest_int("lgb_min_child_samples", 5, 200, log=True),
            "colsample_bytree": trial.suggest_float("lgb_colsample_bytree", 0.4, 1.0),
            "subsample": trial.suggest_float("lgb_subsample", 0.5, 1.0),
            "reg_lambda": trial.suggest_float("lgb_reg_lambda", 1e-3, 30.0, log=True),
        }
    else:
        booster = {
            "n_estimators": rounds,
            "learning_rate": trial.suggest_float("xgb_learning_rate", 0.01, 0.3, log=True),
            "max_depth": trial.suggest_int("xgb_max_depth", 2, 10),
            "min_child_weight": trial.suggest_float("xgb_min_child_weight", 0.5, 50.0, log=True),
            "colsample_bytree": trial.suggest_float("xgb_colsample_bytree", 0.4, 1.0),
            "subsample": trial.suggest_float("xgb_subsample", 0.5, 1.0),
            "reg_lambda": trial.suggest_float("xgb_reg_lambda", 1e-3, 30.0, log=True),
        }
    return DemandParams(family, lags, windows, transform, booster)


def params_from_values(values: Mapping, max_estimators: int) -> DemandParams:
    """The ``DemandParams`` of a finished trial's parameter values."""
    import optuna

    return suggest_demand_params(optuna.trial.FixedTrial(dict(values)), [values["family"]], max_estimators)


def lags_of(name: str, season: int) -> list[int]:
    """The target lags of a lag set."""
    recent = [1, 2, 3, 4]
    seasonal = [season] if season > 4 else []
    return {"recent": recent + [8] if season > 8 else recent, "recent_seasonal": recent + seasonal,
            "seasonal": [1] + seasonal}[name]


def _lag_transforms(name: str, season: int) -> dict:
    from mlforecast.lag_transforms import ExpandingMean, RollingMean

    if name == "none":
        return {}
    short = max(2, min(4, season // 3 or 2))
    transforms: dict = {1: [RollingMean(window_size=short)]}
    if name == "short_long":
        transforms[1] += [RollingMean(window_size=max(short + 1, min(13, season // 4 or 3))), ExpandingMean()]
    return transforms


def _target_transforms(name: str, season: int) -> list:
    from mlforecast.target_transforms import Differences, GlobalSklearnTransformer, LocalStandardScaler
    from sklearn.preprocessing import FunctionTransformer

    log1p = GlobalSklearnTransformer(FunctionTransformer(func=np.log1p, inverse_func=np.expm1))
    # log_seasonal_diff learns the change on the same period a season ago: the seasonal naive forecast plus what
    # the features say about this season's difference (holidays follow from last year's).
    return {"none": [], "log": [log1p], "scale": [LocalStandardScaler()],
            "log_scale": [log1p, LocalStandardScaler()],
            "log_seasonal_diff": [log1p, Differences([season])]}[name]


def min_history(params: DemandParams, season: int) -> int:
    """Periods a series needs for ``params`` to learn from it: a season and more for a seasonal difference."""
    return season + 6 if params.transform == "log_seasonal_diff" else 6


def _date_features(freq: str) -> list[str]:
    code = freq.split("-")[0]
    if code == "W":
        return ["week", "month"]
    if code in ("MS", "M", "ME"):
        return ["month"]
    return ["dayofweek", "month"]


class DemandForecaster:
    """A fitted global demand model: features, booster, price references and conformal intervals.

    Follows the scikit-learn contract: ``__init__`` stores the parameters, ``fit`` returns self, fitted attributes
    end in ``_``.
    """

    def __init__(self, params: DemandParams, *, horizon: int, max_horizon: int, threads: int = 2, seed: int = 42,
                 monotone_price: bool = True, price_response: str = "loglinear", max_series: int = 1000):
        self.params = params
        self.max_series = max_series
        self.horizon = horizon
        self.max_horizon = max_horizon
        self.threads = threads
        self.seed = seed
        self.monotone_price = monotone_price
        self.price_response = price_response

    # ----------------------------------------------------------------------------- fitting

    def fit(self, series: SeriesFrame, calibration_windows: int = 0) -> DemandForecaster:
        """Fit on the whole history; with ``calibration_windows``, calibrate the intervals on a rolling-origin
        backtest of that many windows of ``horizon`` steps at the history's end (each refits on the data
        before its origin)."""
        self.freq_ = series.freq
        self.season_length_ = series.season_length
        self.roles_ = {"price": series.price, "competitor": series.competitor, "planned": series.planned,
                       "observed": series.observed, "holiday": series.holiday, "static": series.static}
        frame = series.frame
        sizes = frame.groupby(ID).size()
        short = sizes[sizes < min_history(self.params, series.season_length)].index
        self.short_series_ = sorted(short)
        frame = frame[~frame[ID].isin(short)].reset_index(drop=True)
        if frame.empty:
            raise InsufficientHistoryError(
                f"every series is shorter than the {min_history(self.params, series.season_length)} periods "
                f"a {self.params.transform} model needs")
        series = series._with(frame)
        price = series.price[0] if series.price else None
        self.references_ = (frame.groupby(ID)[price].median().to_dict() if price else {})
        self.scales_ = _series_scales(frame, series.season_length)
        self.history_ = frame.reset_index(drop=True)
        self.holidays_ = (sorted(frame.loc[frame[series.holiday] > 0, TIME].unique())
                          if series.holiday else [])
        self.price_effects_ = {}
        if price and self.price_response == "loglinear":
            self.price_effects_ = fit_price_response(frame, price, series.competitor[0] if series.competitor
                                                     else None, [*series.planned, *([series.holiday]
                                                                                    if series.holiday else [])],
                                                     self.references_, series.season_length,
                                                     sign_constraints=self.monotone_price)
        self.mlf_ = self._fit_mlforecast(self._features(self._normalised(frame)))
        self.residuals_ = None
        self.interval_quantiles_ = None
        if calibration_windows:
            backtest = rolling_backtest(self.params, series, windows=calibration_windows, horizon=self.horizon,
                                        threads=self.threads, seed=self.seed, monotone_price=self.monotone_price,
                                        price_response=self.price_response)
            self.calibrate(backtest)
        return self

    def _fit_mlforecast(self, features: pd.DataFrame):

        season = self.season_length_
        lags = [lag for lag in lags_of(self.params.lags, season)
                if lag < features.groupby(ID).size().min() - 1]
        self.lags_ = lags
        mlf = self._mlforecast(lags)
        static = [c for c in self.roles_["static"]]
        prepared = mlf.preprocess(features, static_features=static, dropna=False)
        order = mlf.ts.features_order_
        self.features_ = list(order)
        monotone = self._monotone(order)
        x = prepared[order].copy()
        for column in static:
            x[column] = x[column].astype("category")
        y = prepared[TARGET].to_numpy()
        model = make_regressor(self.params.family, self.params.booster, threads=self.threads, seed=self.seed,
                               monotone=monotone)
        keep = np.isfinite(y)
        model.fit(x[keep], y[keep])
        mlf.models_ = {"model": model}
        self.categories_ = {c: list(x[c].cat.categories) for c in static}
        return mlf

    def _mlforecast(self, lags: list[int]):
        """An unfitted MLForecast with this model's features and target transform."""
        from mlforecast import MLForecast

        season = self.season_length_
        return MLForecast(models={}, freq=self.freq_, lags=lags,
                          lag_transforms=_lag_transforms(self.params.windows, season),
                          date_features=_date_features(self.freq_),
                          target_transforms=_target_transforms(self.params.transform, season), num_threads=1)

    def _monotone(self, order: Sequence[str]) -> list[int] | None:
        if not (self.monotone_price and self._price_features):
            return None
        constraint = []
        for name in order:
            if name == PRICE_INDEX:
                constraint.append(-1)
            elif name == COMPETITOR_GAP:
                constraint.append(1)
            elif name.startswith(("lag", "rolling_", "expanding_")):
                # Recursive steps feed forecasts back into these: non-decreasing keeps a dearer path lower.
                constraint.append(1)
            else:
                constraint.append(0)
        return constraint

    @property
    def metadata(self) -> dict:
        """What the model is, for stages that read a loaded model's metadata (the task is in the registry tags)."""
        return {"kind": "demand", "horizon": self.horizon, "max_horizon": self.max_horizon,
                "freq": getattr(self, "freq_", None), "series": int(self.history_["unique_id"].nunique())
                if hasattr(self, "history_") else 0}

    @property
    def _price_features(self) -> bool:
        return bool(self.roles_["price"]) and self.price_response == "booster"

    def price_effect(self, rows: pd.DataFrame) -> np.ndarray:
        """log of the price factor of each row under the log-linear response (0 without one):
        own x log(price / reference) + competitor x log(competitor price / price)."""
        if not self.price_effects_:
            return np.zeros(len(rows))
        roles = self.roles_
        price = rows[roles["price"][0]].astype(float).where(lambda v: v > 0)
        reference = rows[ID].map(self.references_).astype(float)
        own = rows[ID].map({k: float(v["own"]) for k, v in self.price_effects_.items()}).astype(float)
        total = own.fillna(0.0).to_numpy() * np.log(price / reference).to_numpy()
        if roles["competitor"]:
            gap = np.log(rows[roles["competitor"][0]].astype(float).where(lambda v: v > 0) / price).to_numpy()
            competitor = rows[ID].map({k: float(v["competitor"]) for k, v in self.price_effects_.items()})
            total = total + competitor.astype(float).fillna(0.0).to_numpy() * gap
        return np.nan_to_num(total, nan=0.0)

    def _normalised(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows with demand at reference prices: what the booster learns and forecasts."""
        if not self.price_effects_:
            return frame
        out = frame.copy()
        out[TARGET] = out[TARGET].to_numpy() * np.exp(-self.price_effect(frame))
        return out

    def _features(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Model inputs of series rows: the derived price features replace the raw prices."""
        out = frame[[ID, TIME, *([TARGET] if TARGET in frame.columns else [])]].copy()
        roles = self.roles_
        price = roles["price"][0] if roles["price"] else None
        if price and self._price_features:
            reference = out[ID].map(self.references_).astype(float)
            p = frame[price].astype(float).where(lambda s: s > 0)
            out[PRICE_INDEX] = np.log(p / reference).to_numpy()
            if roles["competitor"]:
                out[COMPETITOR_GAP] = np.log(frame[roles["competitor"][0]].astype(float).where(lambda s: s > 0)
                                             / p).to_numpy()
        for column in [*roles["planned"], *roles["observed"]]:
            out[column] = frame[column].astype(float).to_numpy()
        if roles["holiday"]:
            # From the calendar, not the row: the same flags in the history and a season ahead of it, and the
            # periods either side of a holiday (the Christmas rush comes the week before the flagged week).
            offset = pd.tseries.frequencies.to_offset(self.freq_)
            dates = pd.DatetimeIndex(frame[TIME])
            out["holiday"] = self.holiday_flags(dates)
            out["holiday_next"] = self.holiday_flags(dates + offset)
            out["holiday_prev"] = self.holiday_flags(dates - offset)
        for column in roles["static"]:
            out[column] = frame[column].to_numpy()
        return out

    # ----------------------------------------------------------------------------- forecasting

    def future_inputs(self, history: pd.DataFrame, h: int, prices: Mapping[str, Sequence[float]] | None = None,
                      ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The inputs of the ``h`` periods after each series' history, known at its end.

        Args:
            history: the series rows the forecast starts from.
            h: periods ahead.
            prices: a what-if price path per series (``h`` values); without one the last known price holds.
            ids: the series wanted (default: all in ``history``).
        """
        roles = self.roles_
        last = history.sort_values(TIME).groupby(ID).tail(1).set_index(ID)
        wanted = list(ids) if ids is not None else list(last.index)
        if not wanted:
            return pd.DataFrame(columns=[ID, TIME])
        last = last.loc[wanted]
        offset = pd.tseries.frequencies.to_offset(self.freq_)
        # Built as whole columns: 10,000 series x 12 periods in a fraction of a second, not one frame per series.
        steps = np.tile(np.arange(1, h + 1), len(wanted))
        ends = np.repeat(pd.DatetimeIndex(last[TIME]), h)
        dates = pd.DatetimeIndex([end + int(k) * offset for end, k in zip(ends, steps, strict=True)]) \
            if not _fixed_step(offset) else ends + pd.to_timedelta(steps * _fixed_step(offset), unit="D")
        out = pd.DataFrame({ID: np.repeat(np.asarray(wanted, dtype=object), h), TIME: dates})
        for column in roles["price"]:
            values = np.repeat(last[column].to_numpy(dtype=float), h)
            for at, uid in enumerate(wanted):
                path = (prices or {}).get(uid)
                if path is not None:
                    values[at * h:(at + 1) * h] = np.asarray(path, dtype=float)[:h]
            out[column] = values
        for column in [*roles["competitor"], *roles["observed"]]:
            out[column] = np.repeat(last[column].to_numpy(dtype=float), h)
        for column in roles["planned"]:
            out[column] = 0.0
        if roles["holiday"]:
            out[roles["holiday"]] = self.holiday_flags(out[TIME])
        for column in roles["static"]:
            out[column] = np.repeat(last[column].to_numpy(), h)
        return out

    def holiday_flags(self, dates: pd.DatetimeIndex) -> np.ndarray:
        """1.0 where a date is a holiday of the history, or one or two seasons after one (known ahead)."""
        holidays = pd.DatetimeIndex(self.holidays_)
        if not len(holidays):
            return np.zeros(len(dates))
        offset = pd.tseries.frequencies.to_offset(self.freq_)
        known = holidays.union(holidays + self.season_length_ * offset).union(
            holidays + 2 * self.season_length_ * offset)
        return np.asarray(pd.DatetimeIndex(dates).isin(known), dtype=float)

    def predict_points(self, h: int, future: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """Point forecasts (p50) for ``h`` steps from the fitted history, or from ``history`` when given.

        ``future`` holds the inputs of those steps (``future_inputs``).
        """
        if h > self.max_horizon:
            raise ValueError(f"horizon {h} is beyond the model's maximum of {self.max_horizon}")
        x_df = self._features(future)
        x_df = x_df.drop(columns=[c for c in self.roles_["static"] if c in x_df.columns])
        ids = sorted(future[ID].unique())
        new_df = None if history is None else self._features(self._normalised(history))
        if new_df is not None:
            for column in self.roles_["static"]:
                new_df[column] = pd.Categorical(new_df[column], categories=self.categories_[column])

        def categorical(x: pd.DataFrame) -> pd.DataFrame:
            for column in self.roles_["static"]:
                x[column] = pd.Categorical(x[column], categories=self.categories_[column])
            return x

        out = self.mlf_.predict(h, X_df=x_df, new_df=new_df, ids=None if new_df is not None else ids,
                                before_predict_callback=categorical if self.roles_["static"] else None)
        out = out.rename(columns={"model": "p50"})
        if self.price_effects_:
            at = out[[ID, TIME]].merge(future, on=[ID, TIME], how="left")
            out["p50"] = out["p50"].to_numpy() * np.exp(self.price_effect(at))
        out["p50"] = out["p50"].clip(lower=0.0)
        return out[out[ID].isin(ids)].reset_index(drop=True)

    def forecast(self, h: int, *, prices: Mapping[str, Sequence[float]] | None = None,
                 ids: Sequence[str] | None = None, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """p10 / p50 / p90 per series and step, from the fitted history (or ``history``).

        Returns:
            ``unique_id``, ``ds``, ``step`` (1..h), ``p10``, ``p50``, ``p90``.
        """
        base = self.history_ if history is None else history
        if ids is not None:
            base = base[base[ID].isin(ids)]
        future = self.future_inputs(base, h, prices, ids)
        points = self.predict_points(h, future, history=None if history is None else base)
        points["step"] = points.groupby(ID).cumcount() + 1
        return self.add_intervals(points)

    def add_intervals(self, points: pd.DataFrame) -> pd.DataFrame:
        """Add ``p10`` and ``p90`` to point forecasts (with ``step``) from the conformal residual quantiles."""
        out = points.copy()
        if self.interval_quantiles_ is None:
            out["p10"] = out["p90"] = np.nan
        else:
            q = self.interval_quantiles_
            steps = np.minimum(out["step"].to_numpy(), len(q["p10"])) - 1
            scale = out[ID].map(self.scales_).fillna(0.0).to_numpy()
            out["p10"] = np.maximum(out["p50"].to_numpy() + scale * np.asarray(q["p10"])[steps], 0.0)
            out["p90"] = np.maximum(out["p50"].to_numpy() + scale * np.asarray(q["p90"])[steps], 0.0)
            out["p10"] = np.minimum(out["p10"], out["p50"])
            out["p90"] = np.maximum(out["p90"], out["p50"])
        return out[[ID, TIME, "step", "p10", "p50", "p90"]]

    def calibrate(self, backtest: pd.DataFrame) -> DemandForecaster:
        """Set the interval quantiles from a backtest's residuals (``y``, ``p50``, ``step``, ``unique_id``)."""
        scale = backtest[ID].map(self.scales_).replace(0, np.nan).to_numpy()
        residual = (backtest[TARGET].to_numpy() - backtest["p50"].to_numpy()) / scale
        frame = pd.DataFrame({"step": backtest["step"].to_numpy(), "r": residual}).dropna()
        lo, hi = [], []
        for step in range(1, self.horizon + 1):
            r = frame.loc[frame["step"] == step, "r"].to_numpy()
            if len(r) == 0:
                r = frame["r"].to_numpy()
            n = len(r)
            # Split conformal: the ceil((n + 1) q) / n empirical quantile gives at least q coverage.
            lo.append(float(np.quantile(r, max(0.0, np.floor((n + 1) * 0.1) / n - 1e-12), method="lower")))
            hi.append(float(np.quantile(r, min(1.0, np.ceil((n + 1) * 0.9) / n), method="higher")))
        # Steps beyond the calibrated horizon keep the last step's widths.
        self.interval_quantiles_ = {"p10": lo, "p90": hi, "calibration_rows": int(len(frame))}
        return self

    # ----------------------------------------------------------------------------- price response

    def elasticities(self, h: int, step: float, ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Each series' implied own-price elasticity: the arc elasticity of its ``h``-step forecast total when
        the whole price path moves by ``-step`` and ``+step`` from the last known price."""
        if not self.roles_["price"]:
            return pd.DataFrame(columns=[ID, "elasticity", "units_low", "units_high"])
        price = self.roles_["price"][0]
        last = self.history_.sort_values(TIME).groupby(ID).tail(1).set_index(ID)[price]
        wanted = list(ids) if ids is not None else list(last.index)
        totals = {}
        for sign in (-1, 1):
            path = {uid: [float(last[uid]) * (1 + sign * step)] * h for uid in wanted}
            fc = self.forecast(h, prices=path, ids=wanted)
            totals[sign] = fc.groupby(ID)["p50"].sum()
        low, high = totals[-1].reindex(wanted), totals[1].reindex(wanted)
        with np.errstate(divide="ignore", invalid="ignore"):
            e = (np.log(high) - np.log(low)) / (np.log(1 + step) - np.log(1 - step))
        return pd.DataFrame({ID: wanted, "elasticity": e.to_numpy(), "units_low": low.to_numpy(),
                             "units_high": high.to_numpy()})

    def feature_importance(self, rows: int = 2000, seed: int = 0) -> pd.Series:
        """Mean |TreeSHAP contribution| of each booster feature on up to ``rows`` of the latest history rows."""
        # A fresh MLForecast: preprocessing refits the series state, which the fitted one must keep.
        x = self._mlforecast(self.lags_).preprocess(self._features(self._normalised(self.history_)),
                                                    static_features=list(self.roles_["static"]), dropna=False)
        x = x[self.features_].tail(rows * 4).sample(min(rows, len(x)), random_state=seed).copy()
        for column in self.roles_["static"]:
            x[column] = pd.Categorical(x[column], categories=self.categories_[column])
        booster = self.mlf_.models_["model"]
        if self.params.family == "lightgbm":
            native = booster.booster if hasattr(booster, "booster") else booster.booster_
            values = np.asarray(native.predict(x, pred_contrib=True, num_threads=self.threads))
        else:
            import xgboost as xgb

            values = booster.get_booster().predict(xgb.DMatrix(x, enable_categorical=True), pred_contribs=True)
        return pd.Series(np.abs(values[:, :-1]).mean(axis=0), index=self.features_).sort_values(ascending=False)

    # ----------------------------------------------------------------------------- files

    def save(self, folder: Path) -> dict[str, str]:
        """Write the model as plain files: ``demand.json``, the booster (native format), ``history.parquet``.

        Returns:
            The SHA-256 of each file (registered as version tags).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        model = self.mlf_.models_["model"]
        booster_file = BOOSTER_FILES[self.params.family]
        if self.params.family == "lightgbm":
            model.booster_.save_model(str(folder / booster_file))
        else:
            model.save_model(str(folder / booster_file))
        self.history_.to_parquet(folder / "history.parquet", index=False)
        meta = {
            "kind": "demand", "params": self.params.to_dict(), "horizon": self.horizon,
            "max_horizon": self.max_horizon, "threads": self.threads, "seed": self.seed,
            "monotone_price": self.monotone_price, "price_response": self.price_response,
            "max_series": self.max_series,
            "price_effects": self.price_effects_, "freq": self.freq_, "season_length": self.season_length_,
            "roles": self.roles_, "references": self.references_, "scales": self.scales_,
            "holidays": [pd.Timestamp(d).strftime("%Y-%m-%d") for d in self.holidays_],
            "short_series": self.short_series_,
            "features": self.features_, "lags": self.lags_, "categories": self.categories_,
            "interval_quantiles": self.interval_quantiles_, "booster_file": booster_file,
        }
        (folder / "demand.json").write_text(json.dumps(meta, indent=1, default=_json_default))
        from training.models import artifact_digests

        return artifact_digests(folder)

    @classmethod
    def load(cls, folder: Path) -> DemandForecaster:
        """Rebuild a saved model: the features are recomputed from the saved history (no pickle)."""

        folder = Path(folder)
        meta = json.loads((folder / "demand.json").read_text())
        model = cls(DemandParams.from_dict(meta["params"]), horizon=meta["horizon"], max_horizon=meta["max_horizon"],
                    threads=meta["threads"], seed=meta["seed"], monotone_price=meta["monotone_price"],
                    price_response=meta.get("price_response", "booster"), max_series=meta.get("max_series", 1000))
        model.price_effects_ = meta.get("price_effects", {})
        model.freq_, model.season_length_ = meta["freq"], meta["season_length"]
        model.roles_, model.references_, model.scales_ = meta["roles"], meta["references"], meta["scales"]
        model.holidays_ = [pd.Timestamp(d) for d in meta["holidays"]]
        model.short_series_ = meta.get("short_series", [])
        model.features_, model.lags_, model.categories_ = meta["features"], meta["lags"], meta["categories"]
        model.interval_quantiles_ = meta["interval_quantiles"]
        model.history_ = pd.read_parquet(folder / "history.parquet")
        mlf = model._mlforecast(model.lags_)
        mlf.preprocess(model._features(model._normalised(model.history_)), static_features=list(model.roles_["static"]),
                       dropna=False)
        if list(mlf.ts.features_order_) != model.features_:
            raise ValueError(f"{folder}: the saved features {model.features_} differ from the rebuilt "
                             f"{mlf.ts.features_order_}")
        mlf.models_ = {"model": _load_booster(model.params.family, folder / meta["booster_file"], model.threads)}
        model.mlf_ = mlf
        return model


class _LightGBMBooster:
    """A loaded LightGBM booster with the ``predict(X)`` mlforecast calls."""

    def __init__(self, booster, threads: int):
        self.booster, self.threads = booster, threads

    def predict(self, x):
        return self.booster.predict(x, num_threads=self.threads)


def _load_booster(family: str, path: Path, threads: int):
    if family == "lightgbm":
        import lightgbm as lgb

        return _LightGBMBooster(lgb.Booster(model_file=str(path)), threads)
    import xgboost as xgb

    model = xgb.XGBRegressor(nthread=threads, enable_categorical=True)
    model.load_model(str(path))
    return model


def _fixed_step(offset) -> int | None:
    """Days per period for weekly and daily frequencies (``None`` for months, whose lengths vary)."""
    name = offset.name.split("-")[0]
    return {"W": 7, "D": 1}.get(name)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _series_scales(frame: pd.DataFrame, season: int) -> dict[str, float]:
    """Each series' mean absolute level over its last season (at least 1e-9): the unit of its residuals."""
    recent = frame.sort_values(TIME).groupby(ID).tail(max(season, 4))
    scale = recent.groupby(ID)[TARGET].apply(lambda s: float(np.mean(np.abs(s))))
    overall = float(scale[scale > 0].median()) if (scale > 0).any() else 1.0
    return {k: float(v) if v > 0 else overall for k, v in scale.items()}


# ------------------------------------------------------------------------------------------------ price response


def poisson_regression(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[np.ndarray, np.ndarray] | None:
    """Poisson regression (log link) by iteratively reweighted least squares, with quasi-Poisson standard errors
    (the covariance scaled by Pearson's X2 over the residual degrees of freedom, so over-dispersed demand gets
    honest errors).

    Returns:
        The coefficients and their standard errors, or ``None`` when the fit does not converge to finite values.
    """
    n, k = x.shape
    if n <= k:
        return None
    beta = np.zeros(k)
    beta[0] = np.log(max(y.mean(), 1e-9))
    for _ in range(iterations):
        mu = np.exp(np.clip(x @ beta, -30, 30))
        z = x @ beta + (y - mu) / mu
        xw = x * mu[:, None]
        # lstsq on the weighted normal equations: a control collinear with the rest is solved, not an error.
        new = np.linalg.lstsq(xw.T @ x, xw.T @ z, rcond=None)[0]
        if not np.all(np.isfinite(new)):
            return None
        done = np.max(np.abs(new - beta)) < 1e-8
        beta = new
        if done:
            break
    mu = np.exp(np.clip(x @ beta, -30, 30))
    scale = float(np.sum((y - mu) ** 2 / mu) / (n - k))
    covariance = np.linalg.pinv((x * mu[:, None]).T @ x) * max(scale, 1e-12)
    se = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    return (beta, se) if np.all(np.isfinite(se)) else None


def fit_price_response(frame: pd.DataFrame, price: str, competitor: str | None, controls: Sequence[str],
                       references: Mapping[str, float], season: int, *, sign_constraints: bool = True,
                       min_periods: int = 26) -> dict[str, dict]:
    """Each series' own-price and competitor elasticities, from a Poisson regression of its demand on
    log(price / reference), log(competitor / price), its promotions and holidays, two seasonal harmonics and a
    trend, shrunk towards the pooled estimate by its standard error (empirical Bayes).

    A series with fewer than ``min_periods`` periods or no price variation takes the pooled estimate. With
    ``sign_constraints`` the own-price response is at most 0 and the competitor response at least 0, so demand
    never rises with the own price.

    Returns:
        ``{series: {"own", "competitor", "own_raw", "own_se", "pooled"}}``.
    """
    estimates = {}
    ordered = frame.sort_values([ID, TIME], kind="stable")
    uids = ordered[ID].to_numpy()
    bounds = np.flatnonzero(np.r_[True, uids[1:] != uids[:-1], True])
    p_all = ordered[price].to_numpy(dtype=float)
    y_all = ordered[TARGET].to_numpy(dtype=float)
    c_all = ordered[competitor].to_numpy(dtype=float) if competitor else None
    controls_all = [ordered[c].to_numpy(dtype=float) for c in controls]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        uid = uids[lo]
        p, y = p_all[lo:hi], y_all[lo:hi]
        ok = (p > 0) & np.isfinite(y)
        if competitor:
            ok &= c_all[lo:hi] > 0
        p, y = p[ok], y[ok]
        log_index = np.log(p / references[uid])
        if len(y) < min_periods or np.std(log_index) < 1e-3 or y.sum() <= 0:
            continue
        position = np.arange(len(y)) / season
        columns = [np.ones(len(y)), log_index]
        if competitor:
            columns.append(np.log(c_all[lo:hi][ok] / p))
        for values in controls_all:
            values = np.nan_to_num(values[lo:hi][ok])
            if np.std(values) > 0:
                columns.append(values)
        if len(y) >= 2 * season // 3:
            columns += [np.sin(2 * np.pi * position), np.cos(2 * np.pi * position),
                        np.sin(4 * np.pi * position), np.cos(4 * np.pi * position)]
        columns.append(position / max(position.max(), 1e-9))
        fit = poisson_regression(np.column_stack(columns), y)
        if fit is None:
            continue
        params, se = fit
        if not np.all(np.isfinite(params[:2])) or not np.isfinite(se[1]):
            continue
        estimates[uid] = {"own_raw": float(params[1]), "own_se": float(se[1]),
                          "competitor_raw": float(params[2]) if competitor else 0.0,
                          "competitor_se": float(se[2]) if competitor else 0.0}
    out: dict[str, dict] = {}
    pooled = {}
    for key in ("own", "competitor"):
        raw = np.array([e[f"{key}_raw"] for e in estimates.values()])
        se = np.array([e[f"{key}_se"] for e in estimates.values()])
        if len(raw) == 0:
            pooled[key] = (0.0, 0.0)
            continue
        w = 1 / np.maximum(se, 1e-6) ** 2
        mean = float(np.sum(w * raw) / np.sum(w))
        # DerSimonian-Laird: the spread of the true responses beyond what the standard errors explain.
        tau2 = float(max(0.0, np.var(raw) - np.mean(se ** 2))) if len(raw) > 1 else 0.0
        pooled[key] = (mean, tau2)
    for uid in sorted(frame[ID].unique()):
        e = estimates.get(uid)
        row = {"pooled": e is None}
        for key in ("own", "competitor"):
            mean, tau2 = pooled[key]
            if e is None:
                value = mean
            else:
                weight = tau2 / (tau2 + e[f"{key}_se"] ** 2) if tau2 > 0 else 0.0
                value = weight * e[f"{key}_raw"] + (1 - weight) * mean
                row[f"{key}_raw"], row[f"{key}_se"] = e[f"{key}_raw"], e[f"{key}_se"]
            if sign_constraints:
                value = min(value, 0.0) if key == "own" else max(value, 0.0)
            row[key] = float(value)
        if not competitor:
            row["competitor"] = 0.0
        out[uid] = row
    return out


# ------------------------------------------------------------------------------------------------ backtests


def window_origins(series: SeriesFrame, windows: int, horizon: int, before: pd.Timestamp | None = None
                   ) -> list[pd.Timestamp]:
    """The origins of ``windows`` rolling windows of ``horizon`` periods ending at ``before`` (default: the end),
    oldest first. A window starts the period after its origin."""
    end = before if before is not None else series.end
    offset = pd.tseries.frequencies.to_offset(series.freq)
    return [end - (k * horizon) * offset for k in range(windows, 0, -1)]


def rolling_backtest(params: DemandParams, series: SeriesFrame, *, windows: int, horizon: int, threads: int,
                     seed: int, monotone_price: bool = True, price_response: str = "loglinear",
                     before: pd.Timestamp | None = None,
                     on_window: Callable[[int, pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """Refit at each origin on the data up to it and forecast the next ``horizon`` periods.

    Planned prices in each window are the ones that were charged (the what-if of a plan kept); competitor
    prices and other observed inputs are carried forward from the origin, as they would be when forecasting.

    Returns:
        ``unique_id``, ``ds``, ``step``, ``window`` (0 oldest), ``origin``, ``y``, ``p50``.
    """
    parts = []
    need = min_history(params, series.season_length)
    for k, origin in enumerate(window_origins(series, windows, horizon, before)):
        past = series.until(origin)
        if past.frame.groupby(ID).size().max() < need:
            continue  # too early for this model: no series has the history it learns from
        model = DemandForecaster(params, horizon=horizon, max_horizon=horizon, threads=threads, seed=seed,
                                 monotone_price=monotone_price, price_response=price_response).fit(past)
        actual = series.between(origin, origin + horizon * pd.tseries.frequencies.to_offset(series.freq))
        ids = sorted(set(actual[ID]) & set(model.history_[ID]))
        prices = ({uid: g.sort_values(TIME)[series.price[0]].to_numpy() for uid, g in actual.groupby(ID)}
                  if series.price else None)
        steps = actual.groupby(ID).size()
        full = [uid for uid in ids if steps.get(uid, 0) == horizon]
        if not full:
            continue
        future = model.future_inputs(past.frame[past.frame[ID].isin(full)], horizon,
                                     {u: prices[u] for u in full} if prices else None, full)
        points = model.predict_points(horizon, future)
        points["step"] = points.groupby(ID).cumcount() + 1
        part = points.merge(actual[[ID, TIME, TARGET]], on=[ID, TIME], how="left")
        part["window"], part["origin"] = k, origin
        parts.append(part)
        if on_window is not None:
            on_window(k, part)
    if not parts:
        raise ValueError("no backtest window has a full horizon of actuals: the history is too short")
    return pd.concat(parts, ignore_index=True)[[ID, TIME, "step", "window", "origin", TARGET, "p50"]]


def forecast_baselines(series: SeriesFrame, *, windows: int, horizon: int, names: Sequence[str],
                       before: pd.Timestamp | None = None, threads: int = 1) -> pd.DataFrame:
    """statsforecast SeasonalNaive, AutoETS and AutoARIMA on the same rolling windows as ``rolling_backtest``.

    Returns:
        ``unique_id``, ``ds``, ``window``, one column per baseline.
    """
    from statsforecast import StatsForecast
    from statsforecast.models import AutoARIMA, AutoETS, SeasonalNaive

    season = series.season_length
    makers = {"seasonal_naive": lambda: SeasonalNaive(season_length=season, alias="seasonal_naive"),
              "auto_ets": lambda: AutoETS(season_length=season, alias="auto_ets"),
              "auto_arima": lambda: AutoARIMA(season_length=season, alias="auto_arima")}
    parts = []
    for k, origin in enumerate(window_origins(series, windows, horizon, before)):
        past = series.until(origin).frame[[ID, TIME, TARGET]]
        sf = StatsForecast(models=[makers[n]() for n in names], freq=series.freq, n_jobs=threads)
        out = sf.forecast(df=past, h=horizon)
        out["window"] = k
        parts.append(out)
    frame = pd.concat(parts, ignore_index=True)
    for name in names:
        frame[name] = frame[name].clip(lower=0.0)
    return frame[[ID, TIME, "window", *names]]


# ------------------------------------------------------------------------------------------------ metrics


def wape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Weighted absolute percentage error: sum |y - yhat| / sum |y| (NaN when the actuals sum to 0)."""
    y, yhat = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
    total = np.abs(y).sum()
    return float(np.abs(y - yhat).sum() / total) if total > 0 else float("nan")


def bias(y: np.ndarray, yhat: np.ndarray) -> float:
    """Forecast bias: sum (yhat - y) / sum |y| (positive: over-forecast)."""
    y, yhat = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
    total = np.abs(y).sum()
    return float((yhat - y).sum() / total) if total > 0 else float("nan")


def pinball(y: np.ndarray, q: np.ndarray, level: float) -> float:
    """Mean pinball (quantile) loss at ``level``."""
    d = np.asarray(y, dtype=float) - np.asarray(q, dtype=float)
    return float(np.mean(np.maximum(level * d, (level - 1) * d)))


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of actuals inside [lo, hi]."""
    y = np.asarray(y, dtype=float)
    return float(np.mean((y >= np.asarray(lo)) & (y <= np.asarray(hi))))


def mase_scales(series: SeriesFrame, origin: pd.Timestamp) -> dict[str, float]:
    """Per series, the in-sample mean absolute error of the seasonal naive forecast up to ``origin`` (MASE's
    denominator; the one-step naive where a series is shorter than two seasons)."""
    past = series.until(origin).frame
    m = series.season_length
    out = {}
    for uid, g in past.groupby(ID):
        y = g[TARGET].to_numpy()
        lag = m if len(y) > 2 * m else 1
        d = np.abs(y[lag:] - y[:-lag]) if len(y) > lag else np.array([])
        out[uid] = float(d.mean()) if len(d) and d.mean() > 0 else float("nan")
    return out


def demand_metrics(frame: pd.DataFrame, column: str = "p50", scales: Mapping[str, float] | None = None
                   ) -> dict[str, float]:
    """WAPE, bias, MASE, pinball losses and 80% coverage of forecasts against ``y``.

    ``frame`` has ``y`` and ``column`` (and ``p10``/``p90`` for the interval figures, ``unique_id`` for MASE).
    """
    y, yhat = frame[TARGET].to_numpy(), frame[column].to_numpy()
    out = {"wape": wape(y, yhat), "bias": bias(y, yhat), "rows": int(len(frame))}
    if scales is not None:
        s = frame[ID].map(scales).to_numpy(dtype=float)
        ok = np.isfinite(s) & (s > 0)
        out["mase"] = float(np.mean(np.abs(y[ok] - yhat[ok]) / s[ok])) if ok.any() else float("nan")
    if "p10" in frame.columns and frame["p10"].notna().any():
        out["coverage_80"] = coverage(y, frame["p10"], frame["p90"])
        level = np.abs(y).mean() or 1.0
        for q, name in ((0.1, "p10"), (0.5, column), (0.9, "p90")):
            out[f"pinball_{int(q * 100)}"] = pinball(y, frame[name], q) / level
        out["interval_width"] = float((frame["p90"] - frame["p10"]).mean() / level)
    return out


def metrics_by(frame: pd.DataFrame, by: str, column: str = "p50") -> pd.DataFrame:
    """WAPE, bias (and coverage when intervals are there) per value of ``by`` (``step``, ``unique_id``,
    ``window``)."""
    rows = []
    for key, g in frame.groupby(by, sort=True):
        row = {by: key, "wape": wape(g[TARGET], g[column]), "bias": bias(g[TARGET], g[column]), "rows": len(g)}
        if "p10" in g.columns and g["p10"].notna().any():
            row["coverage_80"] = coverage(g[TARGET], g["p10"], g["p90"])
        rows.append(row)
    return pd.DataFrame(rows)


def mean_window_wape(frame: pd.DataFrame, column: str) -> float:
    """The mean over windows of each window's WAPE (the figure the issue's targets are stated in)."""
    return float(np.mean([wape(g[TARGET], g[column]) for _, g in frame.groupby("window")]))


# ------------------------------------------------------------------------------------------------ the trainer


@dataclass
class DemandResult:
    """A trained demand model and its evaluation.

    Attributes:
        model: the final model, fitted on the whole history, intervals calibrated on its latest windows.
        params: the study's best point.
        test: the test windows' forecasts (refitted at each origin): ``y``, ``p10``/``p50``/``p90`` and one
            column per baseline.
        metrics: ``test_wape``, ``test_mase``, ..., ``baseline_<name>_wape``, ``best_baseline``, ...
        by_step, by_series: test figures per horizon step and per series.
        elasticities: implied own-price elasticity per series (empty without prices).
        trials: the study's trials (number, value, state, parameters).
        study_name: the Optuna study.
    """

    model: DemandForecaster
    params: DemandParams
    test: pd.DataFrame
    metrics: dict
    by_step: pd.DataFrame
    by_series: pd.DataFrame
    elasticities: pd.DataFrame
    trials: pd.DataFrame
    study_name: str
    windows: dict = field(default_factory=dict)


def check_history(series: SeriesFrame, config: DemandConfig) -> None:
    """Refuse series too short for tuning, calibration and test windows.

    Raises:
        InsufficientHistoryError: saying how many periods the config needs and how many the data has.
    """
    periods = series.frame.groupby(ID).size().max()
    need = (config.test_windows + max(config.cv_windows, config.calibration_windows)) * config.horizon + 8
    if periods < need:
        raise InsufficientHistoryError(
            f"the longest series has {periods} periods; {config.test_windows} test, "
            f"{max(config.cv_windows, config.calibration_windows)} tuning windows of {config.horizon} and 8 periods "
            f"to learn from need {need}. Lower --horizon or the windows in the config, or load more history.")


def train_demand_model(series: SeriesFrame, config: DemandConfig, storage_url: str, study_name: str,
                       progress: Callable[[int, float], None] | None = None,
                       status: Callable[[str], None] | None = None,
                       oracle: pd.DataFrame | None = None) -> DemandResult:
    """Tune, fit, calibrate and evaluate a demand model.

    The study minimises the mean WAPE of a rolling-origin backtest (``cv_windows`` windows of ``horizon``) that
    ends where the test windows begin, so no trial sees a test period. The best point is then backtested over the
    ``test_windows`` (refitted at each origin; intervals from residuals before the first test origin) beside the
    statsforecast baselines, and fitted on the whole history for registration.

    Args:
        series: the task's series.
        config: the training config.
        storage_url: Optuna RDB storage.
        study_name: the study (an existing one is resumed).
        progress: called with (finished trials, best value) after each trial.
        status: called with a short description of each step.
        oracle: simulator ground truth (``unique_id``, ``elasticity``) to judge the implied elasticities by.
    """
    import optuna

    from training.search import open_study, progress_reporter, run_study

    say = status or (lambda _: None)
    check_history(series, config)
    h = config.horizon
    offset = pd.tseries.frequencies.to_offset(series.freq)
    test_origin = series.end - config.test_windows * h * offset
    train_part = series.until(test_origin)
    common = {"horizon": h, "threads": config.threads, "seed": config.seed, "monotone_price": config.monotone_price,
              "price_response": config.price_response}

    study = open_study(study_name, storage_url, config.seed, config.pruning, config.heartbeat_seconds,
                       direction="minimize")

    def objective(trial: optuna.Trial) -> float:
        params = suggest_demand_params(trial, config.families, config.max_estimators)
        scores: list[float] = []

        def judge(k: int, part: pd.DataFrame) -> None:
            scores.append(wape(part[TARGET], part["p50"]))
            trial.report(float(np.mean(scores)), k)
            if config.pruning and k < config.cv_windows - 1 and trial.should_prune():
                raise optuna.TrialPruned()

        rolling_backtest(params, train_part, windows=config.cv_windows, on_window=judge, **common)
        if len(scores) < config.cv_windows:
            # Trials must be judged on the same windows; a failed trial steers the sampler away.
            raise ValueError(f"{params.transform} needs {min_history(params, series.season_length)} periods: "
                             f"too long for the earliest tuning window")
        trial.set_user_attr("window_wape", scores)
        return float(np.mean(scores))

    report = progress_reporter(progress)

    say(f"tuning on {config.cv_windows} rolling windows of {h} before {test_origin:%Y-%m-%d}")
    run_study(study, objective, list(config.families), config.trials, config.timeout, report,
              config.initial_trials, defaults=DEFAULT_PARAMS, fixed={})
    best = params_from_values(study.best_trial.params, config.max_estimators)

    say("calibrating the intervals on the training window")
    probe = DemandForecaster(best, max_horizon=h, **common).fit(train_part)
    calibration = rolling_backtest(best, train_part, windows=config.calibration_windows, **common)
    probe.calibrate(calibration)
    say(f"backtesting {config.test_windows} test windows of {h}")
    test = rolling_backtest(best, series, windows=config.test_windows, **common)
    test = probe.add_intervals(test.assign(p50=test["p50"])).merge(
        test[[ID, TIME, "window", "origin", TARGET]], on=[ID, TIME])
    test = test[[ID, TIME, "step", "window", "origin", TARGET, "p10", "p50", "p90"]]
    if config.baselines:
        say(f"baselines: {', '.join(config.baselines)}")
        base = forecast_baselines(series, windows=config.test_windows, horizon=h, names=config.baselines,
                                  threads=config.threads)
        test = test.merge(base.drop(columns="window"), on=[ID, TIME], how="left")
    scales = mase_scales(series, test_origin)
    metrics = {f"test_{k}": v for k, v in demand_metrics(test, scales=scales).items()}
    metrics["test_wape_mean_window"] = mean_window_wape(test, "p50")
    windows = {"test_origin": test_origin.strftime("%Y-%m-%d"),
               "model": [wape(g[TARGET], g["p50"]) for _, g in test.groupby("window")]}
    for name in config.baselines:
        part = test.dropna(subset=[name])
        metrics[f"baseline_{name}_wape"] = mean_window_wape(part, name)
        metrics[f"baseline_{name}_mase"] = demand_metrics(part, name, scales)["mase"]
        windows[name] = [wape(g[TARGET], g[name]) for _, g in part.groupby("window")]
    if config.baselines:
        best_name = min(config.baselines, key=lambda n: metrics[f"baseline_{n}_wape"])
        metrics["best_baseline_wape"] = metrics[f"baseline_{best_name}_wape"]
        metrics["wape_vs_best_baseline"] = metrics["test_wape_mean_window"] / metrics["best_baseline_wape"]
        windows["best_baseline"] = best_name
    by_step = metrics_by(test, "step")
    by_series = metrics_by(test, ID)

    say("fitting the final model on the whole history")
    model = DemandForecaster(best, max_horizon=config.served_horizon, max_series=config.max_series_per_request,
                             **common).fit(
        series, calibration_windows=config.calibration_windows)
    elasticities = model.elasticities(h, config.elasticity_step)
    if len(elasticities):
        sold = series.frame[series.frame[TARGET] > 0].groupby(ID).size()
        elasticities["sales_periods"] = elasticities[ID].map(sold).fillna(0).astype(int)
        elasticities["enough_sales"] = elasticities["sales_periods"] >= config.min_sales_weeks
        metrics["elasticity_median"] = float(elasticities.loc[elasticities["enough_sales"], "elasticity"].median())
        if oracle is not None:
            elasticities = elasticities.merge(oracle.rename(columns={"elasticity": "true_elasticity"}), on=ID,
                                              how="left")
            judged = elasticities[elasticities["enough_sales"] & elasticities["true_elasticity"].notna()]
            error = (judged["elasticity"] - judged["true_elasticity"]).abs() / judged["true_elasticity"].abs()
            elasticities.loc[judged.index, "relative_error"] = error
            metrics["elasticity_within_25pct"] = float((error <= 0.25).mean()) if len(judged) else float("nan")
            metrics["elasticity_judged_series"] = int(len(judged))
    trials = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration"))
    return DemandResult(model, best, test, metrics, by_step, by_series, elasticities, trials, study_name, windows)


# ------------------------------------------------------------------------------------------------ the task's data


@dataclass
class DemandData:
    """A demand task's series and where they came from."""

    series: SeriesFrame
    target: str
    feature_version: str
    snapshot: str
    window: str
    source_rows: int
    oracle: pd.DataFrame | None = None


def load_demand_data(store: FeatureStore, task: str, config: DemandConfig) -> DemandData:
    """Load a demand task's series (a pipeline: it reads the feature store).

    ``product_week`` tasks build the view up to the as-of date (and materialise it for lineage); ``sales_periods``
    tasks read the imported table, one period length at a time, forecasting units where the table has them and
    revenue otherwise (Walmart's weekly sales), unless the config names the target.

    Raises:
        ValueError: naming what is missing (no rows, an unknown series, a target the data lacks).
    """
    from features.pipeline import build_view, latest_event, materialize, snapshot_hash
    from training.registry import get_task

    definition = get_task(task, store)
    data = definition.data
    snapshot = snapshot_hash(store)
    if data.source == "view":
        as_of = config.as_of or latest_event(store, data.events)
        built = build_view(store, data.name, as_of, threads=config.threads)
        materialize(store, built)
        rows, version = built.frame, built.version
    else:
        if not store.has_table(data.name) or store.count(data.name) == 0:
            raise ValueError(f"no {data.name} in the feature store: import a dataset (walmart_weekly_sales, "
                             f"retail_price_optimization) or a mapped file first")
        rows = store.table(data.name).execute()
        lengths = rows["period_length"].value_counts()
        length = config.period_length or lengths.index[0]
        if length not in lengths.index:
            raise ValueError(f"no {data.name} of period length {length!r}; the table holds "
                             f"{', '.join(f'{k} ({v} rows)' for k, v in lengths.items())}")
        rows = rows[rows["period_length"] == length].rename(columns={"avg_price": "price"})
        version = f"{data.name}@{snapshot[:16]}"
    target = config.target or data.label
    if target in rows.columns and rows[target].notna().sum() == 0 and "revenue" in rows.columns \
            and config.target is None:
        target = "revenue"  # a sales-periods table of revenue only (Walmart)
    if config.series:
        unknown = sorted(set(config.series) - set(rows[data.id_column].astype(str)))
        if unknown:
            raise ValueError(f"unknown series: {', '.join(unknown[:10])}")
        rows = rows[rows[data.id_column].astype(str).isin(config.series)]
    if rows.empty:
        raise ValueError(f"task {task} has no rows")
    series = make_series_frame(rows, id_column=data.id_column, time_column=data.time_column, target=target,
                               config=config)
    window = f"{series.frame[TIME].min():%Y-%m-%d}..{series.end:%Y-%m-%d}"
    oracle = _elasticity_oracle(config, definition)
    return DemandData(series, target, version, snapshot, window, len(rows), oracle)


def _elasticity_oracle(config: DemandConfig, task) -> pd.DataFrame | None:
    """The simulator's own-price elasticity at fixed competitor prices: its price exponent minus its competitor
    exponent (demand goes with (price / reference) ** e x (competitor / price) ** c)."""
    if not config.ground_truth or task.oracle is None:
        return None
    path = Path(config.ground_truth) / task.oracle.file
    if not path.is_file():
        return None
    truth = pd.read_parquet(path)
    own = truth[task.oracle.column] - truth.get("competitor_elasticity", 0.0)
    return pd.DataFrame({ID: truth[task.oracle.id_column].astype(str), "elasticity": own})


def load_demand_artifact(folder: Path, expected: dict[str, str] | None = None) -> DemandForecaster:
    """Load a saved demand model, after checking its files' SHA-256 against ``expected`` when given."""
    if expected:
        from training.models import verify_digests

        verify_digests(Path(folder), expected)
    return DemandForecaster.load(folder)



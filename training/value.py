"""Customer lifetime value: BG/NBD + Gamma-Gamma per account, and a tuned booster of next-period value beside it.

Two models answer "what is this customer worth", and every run trains and reports both:

- **Probabilistic** (``ClvModel``): BG/NBD for the number of future purchases and P(alive), Gamma-Gamma for the
  spend per purchase (``training.clv``), fitted on each account's purchase history before a cutoff. It gives the
  expected purchases and value over any horizon and a discounted lifetime value.
- **Booster** (``ValueBooster``): a LightGBM or XGBoost regressor (Tweedie loss: many accounts spend nothing) of
  the value of the next ``horizon_days`` on the customer view, tuned by Optuna through the same study machinery
  as risk models. It sees more than the purchase history (category mix, service, price exposure, profile), and
  predicts the one horizon it was trained on.

The registry holds whichever the task's config names (``model``); the probabilistic model is always in the
artifact, as it alone gives P(alive), purchases and lifetime value.

The evaluation is point in time: both are fitted on what was known at the test cutoff (the latest month end
whose next ``horizon_days`` have happened), and judged on that holdout: the papers' calibration/holdout
comparison of expected against actual repeat purchases, and for value MAE, Spearman rank correlation and the
share of the holdout's revenue captured by the top 10% and 20% of accounts ranked by prediction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from training.clv import BetaGeo, GammaGamma, lifetime_value
from training.configs import TaskConfig
from training.models import artifact_digests, make_regressor, verify_digests
from training.preprocess import TabularPreprocessor

if TYPE_CHECKING:
    import optuna

    from features.store import FeatureStore
    from training.tasks import TaskData

log = logging.getLogger(__name__)

ID = "account_id"
DAYS_PER_MONTH = 365.25 / 12
#: The columns of the customer view a recency-frequency-monetary model sees (the baseline of the booster).
RFM_PREFIXES = ("recency_days", "tenure_days", "orders_", "value_", "avg_order_value_")
BOOSTER_FILES = {"lightgbm": "booster.txt", "xgboost": "booster.json"}
VALUE_FILE = "value.json"
BANDS = ("low", "medium", "high")
#: The BG/NBD and Gamma-Gamma inputs of an account.
SUMMARY_COLUMNS = ("frequency", "recency", "T", "monetary")


class ValueConfig(TaskConfig):
    """Training config of a lifetime-value model (``experiments/configs/<task>.yaml``)."""

    model: Literal["probabilistic", "booster"] = Field("probabilistic", description=(
        "What the registry holds: probabilistic (BG/NBD + Gamma-Gamma) or booster (next-period value); the run "
        "trains and reports both."))
    trials: int = Field(20, ge=1, description="Completed trials the booster's study should reach.")
    max_estimators: int = Field(1500, ge=10)
    time_unit_days: float = Field(7.0, gt=0, description="Time unit of the BG/NBD summaries (7: weeks, as in "
                                  "the papers).")
    ltv_months: int = Field(12, ge=1, le=120, description="Months the lifetime value sums over.")
    discount_rate: float = Field(0.10, ge=0, lt=1, description="Annual discount rate of the lifetime value.")
    value_bands: dict[str, float] = Field(default_factory=lambda: {"medium": 0.5, "high": 0.8}, description=(
        "Lower quantile of predicted value of each band above low (set on the training population)."))
    calibration_buckets: int = Field(7, ge=2, description="Repeat-purchase counts 0..N-1 each get a row of the "
                                     "calibration/holdout table, N and above share the last.")
    validation_cutoffs: int = Field(2, ge=1, description="Labelled cutoffs before the test cutoff the booster's "
                                    "study validates on.")
    max_accounts_per_request: int = Field(1000, ge=1)


# ------------------------------------------------------------------------------------------------ summaries


def summarise_purchases(purchases: pd.DataFrame, cutoff: pd.Timestamp, *, unit_days: float = 7.0,
                        id_column: str = ID, time_column: str = "order_date", value_column: str = "order_value"
                        ) -> pd.DataFrame:
    """Per-account BG/NBD inputs from purchases on or before ``cutoff``'s day.

    Purchases on the same day are one purchase (of their summed value), as in the papers' CDNOW data.

    Returns:
        One row per account with a purchase: ``frequency`` (repeat purchase days), ``recency`` (from the first to
        the last purchase), ``T`` (from the first purchase to the cutoff) in units of ``unit_days``, ``monetary``
        (mean value of the repeat purchase days; NaN without one) and ``first_purchase``.
    """
    day = pd.to_datetime(purchases[time_column]).dt.normalize()
    cutoff = pd.Timestamp(cutoff).normalize()
    rows = pd.DataFrame({ID: purchases[id_column].astype(str), "day": day,
                         "value": pd.to_numeric(purchases[value_column], errors="coerce").fillna(0.0)})
    rows = rows[rows["day"] <= cutoff]
    days = rows.groupby([ID, "day"], sort=True)["value"].sum().reset_index()
    grouped = days.groupby(ID, sort=True)
    first = grouped["day"].min()
    last = grouped["day"].max()
    count = grouped.size()
    total = grouped["value"].sum()
    first_value = days.drop_duplicates(ID, keep="first").set_index(ID)["value"]
    frequency = count - 1
    repeat_value = total - first_value.reindex(count.index)
    unit = pd.Timedelta(days=unit_days)
    out = pd.DataFrame({
        "frequency": frequency.astype(float),
        "recency": (last - first) / unit,
        "T": (cutoff - first) / unit,
        "monetary": (repeat_value / frequency.where(frequency > 0)).astype(float),
        "first_purchase": first,
    })
    out.index.name = ID
    return out


def holdout_purchases(purchases: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int, *, id_column: str = ID,
                      time_column: str = "order_date", value_column: str = "order_value") -> pd.DataFrame:
    """Per account, purchase days and value in the ``horizon_days`` days after ``cutoff``'s day.

    Returns:
        ``purchases`` (distinct days) and ``value``, indexed by account (accounts without any are absent).
    """
    day = pd.to_datetime(purchases[time_column]).dt.normalize()
    cutoff = pd.Timestamp(cutoff).normalize()
    keep = (day > cutoff) & (day <= cutoff + pd.Timedelta(days=horizon_days))
    rows = pd.DataFrame({ID: purchases.loc[keep, id_column].astype(str), "day": day[keep],
                         "value": pd.to_numeric(purchases.loc[keep, value_column], errors="coerce").fillna(0.0)})
    grouped = rows.groupby(ID)
    return pd.DataFrame({"purchases": grouped["day"].nunique().astype(float), "value": grouped["value"].sum()})


# ------------------------------------------------------------------------------------------------ probabilistic


@dataclass
class ClvModel:
    """BG/NBD + Gamma-Gamma with the summaries of the accounts it was fitted on, as of ``as_of``."""

    purchases: BetaGeo
    spend: GammaGamma
    unit_days: float
    as_of: pd.Timestamp
    summaries: pd.DataFrame
    ltv_months: int = 12
    discount_rate: float = 0.10

    @classmethod
    def fit(cls, summaries: pd.DataFrame, as_of: pd.Timestamp, *, unit_days: float, ltv_months: int = 12,
            discount_rate: float = 0.10) -> ClvModel:
        """Fit both models on summaries from ``summarise_purchases``.

        Raises:
            FitError: too few customers or repeat buyers to fit.
        """
        bg = BetaGeo.fit(summaries["frequency"], summaries["recency"], summaries["T"])
        gg = GammaGamma.fit(summaries["frequency"], summaries["monetary"])
        return cls(bg, gg, unit_days, pd.Timestamp(as_of), summaries, ltv_months, discount_rate)

    @property
    def monthly_discount(self) -> float:
        """The discount rate per month."""
        return (1 + self.discount_rate) ** (1 / 12) - 1

    def predict(self, horizon_days: float, summaries: pd.DataFrame | None = None) -> pd.DataFrame:
        """Per account: ``expected_purchases``, ``expected_spend`` (per purchase), ``expected_value`` over the
        horizon, ``p_alive`` and ``ltv`` (discounted, over ``ltv_months``)."""
        s = self.summaries if summaries is None else summaries
        x, t_x, T, m = s["frequency"].to_numpy(), s["recency"].to_numpy(), s["T"].to_numpy(), s["monetary"].to_numpy()
        t = horizon_days / self.unit_days
        purchases = self.purchases.conditional_expected_purchases(t, x, t_x, T)
        spend = self.spend.conditional_expected_spend(x, m)
        ltv = lifetime_value(self.purchases, self.spend, x, t_x, T, m, periods=self.ltv_months,
                             period_length=DAYS_PER_MONTH / self.unit_days, discount_rate=self.monthly_discount)
        return pd.DataFrame({"expected_purchases": purchases, "expected_spend": spend,
                             "expected_value": purchases * spend,
                             "p_alive": self.purchases.probability_alive(x, t_x, T), "ltv": ltv}, index=s.index)

    def cumulative_expected(self, horizon_days: int, step_days: int = 7) -> pd.DataFrame:
        """Expected repeat purchases of all its accounts summed, at each step of the holdout (the tracking plot)."""
        s = self.summaries
        x, t_x, T = s["frequency"].to_numpy(), s["recency"].to_numpy(), s["T"].to_numpy()
        ends = np.arange(step_days, horizon_days + step_days, step_days, dtype=float)
        ends[-1] = min(ends[-1], horizon_days)
        totals = [float(self.purchases.conditional_expected_purchases(e / self.unit_days, x, t_x, T).sum())
                  for e in ends]
        return pd.DataFrame({"day": ends.astype(int), "expected": totals})

    def parameters(self) -> dict:
        """The fitted parameters and log-likelihoods."""
        return {"bgnbd": self.purchases.to_dict(), "gamma_gamma": self.spend.to_dict()}


def calibration_holdout(model: ClvModel, actual: pd.DataFrame, horizon_days: int, buckets: int = 7
                        ) -> pd.DataFrame:
    """The papers' comparison: mean expected against mean actual repeat purchases in the holdout, per number of
    repeat purchases in the calibration period (``buckets - 1`` and above share the last row)."""
    s = model.summaries
    expected = model.purchases.conditional_expected_purchases(horizon_days / model.unit_days, s["frequency"],
                                                              s["recency"], s["T"])
    frame = pd.DataFrame({"frequency": s["frequency"].to_numpy(), "expected": expected,
                          "actual": actual["purchases"].reindex(s.index, fill_value=0.0).to_numpy()})
    frame["bucket"] = np.minimum(frame["frequency"], buckets - 1).astype(int)
    table = frame.groupby("bucket").agg(customers=("expected", "size"), expected=("expected", "mean"),
                                        actual=("actual", "mean")).reset_index()
    table["label"] = [f"{b}+" if b == buckets - 1 else str(b) for b in table["bucket"]]
    return table[["label", "customers", "expected", "actual"]]


def cumulative_actual(purchases: pd.DataFrame, accounts: pd.Index, cutoff: pd.Timestamp, days: Sequence[int],
                      ) -> list[float]:
    """Actual repeat purchase days of ``accounts`` in the first ``d`` days after the cutoff, for each ``d``."""
    day = pd.to_datetime(purchases["order_date"]).dt.normalize()
    cutoff = pd.Timestamp(cutoff).normalize()
    rows = pd.DataFrame({ID: purchases[ID].astype(str), "day": day})
    rows = rows[(rows["day"] > cutoff) & rows[ID].isin(accounts)].drop_duplicates()
    offset = (rows["day"] - cutoff).dt.days.to_numpy()
    return [float((offset <= d).sum()) for d in days]


def naive_purchases(summaries: pd.DataFrame, horizon_days: float, unit_days: float) -> np.ndarray:
    """Each account's calibration-period rate of repeat purchases carried forward over the horizon."""
    rate = summaries["frequency"] / summaries["T"].where(summaries["T"] > 0)
    return (rate * horizon_days / unit_days).fillna(0.0).to_numpy()


# ------------------------------------------------------------------------------------------------ metrics


def top_share(actual: np.ndarray, predicted: np.ndarray, share: float) -> float:
    """The share of the actual total held by the top ``share`` of accounts ranked by prediction."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    total = actual.sum()
    if total <= 0 or len(actual) == 0:
        return float("nan")
    k = max(1, int(round(share * len(actual))))
    top = np.argsort(-predicted, kind="stable")[:k]
    return float(actual[top].sum() / total)


def spearman(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Spearman rank correlation (NaN when either side is constant)."""
    from scipy.stats import spearmanr

    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    if len(actual) < 3 or np.ptp(actual) == 0 or np.ptp(predicted) == 0:
        return float("nan")
    return float(spearmanr(actual, predicted).statistic)


def value_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, WAPE (absolute errors over realised value), Spearman, top-10% and top-20% revenue capture, and the
    ratio of predicted to actual total."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    total = actual.sum()
    return {"mae": float(np.mean(np.abs(actual - predicted))),
            "wape": float(np.abs(actual - predicted).sum() / total) if total > 0 else float("nan"),
            "spearman": spearman(actual, predicted),
            "top10_capture": top_share(actual, predicted, 0.1), "top20_capture": top_share(actual, predicted, 0.2),
            "total_ratio": float(predicted.sum() / total) if total > 0 else float("nan")}


# ------------------------------------------------------------------------------------------------ booster


def suggest_value_params(trial, families: Sequence[str], max_estimators: int) -> tuple[str, dict]:
    """Sample a family and its regressor parameters (Tweedie loss, its variance power tuned)."""
    family = trial.suggest_categorical("family", list(families))
    power = trial.suggest_float("tweedie_power", 1.05, 1.9)
    if family == "lightgbm":
        return family, {
            "objective": "tweedie", "tweedie_variance_power": power, "n_estimators": max_estimators,
            "learning_rate": trial.suggest_float("lgb_learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int("lgb_num_leaves", 4, 63, log=True),
            "min_child_samples": trial.suggest_int("lgb_min_child_samples", 5, 200, log=True),
            "colsample_bytree": trial.suggest_float("lgb_colsample_bytree", 0.4, 1.0),
            "subsample": trial.suggest_float("lgb_subsample", 0.5, 1.0),
            "reg_lambda": trial.suggest_float("lgb_reg_lambda", 1e-3, 30.0, log=True),
        }
    return family, {
        "objective": "reg:tweedie", "tweedie_variance_power": power, "n_estimators": max_estimators,
        "learning_rate": trial.suggest_float("xgb_learning_rate", 0.01, 0.2, log=True),
        "max_depth": trial.suggest_int("xgb_max_depth", 2, 8),
        "min_child_weight": trial.suggest_float("xgb_min_child_weight", 0.5, 50.0, log=True),
        "colsample_bytree": trial.suggest_float("xgb_colsample_bytree", 0.4, 1.0),
        "subsample": trial.suggest_float("xgb_subsample", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("xgb_reg_lambda", 1e-3, 30.0, log=True),
    }


#: The first trials of a new study, one per family.
DEFAULT_VALUE_TRIALS = {
    "lightgbm": {"family": "lightgbm", "tweedie_power": 1.5, "lgb_learning_rate": 0.05, "lgb_num_leaves": 15,
                 "lgb_min_child_samples": 40, "lgb_colsample_bytree": 0.8, "lgb_subsample": 0.8,
                 "lgb_reg_lambda": 1.0},
    "xgboost": {"family": "xgboost", "tweedie_power": 1.5, "xgb_learning_rate": 0.05, "xgb_max_depth": 4,
                "xgb_min_child_weight": 5.0, "xgb_colsample_bytree": 0.8, "xgb_subsample": 0.8,
                "xgb_reg_lambda": 1.0},
}


class ValueBooster:
    """A fitted next-period value regressor: preprocessing and a native booster (no pickle)."""

    def __init__(self, family: str, params: Mapping, preprocessor: TabularPreprocessor, *, threads: int = 2,
                 seed: int = 42):
        self.family, self.params, self.preprocessor = family, dict(params), preprocessor
        self.threads, self.seed = threads, seed
        self.booster_ = None
        self.rounds_: int | None = None

    def fit(self, frame: pd.DataFrame, y: np.ndarray, valid: tuple[pd.DataFrame, np.ndarray] | None = None,
            early_stopping_rounds: int = 100) -> ValueBooster:
        """Fit; with ``valid``, stop early on its loss and keep the best round."""
        import lightgbm as lgb

        x = self.preprocessor.fit_transform(frame)
        model = make_regressor(self.family, self.params, threads=self.threads, seed=self.seed, monotone=None)
        if valid is None:
            model.fit(x, y)
        elif self.family == "lightgbm":
            model.fit(x, y, eval_X=(self.preprocessor.transform(valid[0]),), eval_y=(valid[1],),
                      callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)])
        else:
            model.set_params(early_stopping_rounds=early_stopping_rounds)
            model.fit(x, y, eval_set=[(self.preprocessor.transform(valid[0]), valid[1])], verbose=False)
        self.estimator_ = model
        self.booster_ = model.booster_ if self.family == "lightgbm" else model.get_booster()
        best = getattr(model, "best_iteration_", None) if self.family == "lightgbm" else \
            getattr(model, "best_iteration", None)
        self.rounds_ = int(best) + (0 if self.family == "lightgbm" else 1) if best else self.params["n_estimators"]
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Expected value over the horizon for each row."""
        x = self.preprocessor.transform(frame)
        if self.family == "lightgbm":
            return np.asarray(self.booster_.predict(x, num_threads=self.threads,
                                                    num_iteration=self.rounds_), dtype=float)
        import xgboost as xgb

        return np.asarray(self.booster_.predict(xgb.DMatrix(x, nthread=self.threads, enable_categorical=True),
                                                iteration_range=(0, self.rounds_)), dtype=float)

    def save(self, folder: Path) -> dict:
        """Write the booster in its native format; returns the metadata to keep beside it."""
        path = folder / BOOSTER_FILES[self.family]
        if self.family == "lightgbm":
            self.booster_.save_model(str(path), num_iteration=self.rounds_)
        else:
            self.booster_[: self.rounds_].save_model(str(path))
        return {"family": self.family, "params": self.params, "rounds": self.rounds_,
                "preprocessor": self.preprocessor.to_dict(), "booster_file": path.name}

    @classmethod
    def load(cls, folder: Path, meta: Mapping, threads: int = 1) -> ValueBooster:
        """Rebuild from ``save``'s metadata and file."""
        model = cls(meta["family"], meta["params"], TabularPreprocessor.from_dict(meta["preprocessor"]),
                    threads=threads)
        path = folder / meta["booster_file"]
        if meta["family"] == "lightgbm":
            import lightgbm as lgb

            model.booster_ = lgb.Booster(model_file=str(path))
        else:
            import xgboost as xgb

            model.booster_ = xgb.Booster(model_file=str(path))
            model.booster_.set_param({"nthread": threads})
        model.rounds_ = None if meta["family"] == "lightgbm" else model.booster_.num_boosted_rounds()
        return model


# ------------------------------------------------------------------------------------------------ artifact


@dataclass
class ValueModel:
    """What the registry holds for a value task: the probabilistic model (always) and, when the config names it,
    the booster with the features of each account at ``as_of``.

    Attributes:
        clv: BG/NBD + Gamma-Gamma and the account summaries as of ``clv.as_of``.
        choice: ``probabilistic`` or ``booster``: which one answers ``expected_value``.
        horizon_days: the booster's horizon (and the default horizon of a request).
        bands: lower bound of predicted lifetime value for each band above ``low``.
        booster: the booster, when ``choice`` is ``booster``.
        features: the customer view at ``as_of`` (what the booster scores), when ``choice`` is ``booster``.
        max_accounts: the most accounts one request may name.
    """

    clv: ClvModel
    choice: str
    horizon_days: int
    bands: dict[str, float]
    booster: ValueBooster | None = None
    features: pd.DataFrame | None = None
    max_accounts: int = 1000

    @property
    def accounts(self) -> pd.Index:
        """The accounts the model can answer for."""
        return self.clv.summaries.index

    def band(self, ltv: np.ndarray) -> np.ndarray:
        """The value band of each lifetime value."""
        out = np.full(len(ltv), "low", dtype=object)
        for name, bound in sorted(self.bands.items(), key=lambda kv: kv[1]):
            out[np.asarray(ltv) >= bound] = name
        return out

    def predict(self, accounts: Sequence[str], horizon_days: int | None = None) -> pd.DataFrame:
        """Expected purchases, spend and value over the horizon, P(alive), LTV and value band per account.

        Raises:
            KeyError: naming accounts the model does not know.
            ValueError: a booster asked for a horizon other than its own.
        """
        accounts = [str(a) for a in accounts]
        unknown = [a for a in accounts if a not in self.accounts]
        if unknown:
            raise KeyError(unknown)
        h = horizon_days or self.horizon_days
        if self.choice == "booster" and h != self.horizon_days:
            raise ValueError(f"the registered model is a booster of the next {self.horizon_days} days; "
                             f"it cannot answer for {h} days")
        out = self.clv.predict(h, self.clv.summaries.loc[accounts])
        if self.choice == "booster":
            rows = self.features.set_index(ID).reindex(accounts)
            known = rows.index[rows["cutoff"].notna()] if "cutoff" in rows else rows.index
            predicted = pd.Series(0.0, index=accounts)
            if len(known):
                predicted.loc[known] = self.booster.predict(rows.loc[known].reset_index())
            # Accounts no longer active at the cutoff are outside the view: the booster learnt that their
            # next-period value is about nothing, and the probabilistic model agrees.
            out["expected_value"] = np.where(rows.index.isin(known), predicted.to_numpy(),
                                             out["expected_value"].to_numpy())
        out["value_band"] = self.band(out["ltv"].to_numpy())
        out.index.name = ID
        return out.reset_index()

    def predict_rows(self, rows: pd.DataFrame, horizon_days: int | None = None) -> np.ndarray:
        """Expected value over the horizon for rows that carry their own summaries (``SUMMARY_COLUMNS``, as of
        the rows' cutoff) and, for a booster, their customer-view features: how a champion is judged on a
        candidate's holdout."""
        h = horizon_days or self.horizon_days
        if self.choice == "booster":
            return self.booster.predict(rows)
        return self.clv.predict(h, rows[list(SUMMARY_COLUMNS)])["expected_value"].to_numpy()

    def save(self, folder: Path) -> dict[str, str]:
        """Write ``value.json``, ``accounts.parquet`` and, for a booster, its native file and ``features.parquet``.

        Returns:
            The SHA-256 of each file (registered as version tags).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        summaries = self.clv.summaries.reset_index()
        summaries["first_purchase"] = pd.to_datetime(summaries["first_purchase"])
        summaries.to_parquet(folder / "accounts.parquet", index=False)
        meta = {"kind": "value", "choice": self.choice, "horizon_days": self.horizon_days, "bands": self.bands,
                "as_of": self.clv.as_of.strftime("%Y-%m-%d"), "unit_days": self.clv.unit_days,
                "ltv_months": self.clv.ltv_months, "discount_rate": self.clv.discount_rate,
                "parameters": self.clv.parameters(), "max_accounts": self.max_accounts}
        if self.choice == "booster":
            meta["booster"] = self.booster.save(folder)
            self.features.to_parquet(folder / "features.parquet", index=False)
        (folder / VALUE_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))
        return artifact_digests(folder)

    @classmethod
    def load(cls, folder: Path, threads: int = 1) -> ValueModel:
        """Rebuild a saved model from its plain files."""
        folder = Path(folder)
        meta = json.loads((folder / VALUE_FILE).read_text())
        summaries = pd.read_parquet(folder / "accounts.parquet").set_index(ID)
        p = meta["parameters"]
        clv = ClvModel(BetaGeo(**p["bgnbd"]), GammaGamma(**p["gamma_gamma"]), meta["unit_days"],
                       pd.Timestamp(meta["as_of"]), summaries, meta["ltv_months"], meta["discount_rate"])
        booster = features = None
        if meta["choice"] == "booster":
            booster = ValueBooster.load(folder, meta["booster"], threads=threads)
            features = pd.read_parquet(folder / "features.parquet")
        return cls(clv, meta["choice"], meta["horizon_days"], meta["bands"], booster, features,
                   meta.get("max_accounts", 1000))


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


def load_value_artifact(folder: Path, expected: dict[str, str] | None = None) -> ValueModel:
    """Load a saved value model, after checking its files' SHA-256 against ``expected`` when given."""
    if expected:
        verify_digests(Path(folder), expected)
    return ValueModel.load(Path(folder))


# ------------------------------------------------------------------------------------------------ training


@dataclass
class ValueData:
    """A value task's inputs: the purchase history and the customer view's labelled rows."""

    purchases: pd.DataFrame
    task: TaskData
    as_of: pd.Timestamp


@dataclass
class ValueResult:
    """What training returns: the model to register, figures, tables and lineage."""

    model: ValueModel
    metrics: dict[str, float]
    params: dict
    holdout: pd.DataFrame
    calibration: pd.DataFrame
    tracking: pd.DataFrame
    windows: dict
    study: dict = field(default_factory=dict)


class InsufficientValueDataError(ValueError):
    """Too little purchase history or too few labelled cutoffs to train and judge a value model."""


def split_cutoffs(cutoffs: Sequence[pd.Timestamp], horizon_days: int, validation: int
                  ) -> tuple[pd.Timestamp, list[pd.Timestamp], list[pd.Timestamp]]:
    """The test cutoff (the latest), the booster's validation cutoffs (the latest whose horizon ends by the test
    cutoff) and its training cutoffs (whose horizon ends by the first validation cutoff).

    Raises:
        InsufficientValueDataError: naming how many cutoffs there are and how many are needed.
    """
    cutoffs = sorted(pd.Timestamp(c) for c in cutoffs)
    h = pd.Timedelta(days=horizon_days)
    if not cutoffs:
        raise InsufficientValueDataError("no labelled cutoffs: the customer view has no active customer whose "
                                         f"next {horizon_days} days have happened")
    test = cutoffs[-1]
    before = [c for c in cutoffs if c + h <= test]
    valid = before[-validation:]
    train = [c for c in before if valid and c + h <= valid[0]]
    if len(valid) < validation or not train:
        raise InsufficientValueDataError(
            f"{len(cutoffs)} labelled month ends: the booster needs training cutoffs whose {horizon_days}-day "
            f"horizon ends before its {validation} validation cutoff(s), which end before the test cutoff "
            f"{test:%Y-%m-%d}; import a longer history")
    return test, valid, train


def _value_objective(frame: pd.DataFrame, label: str, features: tuple[list[str], list[str]],
                     train: Sequence[pd.Timestamp], valid: Sequence[pd.Timestamp], config: ValueConfig):
    numeric, categorical = features
    train_rows = frame[frame["cutoff"].isin(train)]
    valid_rows = frame[frame["cutoff"].isin(valid)]
    y_train, y_valid = train_rows[label].to_numpy(float), valid_rows[label].to_numpy(float)

    def objective(trial: optuna.Trial) -> float:
        family, params = suggest_value_params(trial, config.families, config.max_estimators)
        model = ValueBooster(family, params, TabularPreprocessor(numeric, categorical), threads=config.threads,
                             seed=config.seed).fit(train_rows, y_train, (valid_rows, y_valid),
                                                   config.early_stopping_rounds)
        predicted = model.predict(valid_rows)
        figures = value_metrics(y_valid, predicted)
        trial.set_user_attr("rounds", model.rounds_)
        trial.set_user_attr("valid_mae", figures["mae"])
        value = figures["spearman"]
        return value if np.isfinite(value) else -1.0

    return objective


def train_value_model(data: ValueData, config: ValueConfig, storage_url: str, study_name: str,
                      progress: Callable[[int, float], None] | None = None,
                      status: Callable[[str], None] | None = None) -> ValueResult:
    """Fit, judge and refit both value models (pure: frames in, a model and figures out; the study is in RDB).

    1. Test cutoff: the latest month end whose next ``horizon_days`` have happened.
    2. BG/NBD + Gamma-Gamma on the purchases up to it; the booster tuned (Optuna, maximising the validation
       Spearman correlation) on the view's rows whose label was known by then, and refitted on them all.
    3. Both judged on the holdout after the test cutoff, beside the RFM-only baseline and the naive forecast.
    4. Both refitted on everything up to the as-of date for serving.

    Raises:
        InsufficientValueDataError: too little history.
        FitError: a probabilistic model that cannot be fitted.
    """
    from training.search import open_study, progress_reporter, run_study

    say = status or (lambda message: None)
    spec = data.task.spec
    frame = data.task.frame
    label = spec.label
    h = config.horizon_days
    test_cutoff, valid, train = split_cutoffs(frame["cutoff"].unique(), h, config.validation_cutoffs)
    features = (spec.numeric, spec.categorical)

    say(f"BG/NBD and Gamma-Gamma on purchases up to the test cutoff {test_cutoff:%Y-%m-%d}")
    calib = summarise_purchases(data.purchases, test_cutoff, unit_days=config.time_unit_days)
    clv_test = ClvModel.fit(calib, test_cutoff, unit_days=config.time_unit_days, ltv_months=config.ltv_months,
                            discount_rate=config.discount_rate)
    actual = holdout_purchases(data.purchases, test_cutoff, h)
    calibration = calibration_holdout(clv_test, actual, h, config.calibration_buckets)
    tracking = clv_test.cumulative_expected(h)
    tracking["actual"] = cumulative_actual(data.purchases, calib.index, test_cutoff, tracking["day"])
    expected_all = clv_test.purchases.conditional_expected_purchases(h / config.time_unit_days, calib["frequency"],
                                                                     calib["recency"], calib["T"])
    actual_all = actual["purchases"].reindex(calib.index, fill_value=0.0).to_numpy()
    naive_all = naive_purchases(calib, h, config.time_unit_days)

    say(f"booster study: {config.trials} trials on {len(train)} training and {len(valid)} validation cutoffs")
    study = open_study(study_name, storage_url, config.seed, config.pruning, config.heartbeat_seconds,
                       direction="maximize")
    objective = _value_objective(frame, label, features, train, valid, config)
    ran = run_study(study, objective, config.families, config.trials, config.timeout,
                    callback=progress_reporter(progress),
                    initial=config.initial_trials, defaults=DEFAULT_VALUE_TRIALS, fixed={})
    best = study.best_trial
    family, params = suggest_value_params(_fixed(best.params), [best.params["family"]], config.max_estimators)
    params["n_estimators"] = int(best.user_attrs.get("rounds") or config.max_estimators)

    known = frame[frame["cutoff"] + pd.Timedelta(days=h) <= test_cutoff]
    test_rows = frame[frame["cutoff"] == test_cutoff].reset_index(drop=True)
    booster_test = ValueBooster(family, params, TabularPreprocessor(*features), threads=config.threads,
                                seed=config.seed).fit(known, known[label].to_numpy(float))
    rfm = [c for c in spec.numeric if c.startswith(RFM_PREFIXES)]
    default_family, default_params = suggest_value_params(_fixed(DEFAULT_VALUE_TRIALS["lightgbm"]), ["lightgbm"],
                                                          config.max_estimators)
    baseline_rows = frame[frame["cutoff"].isin(train)]
    valid_rows = frame[frame["cutoff"].isin(valid)]
    baseline = ValueBooster(default_family, default_params, TabularPreprocessor(rfm, []), threads=config.threads,
                            seed=config.seed).fit(baseline_rows, baseline_rows[label].to_numpy(float),
                                                  (valid_rows, valid_rows[label].to_numpy(float)),
                                                  config.early_stopping_rounds)
    baseline_params = {**default_params, "n_estimators": baseline.rounds_}
    baseline = ValueBooster(default_family, baseline_params, TabularPreprocessor(rfm, []), threads=config.threads,
                            seed=config.seed).fit(known, known[label].to_numpy(float))

    say(f"judging both on the {h} days after {test_cutoff:%Y-%m-%d} ({len(test_rows)} active accounts)")
    y = test_rows[label].to_numpy(float)
    test_summaries = calib.reindex(test_rows[ID].astype(str))
    clv_rows = clv_test.predict(h, test_summaries)
    holdout = pd.DataFrame({ID: test_rows[ID].astype(str), "actual_value": y,
                            "probabilistic": clv_rows["expected_value"].to_numpy(),
                            "booster": booster_test.predict(test_rows), "rfm_baseline": baseline.predict(test_rows),
                            "p_alive": clv_rows["p_alive"].to_numpy(),
                            "expected_purchases": clv_rows["expected_purchases"].to_numpy(),
                            "actual_purchases": actual["purchases"].reindex(test_rows[ID].astype(str),
                                                                            fill_value=0.0).to_numpy(),
                            **{c: test_summaries[c].to_numpy() for c in SUMMARY_COLUMNS}})
    metrics: dict[str, float] = {}
    for name in ("probabilistic", "booster", "rfm_baseline"):
        for key, v in value_metrics(y, holdout[name].to_numpy()).items():
            metrics[f"{name}_{key}"] = v
    chosen = config.model
    for key in ("mae", "wape", "spearman", "top10_capture", "top20_capture", "total_ratio"):
        metrics[f"test_{key}"] = metrics[f"{chosen}_{key}"]
    metrics |= {
        "holdout_purchases_expected": float(expected_all.sum()), "holdout_purchases_actual": float(actual_all.sum()),
        "holdout_purchases_naive": float(naive_all.sum()),
        "purchases_mae": float(np.mean(np.abs(expected_all - actual_all))),
        "purchases_naive_mae": float(np.mean(np.abs(naive_all - actual_all))),
        "purchases_ratio": float(expected_all.sum() / actual_all.sum()) if actual_all.sum() else float("nan"),
        "bgnbd_log_likelihood": clv_test.purchases.log_likelihood,
        "customers_fitted": float(len(calib)), "test_accounts": float(len(test_rows)),
        "trials_run": float(ran), "trials_in_study": float(len(study.trials)),
        "best_validation_spearman": float(best.value),
    }

    say(f"refitting both on everything up to {data.as_of:%Y-%m-%d} for serving")
    summaries = summarise_purchases(data.purchases, data.as_of, unit_days=config.time_unit_days)
    clv = ClvModel.fit(summaries, data.as_of, unit_days=config.time_unit_days, ltv_months=config.ltv_months,
                       discount_rate=config.discount_rate)
    ltv = clv.predict(h)["ltv"].to_numpy()
    bands = {name: float(np.quantile(ltv, q)) for name, q in config.value_bands.items()}
    booster = current = None
    if chosen == "booster":
        booster = ValueBooster(family, params, TabularPreprocessor(*features), threads=config.threads,
                               seed=config.seed).fit(frame, frame[label].to_numpy(float))
        current = data.task.recent if data.task.recent is not None else test_rows
        current = current[[ID, "cutoff", *spec.features]].copy()
        current[ID] = current[ID].astype(str)
    model = ValueModel(clv, chosen, h, bands, booster, current, config.max_accounts_per_request)
    windows = {"test_cutoff": f"{test_cutoff:%Y-%m-%d}", "validation_cutoffs": [f"{c:%Y-%m-%d}" for c in valid],
               "training_cutoffs": len(train), "as_of": f"{data.as_of:%Y-%m-%d}", "horizon_days": h,
               "parameters_test": clv_test.parameters(), "parameters": clv.parameters(), "bands": bands}
    run_params = {"model": chosen, "booster_family": family, **{f"booster_{k}": v for k, v in params.items()},
                  "time_unit_days": config.time_unit_days, "ltv_months": config.ltv_months,
                  "discount_rate": config.discount_rate, "horizon_days": h}
    return ValueResult(model, metrics, run_params, holdout, calibration, tracking, windows,
                       {"name": study_name, "trials": len(study.trials), "best": best.number})


def _fixed(values: Mapping):
    import optuna

    return optuna.trial.FixedTrial(dict(values))


def load_value_data(store: FeatureStore, task: str, config: ValueConfig) -> ValueData:
    """Load a value task's inputs (a pipeline: it reads the feature store): completed orders up to the as-of date,
    and the customer view at every month end.

    Raises:
        ValueError: naming what the store lacks.
    """
    from features.pipeline import latest_event, load_purchases
    from training.registry import get_task
    from training.tasks import load_task_data, resolve_task

    definition = get_task(task, store)
    if not store.has_table("orders") or store.count("orders") == 0:
        raise ValueError("no orders in the feature store: a value model learns from purchase histories; ingest "
                         "orders and order_lines first")
    as_of = config.as_of or latest_event(store, definition.data.events)
    spec = resolve_task(task, store, config)
    rows = load_task_data(store, spec, config.model_copy(update={"as_of": as_of}))
    purchases = load_purchases(store, as_of)
    return ValueData(purchases, rows, pd.Timestamp(as_of))

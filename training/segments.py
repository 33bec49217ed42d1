"""Customer segments: HDBSCAN on the customer profile, tuned on DBCV, named by documented rules, with KMeans on RFM
run beside it.

What a segmentation needs to be used by a sales organisation, and how each is built here:

- **Features.** The customer view at a month end (RFM, category shares, association-rule affinity, service
  sensitivity) with each account's lifetime value and P(alive) from BG/NBD + Gamma-Gamma fitted on the purchases up
  to that day (``training.value``), its won deals' mean discount (price sensitivity) and its lifecycle stage.
  Skewed amounts are log-transformed, then every feature is standardised (``SegmentScaler``, saved as JSON).
- **Tuning.** Optuna (the shared study machinery, RDB storage) tunes ``min_cluster_size``, ``min_samples``, the
  selection method and epsilon to maximise DBCV (hdbscan's density-based validity index, from the minimum spanning
  tree) under a ceiling on the noise share: a trial beyond it scores its DBCV minus the excess.
- **Stability.** The tuned model is refitted on bootstrap resamples; each predicts every account
  (``approximate_predict``) and the adjusted Rand index against the full model's labels is the stability.
- **Profiles and names.** Each segment's size, centroid and medoid in original units, value, churn risk and price
  sensitivity; its name comes from where its profile stands against the population (``name_segments``), never
  from its cluster number.
- **Migration.** The accounts of the previous month end are assigned with the same model: the transition matrix
  says how many moved from which segment to which.

HDBSCAN has no native file format: the fitted clusterer is pickled, and ``load_segments_artifact`` unpickles it only
after its SHA-256 matches the digest the registry holds (DESIGN.md).
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import Field

from training.configs import TaskConfig
from training.models import artifact_digests, verify_digests
from training.value import ID, ClvModel, summarise_purchases

if TYPE_CHECKING:
    import optuna

    from features.store import FeatureStore

log = logging.getLogger(__name__)

SEGMENTS_FILE = "segments.json"
CLUSTERER_FILE = "clusterer.pkl"
NOISE = -1
#: Derived columns every segmentation can use beside the customer view's.
VALUE_COLUMNS = ("ltv", "p_alive")
PRICE_COLUMN = "deal_discount_365d"
#: The profile figures the naming rules read.
PROFILE_FIGURES = ("ltv", "churn_risk", "price_sensitivity", "tenure_days", "orders_365d")


class SegmentsConfig(TaskConfig):
    """Training config of a segmentation (``experiments/configs/<task>.yaml``)."""

    trials: int = Field(30, ge=1, description="Completed trials the DBCV study should reach.")
    features: list[str] = Field(default_factory=lambda: [
        "recency_days", "tenure_days", "orders_365d", "value_365d", "avg_order_value_365d",
        "share_*", "assoc_top_lift", "tickets_per_order_365d", "negative_ticket_share_365d",
        "ltv", "p_alive", PRICE_COLUMN, "lifecycle_stage"], description=(
        "Columns segmented on (``share_*``: every category share); categorical ones are one-hot encoded."))
    log_features: list[str] = Field(default_factory=lambda: [
        "recency_days", "tenure_days", "orders_365d", "value_365d", "avg_order_value_365d", "ltv",
        "tickets_per_order_365d"], description="Non-negative, skewed columns taken as log(1 + x) first.")
    rfm_features: list[str] = Field(default_factory=lambda: ["recency_days", "orders_365d", "value_365d"],
                                    description="What the KMeans peer clusters on.")
    max_noise_share: float = Field(0.15, ge=0, lt=1, description="Largest share of accounts left unassigned.")
    min_cluster_size: tuple[int, int] = Field((10, 200), description="Search range of min_cluster_size.")
    min_samples: tuple[int, int] = Field((1, 50), description="Search range of min_samples.")
    max_epsilon: float = Field(1.0, ge=0, description="Largest cluster_selection_epsilon tried.")
    max_fit_accounts: int = Field(20_000, ge=100, description=(
        "Accounts HDBSCAN is tuned and fitted on at most. Beyond, a random sample of this many is clustered and "
        "every other account is placed by approximate_predict: HDBSCAN's time grows faster than n log n on "
        "several dense dimensions (experiments/benchmarks/segments.py), prediction's does not."))
    bootstrap_runs: int = Field(10, ge=2, description="Bootstrap refits for the stability (ARI) figure.")
    validity_sample: int = Field(5000, ge=100, description="Accounts the exact DBCV and silhouette are computed "
                                 "on (both are quadratic in the accounts).")
    time_unit_days: float = Field(7.0, gt=0, description="BG/NBD time unit for the value features.")
    naming_threshold: float = Field(0.5, gt=0, description="How many population standard deviations a "
                                    "segment's profile figure must stand out by for a rule to name it.")


# ------------------------------------------------------------------------------------------------ features


def expand_features(columns: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The columns a feature list names, ``share_*`` matching every column with that prefix."""
    out: list[str] = []
    for name in patterns:
        if name.endswith("*"):
            out += [c for c in columns if c.startswith(name[:-1]) and c not in out]
        elif name in columns and name not in out:
            out.append(name)
    return out


def uninformative_features(frame: pd.DataFrame, features: Sequence[str], logged: Sequence[str] = ()) -> list[dict]:
    """The features that cannot separate accounts: missing for every one, or (after the log transform) the same
    value for all up to rounding. Standardising a column whose spread is rounding error (P(alive) of 1 +- 1e-9 where
    BG/NBD finds no dropout) would blow that error up to unit variance, so they are left out.

    Returns:
        ``[{"feature", "reason"}]``.
    """
    out = []
    for c in features:
        column = frame[c]
        if column.isna().all():
            out.append({"feature": c, "reason": "missing for every account"})
        elif not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            if column.dropna().astype(str).nunique() < 2:
                out.append({"feature": c, "reason": f"the same value for every account ({column.dropna().iloc[0]})"})
        else:
            values = pd.to_numeric(column, errors="coerce").dropna().astype(float)
            if c in logged:
                values = np.log1p(values.clip(lower=0))
            if values.std(ddof=0) <= 1e-6 * max(1.0, abs(values.mean())):
                out.append({"feature": c, "reason": f"the same value for every account ({values.mean():.6g})"})
    return out


@dataclass
class SegmentScaler:
    """log(1 + x) on the skewed columns, one-hot on the categorical ones, then standardisation; as JSON."""

    numeric: list[str]
    categorical: dict[str, list[str]]
    logged: list[str]
    means: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)
    fill: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, features: Sequence[str], logged: Sequence[str]) -> SegmentScaler:
        """Learn the transformation on ``frame``."""
        numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c]) and
                   not pd.api.types.is_bool_dtype(frame[c])]
        categorical = {c: sorted(frame[c].dropna().astype(str).unique()) for c in features if c not in numeric}
        scaler = cls(numeric, categorical, [c for c in logged if c in numeric])
        raw = frame[numeric].astype(float)
        scaler.fill = {c: float(raw[c].median()) if raw[c].notna().any() else 0.0 for c in numeric}
        matrix = scaler._expanded(frame)
        scaler.means = {c: float(matrix[c].mean()) for c in matrix.columns}
        scaler.scales = {c: float(matrix[c].std(ddof=0)) or 1.0 for c in matrix.columns}
        return scaler

    def _expanded(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=frame.index)
        for c in self.numeric:
            values = pd.to_numeric(frame[c], errors="coerce").astype(float).fillna(self.fill.get(c, 0.0))
            out[c] = np.log1p(values.clip(lower=0)) if c in self.logged else values
        for c, levels in self.categorical.items():
            text = frame[c].astype(str)
            for level in levels:
                out[f"{c}={level}"] = (text == level).astype(float)
        return out

    @property
    def columns(self) -> list[str]:
        """The standardised matrix's columns."""
        return list(self.means)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """The standardised matrix of ``frame``'s rows."""
        matrix = self._expanded(frame)
        return np.column_stack([(matrix[c].to_numpy() - self.means[c]) / self.scales[c] for c in self.columns])

    def to_dict(self) -> dict:
        """Plain JSON."""
        return {"numeric": self.numeric, "categorical": self.categorical, "logged": self.logged,
                "means": self.means, "scales": self.scales, "fill": self.fill}

    @classmethod
    def from_dict(cls, data: Mapping) -> SegmentScaler:
        """Rebuild from ``to_dict``."""
        return cls(list(data["numeric"]), {k: list(v) for k, v in data["categorical"].items()},
                   list(data["logged"]), dict(data["means"]), dict(data["scales"]), dict(data["fill"]))


def value_features(purchases: pd.DataFrame, cutoff: pd.Timestamp, accounts: Sequence[str], unit_days: float
                   ) -> pd.DataFrame:
    """Each account's 12-month lifetime value and P(alive) from BG/NBD + Gamma-Gamma fitted on the purchases up to
    ``cutoff`` (accounts without a purchase: 0 and 0)."""
    summaries = summarise_purchases(purchases, cutoff, unit_days=unit_days)
    model = ClvModel.fit(summaries, cutoff, unit_days=unit_days)
    predicted = model.predict(90)
    out = pd.DataFrame(index=pd.Index([str(a) for a in accounts], name=ID))
    out["ltv"] = predicted["ltv"].reindex(out.index).fillna(0.0)
    out["p_alive"] = predicted["p_alive"].reindex(out.index).fillna(0.0)
    return out


def deal_discounts(opportunities: pd.DataFrame | None, cutoff: pd.Timestamp, days: int = 365) -> pd.Series:
    """Mean discount of each account's deals won in the ``days`` before ``cutoff`` (price sensitivity)."""
    if opportunities is None or opportunities.empty or "discount" not in opportunities.columns:
        return pd.Series(dtype=float)
    closed = pd.to_datetime(opportunities["closed_at"])
    keep = (opportunities["outcome"] == "won") & (closed <= cutoff) & (closed > cutoff - pd.Timedelta(days=days))
    won = opportunities[keep]
    return pd.to_numeric(won["discount"], errors="coerce").groupby(won[ID].astype(str)).mean()


# ------------------------------------------------------------------------------------------------ clustering


def suggest_segment_params(trial, config: SegmentsConfig, n: int) -> dict:
    """Sample HDBSCAN's parameters (``min_cluster_size`` at most a fifth of the accounts)."""
    low, high = config.min_cluster_size
    high = max(low + 1, min(high, n // 5))
    trial.suggest_categorical("family", ["hdbscan"])  # the study machinery's family parameter: one here
    return {"min_cluster_size": trial.suggest_int("min_cluster_size", low, high, log=True),
            "min_samples": trial.suggest_int("min_samples", config.min_samples[0], config.min_samples[1], log=True),
            "cluster_selection_method": trial.suggest_categorical("cluster_selection_method", ["eom", "leaf"]),
            "cluster_selection_epsilon": trial.suggest_float("cluster_selection_epsilon", 0.0, config.max_epsilon)}


def fit_hdbscan(x: np.ndarray, params: Mapping, *, threads: int, prediction_data: bool = False):
    """A fitted ``hdbscan.HDBSCAN`` with ``params``."""
    import hdbscan

    return hdbscan.HDBSCAN(**params, gen_min_span_tree=True, prediction_data=prediction_data,
                           core_dist_n_jobs=threads).fit(x)


@dataclass
class Clustering:
    """A clusterer fitted on ``fit_rows`` and every account's label, strength and soft membership."""

    clusterer: object
    labels: np.ndarray
    strength: np.ndarray
    membership: np.ndarray
    fit_rows: np.ndarray


def fit_sample(n: int, limit: int, seed: int) -> np.ndarray:
    """The rows HDBSCAN is fitted on: all ``n``, or a sorted random sample of ``limit``."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def cluster_accounts(x: np.ndarray, params: Mapping, *, threads: int, max_fit: int, seed: int) -> Clustering:
    """Fit HDBSCAN with prediction data on at most ``max_fit`` rows of ``x`` and place every row: the fitted ones
    by the model's own labels and membership vectors, the rest by ``approximate_predict`` and
    ``membership_vector``."""
    from hdbscan import all_points_membership_vectors, approximate_predict, membership_vector

    rows = fit_sample(len(x), max_fit, seed)
    clusterer = fit_hdbscan(x[rows], params, threads=threads, prediction_data=True)
    fitted = clusterer.labels_.astype(int)
    labels = np.full(len(x), NOISE, dtype=int)
    strength = np.zeros(len(x))
    labels[rows], strength[rows] = fitted, clusterer.probabilities_
    clusters = int(fitted.max() + 1)
    membership = np.zeros((len(x), clusters))
    if clusters:
        membership[rows] = np.asarray(all_points_membership_vectors(clusterer)).reshape(len(rows), clusters)
        rest = np.setdiff1d(np.arange(len(x)), rows)
        if len(rest):
            predicted, confidence = approximate_predict(clusterer, x[rest])
            labels[rest], strength[rest] = predicted, confidence
            membership[rest] = np.asarray(membership_vector(clusterer, x[rest])).reshape(len(rest), clusters)
    return Clustering(clusterer, labels, strength, membership, rows)


def dbcv(clusterer) -> float:
    """hdbscan's DBCV estimate from the minimum spanning tree (``relative_validity_``), NaN with < 2 clusters."""
    if clusterer.labels_.max() < 1:
        return float("nan")
    return float(clusterer.relative_validity_)


def _objective(x: np.ndarray, config: SegmentsConfig):
    def objective(trial: optuna.Trial) -> float:
        params = suggest_segment_params(trial, config, len(x))
        model = fit_hdbscan(x, params, threads=config.threads)
        labels = model.labels_
        noise = float((labels == NOISE).mean())
        score = dbcv(model)
        trial.set_user_attr("clusters", int(labels.max() + 1))
        trial.set_user_attr("noise_share", noise)
        trial.set_user_attr("dbcv", score)
        if not np.isfinite(score):
            return -2.0  # one cluster or none: no segmentation
        return score - max(0.0, noise - config.max_noise_share) * 2.0

    return objective


#: The first trials of a new study: hdbscan's defaults for a few hundred to a few thousand accounts.
DEFAULT_SEGMENT_TRIALS = [
    {"min_cluster_size": 25, "min_samples": 10, "cluster_selection_method": "eom", "cluster_selection_epsilon": 0.0},
    {"min_cluster_size": 50, "min_samples": 5, "cluster_selection_method": "leaf", "cluster_selection_epsilon": 0.0},
]


def bootstrap_stability(x: np.ndarray, labels: np.ndarray, params: Mapping, runs: int, seed: int, threads: int
                        ) -> list[float]:
    """ARI between the full model's labels and those of models refitted on bootstrap resamples (each predicting
    every account with ``approximate_predict``)."""
    from hdbscan import approximate_predict
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(runs):
        sample = rng.choice(len(x), size=len(x), replace=True)
        model = fit_hdbscan(x[sample], params, threads=threads, prediction_data=True)
        if model.labels_.max() < 0:
            scores.append(0.0)
            continue
        predicted, _ = approximate_predict(model, x)
        scores.append(float(adjusted_rand_score(labels, predicted)))
    return scores


def sampled_validity(x: np.ndarray, labels: np.ndarray, limit: int = 5000, seed: int = 0) -> tuple[float, float]:
    """Exact DBCV (hdbscan.validity) and silhouette on a sample of the clustered accounts (NaN, NaN with fewer than
    two segments)."""
    from hdbscan.validity import validity_index
    from sklearn.metrics import silhouette_score

    keep = np.flatnonzero(labels != NOISE)
    if len(np.unique(labels[keep])) < 2:
        return float("nan"), float("nan")
    if len(keep) > limit:
        keep = np.random.default_rng(seed).choice(keep, size=limit, replace=False)
    xs, ls = x[keep].astype(np.float64), labels[keep]
    try:
        validity = float(validity_index(xs, ls))
    except (ValueError, ZeroDivisionError, FloatingPointError):
        validity = float("nan")
    return validity, float(silhouette_score(xs, ls))


# ------------------------------------------------------------------------------------------------ profiles


def profile_segments(frame: pd.DataFrame, labels: np.ndarray, x: np.ndarray, features: Sequence[str]
                     ) -> pd.DataFrame:
    """One row per segment (noise included as -1): size, share, the centroid in original units, the medoid (the
    member nearest the segment's centre in standardised space) and the naming figures."""
    rows = []
    figures = frame.assign(churn_risk=1 - frame["p_alive"], price_sensitivity=frame.get(PRICE_COLUMN, np.nan))
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c])]
    for segment in sorted(set(labels)):
        members = np.flatnonzero(labels == segment)
        part = figures.iloc[members]
        centre = x[members].mean(axis=0)
        medoid = members[int(np.argmin(((x[members] - centre) ** 2).sum(axis=1)))]
        row = {"segment": int(segment), "size": len(members), "share": len(members) / len(labels),
               "medoid": str(frame[ID].iloc[medoid])}
        row |= {f"mean_{c}": float(pd.to_numeric(part[c], errors="coerce").mean()) for c in numeric}
        row |= {f"medoid_{c}": float(pd.to_numeric(frame[c], errors="coerce").iloc[medoid]) for c in numeric}
        row |= {c: float(pd.to_numeric(part[c], errors="coerce").mean()) for c in PROFILE_FIGURES if c in part}
        rows.append(row)
    return pd.DataFrame(rows)


#: The naming rules, in order: a name, the profile figure it reads, and the side it must stand out on.
NAMING_RULES = (
    ("at risk", "churn_risk", 1),
    ("high-value loyal", "ltv", 1),
    ("price-sensitive", "price_sensitivity", 1),
    ("new", "tenure_days", -1),
    ("occasional", "orders_365d", -1),
)


def name_segments(profiles: pd.DataFrame, population: pd.DataFrame, threshold: float = 0.5) -> dict[int, str]:
    """A name for each segment from its profile, by rule (``NAMING_RULES``, in that order).

    A rule reads one figure: the segment's mean against the population's, in population standard deviations (z).
    It names the not-yet-named segment that stands out most on its side, if that one stands out by at least
    ``threshold``; "high-value loyal" also needs a churn risk no higher than the population's. Segments left over
    are "core" (numbered when several). Noise is "unassigned".
    """
    figures = population.assign(churn_risk=1 - population["p_alive"],
                                price_sensitivity=population.get(PRICE_COLUMN, np.nan))
    z = pd.DataFrame(index=profiles.index)
    for figure in {f for _, f, _ in NAMING_RULES}:
        values = pd.to_numeric(figures.get(figure), errors="coerce")
        sd = float(values.std()) if values is not None and values.notna().sum() > 1 else 0.0
        z[figure] = (profiles[figure] - float(values.mean())) / sd if sd > 0 else 0.0
    names: dict[int, str] = {}
    real = profiles.index[profiles["segment"] != NOISE]
    for name, figure, side in NAMING_RULES:
        candidates = [i for i in real if int(profiles.loc[i, "segment"]) not in names]
        if name == "high-value loyal":
            candidates = [i for i in candidates if z.loc[i, "churn_risk"] <= 0]
        scored = [(side * z.loc[i, figure], i) for i in candidates if np.isfinite(z.loc[i, figure])]
        if not scored:
            continue
        best, i = max(scored)
        if best >= threshold:
            names[int(profiles.loc[i, "segment"])] = name
    rest = [int(profiles.loc[i, "segment"]) for i in real if int(profiles.loc[i, "segment"]) not in names]
    for k, segment in enumerate(rest, start=1):
        names[segment] = "core" if len(rest) == 1 else f"core {k}"
    if (profiles["segment"] == NOISE).any():
        names[NOISE] = "unassigned"
    return names


def migration_matrix(before: pd.Series, after: pd.Series, names: Mapping[int, str]) -> pd.DataFrame:
    """Accounts by segment at the earlier month end (rows) and the later one (columns), by name; accounts only in
    one of them count under "(not a customer)"."""
    outside = "(not a customer)"
    joined = pd.concat([before.rename("before"), after.rename("after")], axis=1)
    label = lambda s: s.map(lambda v: names.get(int(v), str(v)) if pd.notna(v) else outside)  # noqa: E731
    return pd.crosstab(label(joined["before"]), label(joined["after"]))


# ------------------------------------------------------------------------------------------------ model


@dataclass
class SegmentModel:
    """A fitted segmentation: the scaler, the clusterer, names and profiles, and the accounts' assignments."""

    scaler: SegmentScaler
    clusterer: object
    names: dict[int, str]
    profiles: pd.DataFrame
    assignments: pd.DataFrame
    as_of: pd.Timestamp
    migration: pd.DataFrame = field(default_factory=pd.DataFrame)
    params: dict = field(default_factory=dict)
    max_accounts: int = 1000

    @property
    def accounts(self) -> pd.Index:
        """The accounts assigned in training."""
        return pd.Index(self.assignments[ID])

    def assign(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Segment, name and membership strength of feature rows (``approximate_predict``)."""
        from hdbscan import approximate_predict

        labels, strengths = approximate_predict(self.clusterer, self.scaler.transform(frame))
        return pd.DataFrame({"segment": labels.astype(int), "name": [self.names.get(int(v), "unassigned")
                                                                       for v in labels],
                             "strength": np.asarray(strengths, dtype=float)}, index=frame.index)

    def save(self, folder: Path) -> dict[str, str]:
        """Write ``segments.json``, ``assignments.parquet``, ``profiles.parquet``, ``migration.parquet`` and the
        pickled clusterer; returns each file's SHA-256 (the registry's tags, checked before unpickling)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / CLUSTERER_FILE).open("wb") as handle:
            pickle.dump(self.clusterer, handle, protocol=pickle.HIGHEST_PROTOCOL)
        self.assignments.to_parquet(folder / "assignments.parquet", index=False)
        self.profiles.to_parquet(folder / "profiles.parquet", index=False)
        self.migration.reset_index(names="from").to_parquet(folder / "migration.parquet", index=False)
        meta = {"kind": "segments", "scaler": self.scaler.to_dict(), "names": {str(k): v for k, v in self.names.items()},
                "as_of": self.as_of.strftime("%Y-%m-%d"), "params": self.params, "max_accounts": self.max_accounts}
        (folder / SEGMENTS_FILE).write_text(json.dumps(meta, indent=1, default=str))
        return artifact_digests(folder)

    @classmethod
    def load(cls, folder: Path, expected: Mapping[str, str]) -> SegmentModel:
        """Rebuild a saved model; the clusterer is unpickled only after every file matches ``expected``.

        Raises:
            ValueError: without digests, or when a file does not match its digest.
        """
        folder = Path(folder)
        if not expected or CLUSTERER_FILE not in expected:
            raise ValueError(f"{folder}: a segmentation is loaded only with the SHA-256 of its {CLUSTERER_FILE} "
                             "(from the registry's tags): a pickle is never opened unchecked")
        verify_digests(folder, dict(expected))
        meta = json.loads((folder / SEGMENTS_FILE).read_text())
        with (folder / CLUSTERER_FILE).open("rb") as handle:
            clusterer = pickle.load(handle)  # noqa: S301 - its SHA-256 matched the registry's just above
        migration = pd.read_parquet(folder / "migration.parquet").set_index("from")
        return cls(SegmentScaler.from_dict(meta["scaler"]), clusterer, {int(k): v for k, v in meta["names"].items()},
                   pd.read_parquet(folder / "profiles.parquet"), pd.read_parquet(folder / "assignments.parquet"),
                   pd.Timestamp(meta["as_of"]), migration, meta.get("params", {}), meta.get("max_accounts", 1000))


def load_segments_artifact(folder: Path, expected: dict[str, str] | None = None) -> SegmentModel:
    """Load a saved segmentation after checking its files' SHA-256 (required: it holds a pickle)."""
    return SegmentModel.load(Path(folder), expected or {})


# ------------------------------------------------------------------------------------------------ training


@dataclass
class SegmentsData:
    """A segmentation's inputs: the customer view at the latest month end and the one before, with the value and
    price-sensitivity columns added."""

    current: pd.DataFrame
    previous: pd.DataFrame | None
    cutoff: pd.Timestamp
    feature_version: str
    snapshot: str
    truth: pd.DataFrame | None = None
    sensitive: list[str] = field(default_factory=list)
    unavailable: list[dict] = field(default_factory=list)


@dataclass
class SegmentsResult:
    """What training returns: the model to register, its figures, the KMeans peer's, tables and the study."""

    model: SegmentModel
    metrics: dict[str, float]
    params: dict
    kmeans: pd.Series
    bootstrap: list[float]
    study: dict = field(default_factory=dict)
    dropped: list[dict] = field(default_factory=list)


def train_segments_model(data: SegmentsData, config: SegmentsConfig, storage_url: str, study_name: str,
                         progress: Callable[[int, float], None] | None = None,
                         status: Callable[[str], None] | None = None) -> SegmentsResult:
    """Tune, fit, judge and profile a segmentation (pure: frames in, a model and figures out).

    Raises:
        ValueError: too few accounts, or no trial that finds two segments.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from training.search import open_study, progress_reporter, run_study

    say = status or (lambda message: None)
    frame = data.current.reset_index(drop=True)
    if len(frame) < 50:
        raise ValueError(f"{len(frame)} active customers at {data.cutoff:%Y-%m-%d}: a segmentation needs 50 or more")
    features = expand_features(list(frame.columns), config.features)
    features = [f for f in features if f not in config.exclude_features]
    dropped = uninformative_features(frame, features, config.log_features)
    if dropped:
        say("left out (nothing to separate accounts by): "
            + "; ".join(f"{d['feature']} ({d['reason']})" for d in dropped))
    features = [f for f in features if f not in {d["feature"] for d in dropped}]
    if not features:
        raise ValueError("no feature varies across the active customers: nothing to segment them by")
    scaler = SegmentScaler.fit(frame, features, config.log_features)
    x = scaler.transform(frame)
    rows = fit_sample(len(x), config.max_fit_accounts, config.seed)
    say(f"{len(frame)} accounts x {x.shape[1]} standardised features; DBCV study of {config.trials} trials"
        + (f" on a random {len(rows)} of them (max_fit_accounts)" if len(rows) < len(x) else ""))
    study = open_study(study_name, storage_url, config.seed, False, config.heartbeat_seconds, direction="maximize")
    ran = run_study(study, _objective(x[rows], config), ["hdbscan"], config.trials, config.timeout,
                    callback=progress_reporter(progress),
                    initial=[{"family": "hdbscan", **p} for p in config.initial_trials or DEFAULT_SEGMENT_TRIALS],
                    defaults={"hdbscan": {"family": "hdbscan", **DEFAULT_SEGMENT_TRIALS[0]}}, fixed={})
    best = study.best_trial
    if best.value <= -2.0:
        raise ValueError("no trial found two or more segments: the accounts show no density structure on these "
                         "features (see `salesml features describe customer`)")
    params = {k: best.params[k] for k in ("min_cluster_size", "min_samples", "cluster_selection_method",
                                          "cluster_selection_epsilon")}
    say(f"best trial {best.number}: {best.user_attrs.get('clusters')} segments, DBCV {best.user_attrs.get('dbcv'):.3f}, "
        f"noise {best.user_attrs.get('noise_share'):.1%}; refitting with prediction data")
    clustering = cluster_accounts(x, params, threads=config.threads, max_fit=config.max_fit_accounts,
                                  seed=config.seed)
    clusterer, labels, strength, membership = (clustering.clusterer, clustering.labels, clustering.strength,
                                               clustering.membership)
    say(f"stability: {config.bootstrap_runs} bootstrap refits")
    stability = bootstrap_stability(x[rows], labels[rows], params, config.bootstrap_runs, config.seed,
                                    config.threads)
    validity, silhouette = sampled_validity(x, labels, config.validity_sample, config.seed)
    profiles = profile_segments(frame, labels, x, features)
    names = name_segments(profiles, frame, config.naming_threshold)
    profiles["name"] = profiles["segment"].map(names)

    rfm = [c for c in config.rfm_features if c in frame.columns]
    rfm_scaler = SegmentScaler.fit(frame, rfm, [c for c in rfm if c in config.log_features])
    xr = rfm_scaler.transform(frame)
    k = max(2, int(labels.max() + 1))
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=config.seed).fit(xr)
    kmeans_labels = pd.Series(kmeans.labels_.astype(int), index=frame[ID].astype(str))
    k_validity, k_silhouette = sampled_validity(xr, kmeans.labels_, config.validity_sample, config.seed)

    assignments = pd.DataFrame({ID: frame[ID].astype(str), "segment": labels, "name": [names[v] for v in labels],
                                "strength": strength, "owner_rep_id": frame.get("owner_rep_id"),
                                "ltv": frame["ltv"].to_numpy(), "p_alive": frame["p_alive"].to_numpy()})
    if membership.size:
        assignments["membership"] = list(np.round(membership, 6))
    migration = pd.DataFrame()
    if data.previous is not None and len(data.previous):
        from hdbscan import approximate_predict

        previous, _ = approximate_predict(clusterer, scaler.transform(data.previous.reset_index(drop=True)))
        before = pd.Series(previous, index=data.previous[ID].astype(str).to_numpy())
        migration = migration_matrix(before, pd.Series(labels, index=frame[ID].astype(str).to_numpy()), names)
        assignments["previous_name"] = assignments[ID].map(before.map(lambda v: names.get(int(v), "unassigned")))
    ltv = frame["ltv"].to_numpy(dtype=float)
    bands = {"medium": float(np.quantile(ltv, 0.5)), "high": float(np.quantile(ltv, 0.8))}
    model = SegmentModel(scaler, clusterer, names, profiles, assignments, data.cutoff, migration,
                         {**params, "value_bands": bands})
    noise = float((labels == NOISE).mean())
    metrics = {"segments": float(labels.max() + 1), "noise_share": noise, "dbcv": float(best.user_attrs["dbcv"]),
               "dbcv_exact_sample": validity, "silhouette": silhouette, "bootstrap_ari_mean": float(np.mean(stability)),
               "bootstrap_ari_min": float(np.min(stability)), "accounts": float(len(frame)),
               "kmeans_segments": float(k), "kmeans_silhouette": k_silhouette, "kmeans_dbcv_exact_sample": k_validity,
               "trials_run": float(ran), "trials_in_study": float(len(study.trials)),
               "accounts_fitted": float(len(rows))}
    if data.truth is not None:
        truth = data.truth.set_index(ID)["segment"].reindex(frame[ID].astype(str))
        known = truth.notna().to_numpy()
        metrics["oracle_ari"] = float(adjusted_rand_score(truth[known], labels[known]))
        clustered = known & (labels != NOISE)
        metrics["oracle_ari_clustered"] = float(adjusted_rand_score(truth[clustered], labels[clustered]))
        metrics["kmeans_oracle_ari"] = float(adjusted_rand_score(truth[known], kmeans.labels_[known]))
    return SegmentsResult(model, metrics, {**params, "features": features}, kmeans_labels, stability,
                          {"name": study_name, "trials": len(study.trials), "best": best.number}, dropped)


def load_segments_data(store: FeatureStore, task: str, config: SegmentsConfig) -> SegmentsData:
    """The customer view at the latest month end and the one before, with each account's lifetime value, P(alive)
    and won-deal discount (a pipeline: it reads the feature store).

    Raises:
        ValueError: naming what the store lacks.
    """
    from features.pipeline import build_view, latest_event, load_purchases, materialize, snapshot_hash
    from features.views import ViewConfig, customer_columns
    from training.registry import get_task

    definition = get_task(task, store)
    as_of = config.as_of or latest_event(store, definition.data.events)
    month_ends = pd.date_range(end=pd.Timestamp(as_of), periods=2, freq="ME")
    cutoffs = [d.date() for d in month_ends if d.date() <= as_of]
    if not cutoffs:
        raise ValueError(f"no month end on or before {as_of}")
    built = build_view(store, "customer", as_of, cutoffs, config=ViewConfig(horizon_days=config.horizon_days),
                       threads=config.threads)
    materialize(store, built)
    purchases = load_purchases(store, as_of)
    opportunities = store.table("opportunities").execute() if store.has_table("opportunities") else None
    unavailable = list(built.unavailable)
    if opportunities is None or opportunities.empty:
        unavailable.append({"group": "price_sensitivity", "tables": ["opportunities"], "columns": [PRICE_COLUMN],
                            "reason": "no opportunities in the feature store (the discount of won deals)"})
    frames = []
    for cutoff in cutoffs:
        rows = built.frame[built.frame["cutoff"] == pd.Timestamp(cutoff)].copy()
        rows[ID] = rows[ID].astype(str)
        values = value_features(purchases, pd.Timestamp(cutoff), rows[ID], config.time_unit_days)
        rows = rows.join(values, on=ID)
        discount = deal_discounts(opportunities, pd.Timestamp(cutoff))
        rows[PRICE_COLUMN] = rows[ID].map(discount)
        frames.append(rows.reset_index(drop=True))
    current = frames[-1]
    previous = frames[0] if len(frames) > 1 else None
    truth = None
    if config.ground_truth and definition.oracle is not None:
        path = Path(config.ground_truth) / definition.oracle.file
        if path.is_file():
            truth = pd.read_parquet(path)[[definition.oracle.id_column, definition.oracle.column]].rename(
                columns={definition.oracle.id_column: ID, definition.oracle.column: "segment"})
            truth[ID] = truth[ID].astype(str)
    sensitive = [c.name for c in customer_columns(ViewConfig()) if c.role == "sensitive"]
    return SegmentsData(current, previous, pd.Timestamp(cutoffs[-1]), built.version, snapshot_hash(store), truth,
                        sensitive, unavailable)

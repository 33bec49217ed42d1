"""The estimator factories, and the risk model artifact in native formats.

``make_estimator`` builds the LightGBM or XGBoost classifier of risk models, used both inside the Optuna objective
and for the final model; ``make_regressor`` the regressor of demand and value models. ``RiskModel`` is the single
object that serving loads: the preprocessing, the booster in its native format (LightGBM text, XGBoost JSON) and
the calibrator, saved as plain files; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb

from training.calibration import Calibrator
from training.preprocess import TabularPreprocessor

FAMILIES = ("lightgbm", "xgboost")
BOOSTER_FILE = {"lightgbm": "booster.txt", "xgboost": "booster.json"}
MODEL_FILE = "model.json"
#: The installed release of each booster library; an artifact records the one that wrote it.
LIBRARY_VERSION = {"lightgbm": lgb.__version__, "xgboost": xgb.__version__}
#: Metadata key of a fairness-mitigated variant: {"attribute", "thresholds": {group: threshold}, ...}.
GROUP_THRESHOLDS = "group_thresholds"


def make_estimator(family: str, params: dict, *, threads: int, seed: int, n_estimators: int,
                   early_stopping_rounds: int | None = None, callbacks: list | None = None):
    """Build a classifier of ``family`` with ``params`` (the tuned hyperparameters).

    Args:
        family: ``lightgbm`` or ``xgboost``.
        params: family-specific hyperparameters.
        threads: threads the booster may use (the machine has 2 cores).
        seed: random seed.
        n_estimators: most boosting rounds.
        early_stopping_rounds: XGBoost early stopping on the first eval set (LightGBM uses a callback in fit).
        callbacks: XGBoost callbacks (e.g. Optuna's pruning callback).

    Returns:
        An unfitted scikit-learn-API classifier.
    """
    if family == "lightgbm":
        return lgb.LGBMClassifier(n_estimators=n_estimators, n_jobs=threads, random_state=seed, verbose=-1,
                                  **params)
    if family == "xgboost":
        return xgb.XGBClassifier(n_estimators=n_estimators, nthread=threads, random_state=seed, tree_method="hist",
                                 eval_metric="auc", early_stopping_rounds=early_stopping_rounds,
                                 callbacks=callbacks, **params)
    raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")


def make_regressor(family: str, booster: Mapping, *, threads: int, seed: int, monotone: Sequence[int] | None):
    """The regressor factory of demand and value models: LightGBM or XGBoost with ``booster`` parameters.

    Args:
        family: ``lightgbm`` or ``xgboost``.
        booster: the tuned parameters (``n_estimators`` included).
        threads: threads the booster may use.
        seed: random seed.
        monotone: one constraint per feature (-1, 0, 1), or ``None``.
    """
    if family == "lightgbm":
        extra = {"monotone_constraints": list(monotone), "monotone_constraints_method": "advanced"} \
            if monotone is not None and any(monotone) else {}
        return lgb.LGBMRegressor(n_jobs=threads, random_state=seed, verbose=-1, subsample_freq=1, **booster,
                                 **extra)
    if family == "xgboost":
        extra = {"monotone_constraints": tuple(monotone)} if monotone is not None and any(monotone) else {}
        return xgb.XGBRegressor(nthread=threads, random_state=seed, tree_method="hist", enable_categorical=True,
                                **booster, **extra)
    raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")


def fit_estimator(estimator, family: str, x_train: pd.DataFrame, y_train: np.ndarray,
                  eval_set: tuple[pd.DataFrame, np.ndarray] | None, categorical: list[str],
                  early_stopping_rounds: int, callbacks: list | None = None):
    """Fit an estimator from ``make_estimator``, with early stopping when an eval set is given.

    Returns:
        The fitted estimator.
    """
    if family == "lightgbm":
        fit_callbacks = list(callbacks or [])
        kwargs = {}
        if eval_set is not None:
            fit_callbacks.append(lgb.early_stopping(early_stopping_rounds, verbose=False))
            kwargs = {"eval_X": (eval_set[0],), "eval_y": (eval_set[1],), "eval_metric": "auc"}
        return estimator.fit(x_train, y_train, categorical_feature=categorical or "auto", callbacks=fit_callbacks,
                             **kwargs)
    kwargs = {"verbose": False}
    if eval_set is not None:
        kwargs["eval_set"] = [eval_set]
    return estimator.fit(x_train, y_train, **kwargs)


def best_iteration(estimator, family: str) -> int | None:
    """The boosting round early stopping kept (``None`` without early stopping)."""
    if family == "lightgbm":
        return int(estimator.best_iteration_) if getattr(estimator, "best_iteration_", 0) else None
    best = getattr(estimator, "best_iteration", None)
    return int(best) + 1 if best is not None else None


def native_booster(estimator, family: str):
    """The fitted native booster (``lightgbm.Booster`` or ``xgboost.Booster``)."""
    return estimator.booster_ if family == "lightgbm" else estimator.get_booster()


def booster_predict(booster, family: str, matrix: pd.DataFrame | np.ndarray, contributions: bool = False,
                    approximate: bool = False, threads: int = 1) -> np.ndarray:
    """Raw probabilities, or per-feature log-odds contributions plus bias (last column), from a native booster.

    A numpy ``matrix`` must hold the model's columns in order (``TabularPreprocessor.transform_records``).
    ``approximate`` asks XGBoost for its path-based (Saabas) contributions instead of exact TreeSHAP: several
    times cheaper, and they still sum to the raw log-odds; LightGBM only has exact ones. ``threads``:
    LightGBM's prediction threads and XGBoost's matrix-building threads (XGBoost predicts with the booster's own
    ``nthread``); one by default, as each serving worker has its core.
    """
    if family == "lightgbm":
        return np.asarray(booster.predict(matrix, pred_contrib=contributions, num_threads=threads))
    named = isinstance(matrix, pd.DataFrame)
    dmatrix = xgb.DMatrix(matrix, nthread=threads)
    return np.asarray(booster.predict(dmatrix, pred_contribs=contributions, approx_contribs=approximate,
                                      validate_features=named))


def alert_thresholds(model, rows: pd.DataFrame | Sequence[Mapping]) -> np.ndarray:
    """Each row's alert threshold: the model's ``alert_threshold``, or for a fairness-mitigated variant the
    threshold of the row's group (rows whose group is missing or unseen keep the model's threshold)."""
    base = float(model.metadata.get("alert_threshold", 0.5))
    spec = model.metadata.get(GROUP_THRESHOLDS)
    if not spec:
        return np.full(len(rows), base)
    attribute, table = spec["attribute"], spec["thresholds"]
    if isinstance(rows, pd.DataFrame):
        values = rows[attribute].tolist() if attribute in rows.columns else [None] * len(rows)
    else:
        values = [r.get(attribute) for r in rows]
    return np.array([base if v is None else float(table.get(str(v), base)) for v in values], dtype=float)


class RiskModel:
    """Preprocessing, native booster and calibrator: the one artifact a churn or deal-loss model is.

    Args:
        family: booster family.
        booster: fitted native booster.
        preprocessor: fitted preprocessing.
        calibrator: fitted calibrator.
        metadata: task, label, thresholds, reason templates and anything serving needs.
    """

    def __init__(self, family: str, booster, preprocessor: TabularPreprocessor, calibrator: Calibrator,
                 metadata: dict):
        self.family = family
        self.booster = booster
        self.preprocessor = preprocessor
        self.calibrator = calibrator
        self.metadata = metadata

    @property
    def features(self) -> list[str]:
        """Raw feature columns the model reads."""
        return self.preprocessor.feature_names_

    def raw_scores(self, frame: pd.DataFrame) -> np.ndarray:
        """Uncalibrated probabilities."""
        return booster_predict(self.booster, self.family, self.preprocessor.transform(frame))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities of the positive class (loss or churn)."""
        return self.calibrator.predict(self.raw_scores(frame))

    def contributions(self, frame: pd.DataFrame, threads: int = 1, matrix: pd.DataFrame | None = None
                      ) -> pd.DataFrame:
        """Per-feature contributions to the log-odds of the raw score (the booster's own SHAP values).

        ``matrix``: the frame's model matrix (``preprocessor.transform(frame)``), when the caller already has it.
        """
        matrix = self.preprocessor.transform(frame) if matrix is None else matrix
        values = booster_predict(self.booster, self.family, matrix, contributions=True, threads=threads)
        return pd.DataFrame(values[:, :-1], columns=self.features, index=frame.index)

    def explain_matrix(self, matrix: np.ndarray, approximate: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities and per-feature contributions from one booster pass over a model matrix
        (``preprocessor.transform_records``): the contributions plus the bias sum to the raw log-odds, so the
        probability needs no second prediction. ``approximate``: see ``booster_predict``."""
        values = booster_predict(self.booster, self.family, matrix, contributions=True, approximate=approximate)
        raw = 1.0 / (1.0 + np.exp(-values.sum(axis=1)))
        return self.calibrator.predict(raw), values[:, :-1]

    def save(self, folder: Path) -> dict[str, str]:
        """Write the artifact files into ``folder``.

        Returns:
            ``{file name: sha256}`` of every file written.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        booster_file = folder / BOOSTER_FILE[self.family]
        self.booster.save_model(str(booster_file))
        spec = {"family": self.family, "booster_file": booster_file.name,
                "library_version": LIBRARY_VERSION[self.family],
                "preprocessor": self.preprocessor.to_dict(), "calibrator": self.calibrator.to_dict(),
                "metadata": self.metadata}
        (folder / MODEL_FILE).write_text(json.dumps(spec, indent=1, default=_json_default))
        return artifact_digests(folder)

    @classmethod
    def load(cls, folder: Path, expected: dict[str, str] | None = None) -> RiskModel:
        """Read an artifact written by ``save``.

        Args:
            folder: the artifact folder.
            expected: SHA-256 per file recorded at registration; when given, every file must match.

        Raises:
            ValueError: when a file's digest differs from ``expected``.
            IncompatibleModelError: when the booster was written by a newer library than the one installed.
        """
        folder = Path(folder)
        if expected:
            verify_digests(folder, expected)
        spec = json.loads((folder / MODEL_FILE).read_text())
        family = spec["family"]
        if family == "stage_baseline":
            from training.baseline import StageBaseline

            return StageBaseline.from_spec(spec)  # type: ignore[return-value]
        booster_path = str(folder / spec["booster_file"])
        check_library_version(family, spec.get("library_version") or _xgboost_file_version(family, booster_path))
        if family == "lightgbm":
            booster = lgb.Booster(model_file=booster_path)
        else:
            booster = xgb.Booster()
            booster.load_model(booster_path)
            booster.set_param({"nthread": 1})
        return cls(family, booster, TabularPreprocessor.from_dict(spec["preprocessor"]),
                   Calibrator.from_dict(spec["calibrator"]), spec["metadata"])


def load_artifact(folder: Path, expected: dict[str, str] | None = None) -> RiskModel:
    """Load a risk model artifact (the registry's loader for the risk kind); see ``RiskModel.load``."""
    return RiskModel.load(folder, expected)


class IncompatibleModelError(ValueError):
    """A model file written by a newer version of its booster library than the one installed."""


def _release(version: str) -> tuple[int, int]:
    major, minor = ([int(part) for part in re.findall(r"\d+", version)] + [0, 0])[:2]
    return major, minor


def _xgboost_file_version(family: str, booster_path: str) -> str | None:
    """The XGBoost version recorded inside a JSON booster (artifacts saved before ``library_version`` existed)."""
    if family != "xgboost":
        return None
    version = json.loads(Path(booster_path).read_text()).get("version")
    return ".".join(str(v) for v in version) if isinstance(version, list) else None


def check_library_version(family: str, written_by: str | None) -> None:
    """Refuse a booster written by a newer release of its library than the installed one.

    Boosters load in the release that wrote them or a later one, not always in an earlier one, and an earlier one
    does not always fail: XGBoost 2.1 reads a model written by 3.x (whose ``base_score`` is a vector) with the
    default base score of 0.5, and so predicts other probabilities without an error. Measured on the demo's
    model, one deal scored 0.080 under 2.1.4 against 0.035 under 3.2.0, the release that trained it.

    Raises:
        IncompatibleModelError: naming both versions and what to install.
    """
    if not written_by:
        return
    installed = LIBRARY_VERSION[family]
    if _release(installed) < _release(written_by):
        raise IncompatibleModelError(
            f"the model's {family} booster was written by {family} {written_by}, and this environment has "
            f"{family} {installed}, which may read it wrongly; install {family}>={written_by} to load it")


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def artifact_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file in an artifact folder, by relative path."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def verify_digests(folder: Path, expected: dict[str, str]) -> None:
    """Check an artifact folder against recorded digests.

    Raises:
        ValueError: naming the files that differ or are missing.
    """
    actual = artifact_digests(folder)
    bad = sorted(name for name, digest in expected.items() if actual.get(name) != digest)
    if bad:
        raise ValueError(f"artifact files do not match their registered SHA-256: {', '.join(bad)}")

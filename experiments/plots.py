"""Figures logged with a tracked run (ROC, calibration, SHAP summary, forecasts, purchase calibration), as MLflow
PNG artifacts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: plots go to files, never to a screen

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def log_figure(fig: plt.Figure, name: str) -> None:
    """Log a matplotlib figure as a PNG artifact and close it."""
    mlflow.log_figure(fig, f"plots/{name}.png")
    plt.close(fig)


def roc_figure(y: np.ndarray, p: np.ndarray, auc: float, oracle: pd.DataFrame | None = None) -> plt.Figure:
    """ROC curve of the model (and of the oracle, when known)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label=f"model (AUC {auc:.3f})")
    if oracle is not None:
        fo, to, _ = roc_curve(oracle["y"], oracle["p"])
        ax.plot(fo, to, "--", label="oracle (simulator truth)")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test set")
    ax.legend(loc="lower right")
    return fig


def calibration_figure(y: np.ndarray, p: np.ndarray) -> plt.Figure:
    """Reliability diagram on the test set."""
    fig, ax = plt.subplots(figsize=(5, 5))
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="quantile")
    ax.plot(mean, frac, "o-", label="model")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Calibration, test set")
    ax.legend()
    return fig


def shap_summary_figure(contributions: pd.DataFrame, features: pd.DataFrame) -> plt.Figure:
    """SHAP summary (beeswarm) from the booster's TreeSHAP contributions."""
    import shap

    shap.summary_plot(contributions.to_numpy(), features, max_display=20, show=False, plot_size=(8, 7))
    fig = plt.gcf()
    fig.tight_layout()
    return fig


def forecast_figure(test: pd.DataFrame, series: list[str], history: pd.DataFrame | None = None) -> plt.Figure:
    """Forecast (p50 with its p10-p90 band) against actuals for a few series over the test windows."""
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 2.2 * len(series)), squeeze=False)
    for ax, uid in zip(axes[:, 0], series, strict=True):
        part = test[test["unique_id"] == uid].sort_values("ds")
        if history is not None:
            past = history[history["unique_id"] == uid].sort_values("ds").tail(52)
            ax.plot(past["ds"], past["y"], color="0.6", lw=1, label="history")
        ax.plot(part["ds"], part["y"], color="black", lw=1.2, label="actual")
        ax.plot(part["ds"], part["p50"], color="tab:blue", lw=1.2, label="p50")
        if part["p10"].notna().any():
            ax.fill_between(part["ds"], part["p10"], part["p90"], color="tab:blue", alpha=0.2, label="p10-p90")
        ax.set_title(str(uid), fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def horizon_figure(by_step: pd.DataFrame, baselines: dict[str, pd.Series] | None = None) -> plt.Figure:
    """WAPE by horizon step, the model's beside each baseline's."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(by_step["step"], by_step["wape"], marker="o", label="model")
    for name, values in (baselines or {}).items():
        ax.plot(values.index, values.to_numpy(), marker=".", lw=1, label=name)
    ax.set_xlabel("horizon step")
    ax.set_ylabel("WAPE")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def calibration_holdout_figure(table: pd.DataFrame) -> plt.Figure:
    """The BG/NBD papers' calibration/holdout plot: mean repeat purchases in the holdout, expected against actual,
    by repeat purchases in the calibration period."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["actual"], width=0.4, label="actual", color="0.35")
    ax.bar(x + 0.2, table["expected"], width=0.4, label="BG/NBD expected", color="tab:blue")
    ax.set_xticks(x, table["label"])
    ax.set_xlabel("repeat purchases in the calibration period")
    ax.set_ylabel("mean repeat purchases in the holdout")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def tracking_figure(tracking: pd.DataFrame) -> plt.Figure:
    """Cumulative repeat purchases over the holdout, BG/NBD's expectation against what happened."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(tracking["day"], tracking["actual"], color="black", label="actual")
    ax.plot(tracking["day"], tracking["expected"], "--", color="tab:blue", label="BG/NBD expected")
    ax.set_xlabel("days after the cutoff")
    ax.set_ylabel("cumulative repeat purchases")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

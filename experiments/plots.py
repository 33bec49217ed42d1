"""Figures logged with a tracked run: ROC, calibration and the SHAP summary, as MLflow PNG artifacts."""

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

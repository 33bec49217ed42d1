"""Notebooks run top to bottom (with small parameters) on a fresh SALESML_HOME."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def run_notebook(name: str, parameters: dict, timeout: int = 900) -> nbformat.NotebookNode:
    """Execute a notebook with its ``parameters`` cell replaced; returns the executed notebook."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


@pytest.mark.slow
def test_risk_experiment_notebook_runs(home):
    nb = run_notebook("risk_experiment.ipynb", {"ACCOUNTS": 1200, "MONTHS": 24, "TRIALS": 3,
                                                 "TASK": "opportunity_loss"})
    text = _outputs(nb)
    assert "test_roc_auc" in text and "feature version (lineage)" in text
    assert any(out.get("output_type") == "display_data" and "image/png" in out.get("data", {})
               for cell in nb.cells for out in cell.get("outputs", []))


@pytest.mark.slow
def test_audit_review_notebook_runs(home):
    nb = run_notebook("audit_review.ipynb", {"MODEL": "risk.opportunity_loss", "VERSION": None, "ACCOUNTS": 1200,
                                             "TRIALS": 1})
    text = _outputs(nb)
    assert "demographic-parity ratio" in text and "champion: version 1" in text

"""``salesml backtest`` from the shell: a user's mistakes get one clear line and exit code 2, never a traceback
(the backtest itself runs in tests/monitoring/test_backtest.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.test_cli_data import run


def test_backtest_mistakes_are_named_without_a_traceback(tmp_path: Path):
    bad_month = run("backtest", "--from", "2025-13", "--out", str(tmp_path / "a"), home=tmp_path, check=False)
    assert bad_month.returncode == 2 and "YYYY-MM" in bad_month.stderr and "Traceback" not in bad_month.stderr
    bad_task = run("backtest", "--from", "2025-01", "--tasks", "sales_periods", "--out", str(tmp_path / "b"),
                   "--json", home=tmp_path, check=False)
    assert bad_task.returncode == 2 and "Traceback" not in bad_task.stderr
    assert "covers opportunity_loss, customer_churn, product_demand, customer_value, customer_segments" in json.loads(bad_task.stdout.splitlines()[-1])["error"]
    bad_scenario = run("backtest", "--from", "2025-01", "--scenario", "meteor@2025-02", "--out", str(tmp_path / "c"),
                       home=tmp_path, check=False)
    assert bad_scenario.returncode == 2 and "accepted forms" in bad_scenario.stderr
    assert not (tmp_path / "c" / "features.duckdb").exists()  # nothing was simulated or stored

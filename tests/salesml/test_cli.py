"""The CLI's error handling: expected errors become one message and exit code 2, anything else stays a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer

from salesml.cli import EXPECTED_ERRORS, expected_errors, failures


def test_every_stage_error_is_recognised_once_its_module_is_loaded():
    import importlib

    for module, name in EXPECTED_ERRORS:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, Exception)
        assert cls in expected_errors(), (module, name)


def test_expected_errors_exit_2_with_a_json_message_and_others_propagate(capsys):
    from monitoring.review import GateError

    with pytest.raises(typer.Exit) as stopped, failures(as_json=True):
        raise GateError("its gate is FAIL")
    assert stopped.value.exit_code == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"error": "its gate is FAIL"}
    with pytest.raises(KeyError), failures(as_json=True):
        raise KeyError("a bug, not a user's mistake")


def test_an_invalid_option_value_is_named_with_its_value_not_a_pydantic_dump(capsys):
    from features.sources.simulator import SimulationConfig

    with pytest.raises(typer.Exit) as stopped, failures(as_json=True):
        SimulationConfig(accounts=0, months=1)
    assert stopped.value.exit_code == 2
    message = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert message == ("accounts: Input should be greater than or equal to 20 (got 0); "
                       "months: Input should be greater than or equal to 3 (got 1)")


def test_serving_refuses_a_port_in_use_before_starting_bentoml():
    import socket

    from salesml.cli import CommandError, check_port_free

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again once the listener closed


def test_piped_output_is_wide_and_tables_never_cut_a_value(monkeypatch):
    import io

    from salesml.cli import make_console, new_table

    monkeypatch.delenv("COLUMNS", raising=False)
    assert make_console(file=io.StringIO()).width == 160
    monkeypatch.setenv("COLUMNS", "50")
    narrow = make_console(file=io.StringIO())
    assert narrow.width == 50
    table = new_table("model", "version", "rows", right=("rows",))
    table.add_row("churn.opportunity_loss_with_a_long_name", "ace5722c78573903", "35256")
    narrow.print(table)
    body = [line.split("│") for line in narrow.file.getvalue().splitlines() if line.startswith("│")]
    assert "".join(cells[1].strip() for cells in body) == "churn.opportunity_loss_with_a_long_name"  # folded, whole
    assert body[0][3] == " 35256 "  # counts right-justified


def test_an_invalid_setting_is_named_by_its_variable_with_exit_2(tmp_path):
    import os

    env = {**os.environ, "SALESML_HOME": str(tmp_path), "SALESML_THREADS": "0"}
    result = subprocess.run([sys.executable, "-m", "salesml.cli", "features", "list"], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "invalid setting: SALESML_THREADS: Input should be greater than or equal to 1 (got '0')" in " ".join(
        result.stderr.split())


def test_a_registry_command_does_not_load_the_training_or_audit_stack():
    code = ("import sys, salesml.cli, monitoring.review; "
            "print(sorted(m for m in ('lightgbm', 'xgboost', 'sklearn', 'evidently', 'monitoring.gate', 'shap') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"

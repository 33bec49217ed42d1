"""The ``salesml`` command: composes each stage's commands, one module per stage.

Stages are imported inside the command functions, so ``salesml --help`` stays fast and importing this package
has no side effects beyond declaring the commands. Every command that reports results accepts ``--json`` and then
prints one JSON object as the last line of stdout; progress and messages go to stderr.

| module | commands |
|---|---|
| ``data`` | simulate, ingest, import, data tables/standards/stages/quarantine/loads |
| ``features`` | features describe/build/list/sentiment |
| ``train`` | train TASK (and the old ``train churn --task``), tasks |
| ``audit`` | audit, review list/show/approve/reject, promote, rollback, policy show |
| ``access`` | access add/list/revoke |
| ``serve`` | serve, score TASK (and the old ``score churn --task``) |
| ``loop`` | retrain, monitor, schedule, backtest |
| ``demo`` | demo |
"""

from __future__ import annotations

import importlib

from salesml.cli.common import (
    EXPECTED_ERRORS,
    CommandError,
    app,
    describe_invalid_values,
    emit,
    expected_errors,
    failures,
    make_console,
    new_table,
)
from salesml.cli.serve import check_port_free, run_server

# Each module declares its commands; `salesml --help` lists them in this order.
for _stage in ("data", "features", "train", "audit", "access", "serve", "loop", "demo"):
    importlib.import_module(f"salesml.cli.{_stage}")

__all__ = ["EXPECTED_ERRORS", "CommandError", "app", "check_port_free", "describe_invalid_values", "emit",
           "expected_errors", "failures", "make_console", "new_table", "run_server"]

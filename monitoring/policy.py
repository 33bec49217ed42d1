"""The promotion policy: which checks run for a task, their thresholds, and whether a failure blocks or asks for
review. Read from ``monitoring/policy.yaml`` (or a file given on the command line); task sections override the
default section key by key.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

DEFAULT_POLICY = Path(__file__).resolve().parent / "policy.yaml"
LEVELS = ("pass", "review", "fail")


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_policy(task: str, path: Path | None = None) -> dict:
    """The effective policy of ``task``: the default section with the task's section merged over it.

    Raises:
        ValueError: when the file is missing or malformed, or an ``on_fail`` value is not fail or review.
    """
    path = Path(path or DEFAULT_POLICY)
    if not path.is_file():
        raise ValueError(f"policy file {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    if "default" not in data:
        raise ValueError(f"{path}: the policy needs a `default` section")
    policy = _merge(data["default"], (data.get("tasks") or {}).get(task, {}))
    for name, check in policy.get("checks", {}).items():
        for key in ("on_fail", "proxy_on_fail", "prediction_drift"):
            if key in check and check[key] not in ("fail", "review"):
                raise ValueError(f"{path}: checks.{name}.{key} must be fail or review, not {check[key]!r}")
    return policy


def worst(statuses: list[str]) -> str:
    """The most severe of pass / review / fail."""
    return max(statuses or ["pass"], key=LEVELS.index)


def gate_of(statuses: list[str]) -> str:
    """The gate of a set of check statuses: FAIL if any blocks, REVIEW if any needs a look, else PASS."""
    return worst(statuses).upper()

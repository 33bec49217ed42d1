"""The training configs' shared fields (pydantic only, cheap to import: serving loads models whose configs derive
from these)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class StudyConfig(BaseModel):
    """Fields every kind's training config shares: the study, the data's as-of date and the machine."""

    model_config = ConfigDict(extra="forbid")
    task: str | None = None
    trials: int = Field(30, ge=1, description="Completed trials the study should reach.")
    timeout: float | None = Field(None, gt=0, description="Seconds of tuning in this run at most.")
    seed: int = 42
    families: list[Literal["lightgbm", "xgboost"]] = Field(default_factory=lambda: ["lightgbm", "xgboost"])
    pruning: bool = True
    max_estimators: int = Field(2000, ge=10)
    as_of: date | None = Field(None, description="Data as-of date for view tasks (default: the latest event).")
    ground_truth: str | None = Field(None, description="Simulator ground_truth folder, for the oracle figures; "
                                     "'{home}' is SALESML_HOME.")
    heartbeat_seconds: int = Field(30, ge=1, description="Optuna trial heartbeat (stale trials fail after 2x).")
    initial_trials: list[dict] = Field(default_factory=list, description="Parameter sets a new study tries first "
                                       "(Optuna parameter names, e.g. family, lgb_learning_rate).")
    threads: int = Field(default_factory=lambda: _default_threads(), ge=1,
                         description="Threads a trial may use (default: the settings', SALESML_THREADS).")
    run_tags: dict[str, str] = Field(default_factory=dict, description="Tags set on the training run and on the "
                                     "version it registers (the monthly loop names its month and the reason).")


class TaskConfig(StudyConfig):
    """The fields the kinds trained on a view's rows share (risk, value, segments): labels, features, cutoffs."""

    early_stopping_rounds: int = Field(100, ge=5)
    sensitive_as_features: bool = Field(False, description="Use sensitive attributes as features (audited anyway).")
    exclude_features: list[str] = Field(default_factory=list)
    horizon_days: int = 90
    start: date | None = Field(None, description="First cutoff month for view tasks (default: second month).")


StudyConfigT = TypeVar("StudyConfigT", bound=StudyConfig)


def with_home(config: StudyConfigT, home: Path) -> StudyConfigT:
    """The config with ``{home}`` in its paths replaced by SALESML_HOME."""
    if config.ground_truth and "{home}" in config.ground_truth:
        return config.model_copy(update={"ground_truth": config.ground_truth.format(home=home)})
    return config


def _default_threads() -> int:
    from salesml.settings import get_settings

    return get_settings().threads

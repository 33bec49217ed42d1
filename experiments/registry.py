"""Registered model names, aliases and tag keys: the one place they are spelled."""

from __future__ import annotations

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)

TAG_TASK = "salesml.task"
TAG_WINDOW = "salesml.data_window"
TAG_FEATURE_VERSION = "salesml.feature_version"
TAG_CODE_VERSION = "salesml.code_version"
TAG_TRAINER = "salesml.trainer"
TAG_SHA_PREFIX = "salesml.sha256."
TAG_GATE = "salesml.gate"
TAG_KIND = "salesml.model_kind"


def churn_model_name(task: str) -> str:
    """The registered name of a churn or deal-loss model: ``churn.<task>``."""
    return f"churn.{task}"


def sha_tag(file_name: str) -> str:
    """Tag key holding the SHA-256 of one artifact file."""
    return TAG_SHA_PREFIX + file_name

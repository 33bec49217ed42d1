"""Aliases and tag keys of registered versions: the one place they are spelled (model names: ``training.registry``)."""

from __future__ import annotations

from pathlib import PurePosixPath

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)

TAG_TASK = "salesml.task"
#: The task's kind in the task registry (risk, demand, ...).
TAG_TASK_KIND = "salesml.kind"
TAG_WINDOW = "salesml.data_window"
TAG_FEATURE_VERSION = "salesml.feature_version"
TAG_CODE_VERSION = "salesml.code_version"
TAG_TRAINER = "salesml.trainer"
TAG_SHA_PREFIX = "salesml.sha256."
TAG_GATE = "salesml.gate"
TAG_KIND = "salesml.model_kind"
TAG_REPORT = "salesml.audit.report"
TAG_AUDITED_AT = "salesml.audit.at"
TAG_DECISION = "salesml.review.decision"
TAG_DECIDED_BY = "salesml.review.by"
TAG_DECIDED_AT = "salesml.review.at"
TAG_DECISION_REASON = "salesml.review.reason"
TAG_PROMOTED_BY = "salesml.promotion.by"
TAG_PROMOTED_AT = "salesml.promotion.at"
TAG_VARIANT_OF = "salesml.variant_of"
TAG_MITIGATION = "salesml.mitigation"
#: The month (YYYY-MM) of the monthly loop that trained a version, and why it ran (scheduled, or the alert that
#: triggered it early). The month is written with the registration itself, so a rerun finds the version.
TAG_RETRAIN_MONTH = "salesml.retrain.month"
TAG_RETRAIN_REASON = "salesml.retrain.reason"
#: Written last when a version is registered: a version without it was cut short (the loop deletes those).
TAG_REGISTERED = "salesml.registered"


def sha_tag(file_name: str) -> str:
    """Tag key holding the SHA-256 of one artifact file."""
    return TAG_SHA_PREFIX + file_name


#: Run artifacts the audit reads instead of rebuilding views: the test rows with every column (the audit window),
#: a sample of the training rows (the drift reference) and the rows of the newest cutoff (recent data).
EVALUATION_FILES = {"window": PurePosixPath("evaluation/window.parquet"),
                    "reference": PurePosixPath("evaluation/reference.parquet"),
                    "recent": PurePosixPath("evaluation/recent.parquet")}

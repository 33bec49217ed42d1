"""The one settings object of salesml.

Every environment difference (where state lives, which engines to use, limits) is a field here, read from
environment variables with the prefix ``SALESML_`` (for example ``SALESML_HOME``). Nothing else in salesml
reads environment variables.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: DuckDB's memory limit unless SALESML_DUCKDB_MEMORY_LIMIT says otherwise (see that setting).
DUCKDB_MEMORY_LIMIT = "3GB"

#: Environment variables that switch off telemetry of the libraries we run. The CLI applies them before it
#: imports those libraries: a sales platform must not phone home.
TELEMETRY_OFF = {
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "true",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
}


class Settings(BaseSettings):
    """Where salesml keeps its state, which engines it talks to, and its limits.

    Every path defaults to a location under ``home``; point a field elsewhere to use an existing engine
    (for example ``SALESML_TRACKING_URI=postgresql://...`` for an MLflow server's backend store).
    """

    model_config = SettingsConfigDict(env_prefix="SALESML_", extra="ignore")

    home: Path = Field(Path(".salesml"), description="Root of all local state (SALESML_HOME).")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default sqlite under home.")
    artifact_location: str | None = Field(None, description="MLflow artifact root; default home/artifacts.")
    optuna_storage: str | None = Field(None, description="Optuna RDB storage URL; default sqlite under home.")
    feature_store: Path | None = Field(None, description="DuckDB feature store file; default home/features.duckdb.")
    feature_backend: Literal["duckdb", "spark"] = Field("duckdb", description="Engine for feature views.")
    duckdb_memory_limit: str = Field(DUCKDB_MEMORY_LIMIT, description=(
        "Memory DuckDB may hold before it spills to disk. At 3GB the 16M-event opportunity view builds in the "
        "same time as at 4GB with about 1 GB less peak memory (4.5-4.7 GB against 5.5 GB)."))
    shared_data: Path = Field(Path("../shared/data"), description="Folder of the public reference datasets.")
    require_shared_data: bool = Field(
        False, description="Tests that need shared_data fail instead of skipping when it is absent (CI)."
    )
    token: SecretStr | None = Field(None, description="Bearer token identifying the caller (SALESML_TOKEN).")
    threads: int = Field(2, ge=1, description="Threads a model or engine may use; the machine has 2 cores.")
    max_batch_rows: int = Field(10_000, ge=1, description="Most records one scoring request may carry.")
    max_text_chars: int = Field(5000, ge=1, description="Longest free text (ticket, news) accepted.")
    ingest_chunk_rows: int = Field(1_000_000, ge=1000, description="Rows validated at once during ingestion.")
    log_level: str = Field("WARNING", description="Logging level of the CLI.")
    reload_seconds: float = Field(5.0, gt=0, description="How often the service checks for a new champion.")
    serve_workers: int = Field(1, ge=1, description="Service worker processes.")
    reasons: Literal["fast", "exact"] = Field("fast", description=(
        "Reason codes when serving: fast = XGBoost's path-based (Saabas) contributions, several times cheaper and "
        "summing to the same log-odds; exact = TreeSHAP. LightGBM models always use exact TreeSHAP."))
    score_cache_rows: int = Field(500_000, ge=0, description=(
        "Score every entity of a served task's lookup when its model loads, and answer requests by id from "
        "those results, when the lookup holds at most this many entities (0: always score live)."))
    access_log: bool = Field(False, description=(
        "BentoML's access log line per HTTP request. Off by default: every scored record is already in the "
        "inference log and every refused request in the service log, and every single-record call pays for the "
        "line. Prometheus metrics are kept either way."))
    log_flush_seconds: float = Field(2.0, gt=0, description="Inference log: seconds between writes.")
    log_queue_records: int = Field(200_000, ge=1000, description="Inference log: records held in memory at most.")

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _check_memory_size(cls, value: str) -> str:
        if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value.strip()):
            raise ValueError("expected a size such as 3GB, 500MB or 2GiB")
        return value.strip()

    @property
    def tracking_uri_resolved(self) -> str:
        """The MLflow tracking URI, defaulting to a SQLite store under ``home``."""
        return self.tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_location_resolved(self) -> str:
        """The MLflow artifact root, defaulting to ``home/artifacts``."""
        return self.artifact_location or (self.home / "artifacts").resolve().as_uri()

    @property
    def optuna_storage_resolved(self) -> str:
        """The Optuna storage URL, defaulting to a SQLite file under ``home``."""
        return self.optuna_storage or f"sqlite:///{(self.home / 'optuna.db').resolve()}"

    @property
    def feature_store_path(self) -> Path:
        """The DuckDB feature store file."""
        return self.feature_store or self.home / "features.duckdb"

    def path_environment(self) -> dict[str, str]:
        """The settings that name files or databases, as ``SALESML_*`` variables with every path made absolute.

        For a child process that runs in another directory (``salesml serve`` runs BentoML in the package's own):
        relative paths, and SQLite URLs with a relative path, would otherwise point somewhere else there.
        """
        env = {"SALESML_HOME": str(self.home.resolve()), "SALESML_SHARED_DATA": str(self.shared_data.resolve())}
        if self.feature_store is not None:
            env["SALESML_FEATURE_STORE"] = str(self.feature_store.resolve())
        for name in ("tracking_uri", "artifact_location", "optuna_storage"):
            value = getattr(self, name)
            if value is not None:
                env[f"SALESML_{name.upper()}"] = absolute_location(value)
        return env

    @property
    def bentoml_home(self) -> Path:
        """BENTOML_HOME for the served models."""
        return self.home / "bentoml"

    @property
    def logs_dir(self) -> Path:
        """Inference logs (Parquet)."""
        return self.home / "logs"

    @property
    def monitoring_dir(self) -> Path:
        """Production monitoring's newest run (``state.json``, which the service's /metrics and /monitoring read)
        and its history (``history.jsonl``)."""
        return self.home / "monitoring"

    @property
    def access_file(self) -> Path:
        """Principals with hashed tokens."""
        return self.home / "access.yaml"

    @property
    def audit_log(self) -> Path:
        """Append-only log of promotion decisions."""
        return self.home / "audit.log"


def absolute_location(location: str) -> str:
    """A plain path or a SQLite URL with its relative path made absolute; any other URL unchanged."""
    if location.startswith("sqlite:///"):
        path = location.removeprefix("sqlite:///")
        if path and path != ":memory:" and not path.startswith("/"):
            return f"sqlite:///{Path(path).resolve()}"
        return location
    if not urlparse(location).scheme:
        return str(Path(location).resolve())
    return location


def get_settings(**overrides: object) -> Settings:
    """Read the settings from the environment, with optional explicit overrides.

    Args:
        **overrides: field values that take precedence over the environment.

    Returns:
        A fresh ``Settings`` object.
    """
    return Settings(**overrides)

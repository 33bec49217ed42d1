"""Shared fixtures: small simulated organisations, a fresh SALESML_HOME, and the public datasets."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from features.sources.simulator import SimulatedOrganisation, SimulationConfig, simulate_organisation
from salesml.settings import get_settings

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n 2`` (``make test``) each worker gets one of the machine's two cores: models, DuckDB and
    the processes tests start use one thread (unless SALESML_THREADS says otherwise), and OpenMP threads sleep
    rather than spin while they wait, so that the two workers never oversubscribe the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("SALESML_THREADS", "1")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def small_org() -> SimulatedOrganisation:
    """A small organisation (every table non-empty), for rule and ingestion tests."""
    return simulate_organisation(SimulationConfig(accounts=120, months=8, seed=11))


@pytest.fixture(scope="session")
def demo_org() -> SimulatedOrganisation:
    """The demo-sized organisation (2,000 accounts, 24 months), for mechanism tests."""
    return simulate_organisation(SimulationConfig(accounts=2000, months=24, seed=7))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SALESML_HOME for the test."""
    path = tmp_path / "home"
    monkeypatch.setenv("SALESML_HOME", str(path))
    return path


def _shared_data_dir() -> Path:
    path = get_settings().shared_data
    return path if path.is_absolute() else (REPO / path).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public datasets folder, with every file checked against SHA256SUMS.

    Skips with the reason when the folder is absent, unless SALESML_REQUIRE_SHARED_DATA is set (CI), in which
    case the test fails instead.
    """
    path = _shared_data_dir()
    sums = path / "SHA256SUMS"
    if not sums.is_file():
        message = f"shared datasets not found at {path} (set SALESML_SHARED_DATA)"
        if get_settings().require_shared_data:
            pytest.fail(message + "; SALESML_REQUIRE_SHARED_DATA is set, so this must not be skipped")
        pytest.skip(message)
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        file = path / name.strip()
        assert file.is_file(), f"shared dataset file {file} is missing"
        actual = hashlib.sha256(file.read_bytes()).hexdigest()
        assert actual == digest, f"shared dataset file {file} was altered (sha256 {actual}, expected {digest})"
    return path


@dataclass
class ImportedStore:
    """A public dataset loaded once and ingested into a feature store file (copy it before writing to it)."""

    imported: object  # features.sources.datasets.ImportedData
    report: object  # features.ingest.IngestReport
    path: Path

    def copy_to(self, folder: Path) -> Path:
        """A writable copy of the store file in ``folder``."""
        target = folder / self.path.name
        shutil.copyfile(self.path, target)
        return target


@pytest.fixture(scope="session")
def online_retail(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> ImportedStore:
    """UCI Online Retail, loaded and ingested as `salesml import uci_online_retail` does (once a session: the
    import, CLV and segments tests share it)."""
    from features.ingest import ingest
    from features.sources.datasets import load_dataset
    from features.store import FeatureStore

    imported = load_dataset("uci_online_retail", shared_data / "uci_online_retail")
    path = tmp_path_factory.mktemp("online_retail") / "store.duckdb"
    with FeatureStore(path) as store:
        report = ingest(imported.sources, store, as_of=None)
    return ImportedStore(imported, report, path)


def frame_hash(frame: pd.DataFrame) -> str:
    """A stable hash of a frame's content (row by row, column names included)."""
    rows = pd.util.hash_pandas_object(frame.astype("string"), index=False).to_numpy()
    return hashlib.sha256(rows.tobytes() + ",".join(frame.columns).encode()).hexdigest()


@pytest.fixture
def chromium(tmp_path: Path) -> Callable[..., str]:
    """Run Debian's headless Chromium with a throw-away profile and no background network; returns a function
    taking Chromium's arguments (e.g. ``--dump-dom URL``) and giving its stdout.

    Skips when Chromium is absent, unless SALESML_REQUIRE_SHARED_DATA is set (CI), where it fails instead.
    """
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        if get_settings().require_shared_data:
            pytest.fail("CI must install Debian's chromium (make test does)")
        pytest.skip("chromium is not installed")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}"]

    def run(*args: str) -> str:
        return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120,
                              check=True).stdout

    return run

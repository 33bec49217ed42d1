"""What the service serves: the champion of each registered task, its lookups, and hot reload.

At start every ``champion`` alias is loaded, each artifact file checked against its registered SHA-256; a
version that fails is refused and logged while the others serve. A background thread polls the aliases; when a
champion changes, the new version is loaded aside and swapped in with one reference assignment, so requests in
flight finish on the version they started with, and a failed load leaves the old version serving.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from experiments.registered import RegistryError, get_alias, load_version_model
from experiments.registry import CHAMPION, TAG_GATE, TAG_REPORT, TAG_TASK, TAG_TASK_KIND
from experiments.tracking import configure_mlflow
from features.pipeline import build_latest, snapshot_hash
from features.store import FeatureStore
from salesml.settings import Settings
from serving.predict import Hierarchy, Lookup, RequestError, load_rules, score_lookup
from training.registry import TASKS, Task, UnknownTaskError, canonical_model_name, get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """One served model version and what its records are resolved against."""

    task: str
    name: str
    version: str
    model: object
    lookup: Lookup
    gate: str
    report: str | None
    loaded_at: str
    kind: str = "risk"


@dataclass
class ServingState:
    """Served versions by task (swapped whole on reload), the rep hierarchy, and refusals."""

    served: dict[str, Served] = field(default_factory=dict)
    hierarchy: Hierarchy = field(default_factory=lambda: Hierarchy({}))
    refused: dict[str, str] = field(default_factory=dict)
    deals: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Every deal's stage changes (``opportunity_stage_history``), for the dashboard's drill-down.
    stages: pd.DataFrame = field(default_factory=pd.DataFrame)


def _owners(store: FeatureStore, data) -> dict[str, str]:
    if not data.owners or not store.has_table(data.owners):
        return {}
    pairs = store.table(data.owners).select(data.id_column, "owner_rep_id").execute().itertuples(index=False)
    return {str(k): str(v) for k, v in pairs if v is not None}


def load_lookup(store: FeatureStore, task: str, model) -> Lookup:
    """Current features by entity id, and each entity's owner, for a task (its data comes from the registry):
    the newest cutoff of the newest materialised view for a view task, the task table otherwise."""
    try:
        definition = get_task(task, store)
    except UnknownTaskError:
        return Lookup("row_id", pd.DataFrame())
    data = definition.data
    if data.source == "view":
        id_field = data.id_column
        features = pd.DataFrame(columns=[id_field, *model.features])
        name = store.latest_view_table(data.name)
        as_of = None
        if name is not None:
            table = store.table(name)
            features = table.filter(table.cutoff == table.cutoff.max()).execute()
            if len(features):
                as_of = pd.Timestamp(features["cutoff"].max()).date().isoformat()
        features = features.drop_duplicates(id_field, keep="last").set_index(id_field, drop=False)
        return Lookup(id_field, features, _owners(store, data), as_of=as_of, source=name)
    if not store.has_table(data.name):
        return Lookup(data.id_column, pd.DataFrame())
    frame = store.table(data.name).execute()
    frame[data.id_column] = frame[data.id_column].astype(str)
    return Lookup(data.id_column, frame.set_index(data.id_column, drop=False), source=data.name)


def build_live_lookup(store: FeatureStore, task: Task, snapshot: str) -> Lookup:
    """The task's view computed on demand at one cutoff, the store's latest data (the newest row of the task's
    events table), for entities a materialised view does not hold yet: a deal created after its cutoff."""
    data = task.data
    built = build_latest(store, data.name, data.events)
    features = built.frame.drop_duplicates(data.id_column, keep="last").set_index(data.id_column, drop=False)
    return Lookup(data.id_column, features, _owners(store, data), as_of=built.as_of.isoformat(),
                  source=f"live@{snapshot}")


def load_hierarchy(store: FeatureStore) -> Hierarchy:
    """Each rep's team from the store's sales_reps table."""
    if not store.has_table("sales_reps"):
        return Hierarchy({})
    reps = store.table("sales_reps").select("rep_id", "team_id").execute()
    return Hierarchy({str(r): str(t) for r, t in reps.itertuples(index=False) if t is not None})


def _champion_names(client) -> list[str]:
    return sorted(m.name for m in client.search_registered_models() if CHAMPION in (m.aliases or {}))


class ModelServer:
    """Loads champions, keeps them current, and hands out a consistent snapshot per request.

    Args:
        settings: where the registry and the feature store live.
    """

    def __init__(self, settings: Settings, gauges=None):
        self.settings = settings
        self.state = ServingState()
        # The newest monitoring run and its history, re-read when `salesml monitor` writes them; `gauges` (a
        # serving.monitoring.MonitoringGauges) is set from each run.
        self.monitoring: tuple[dict | None, list[dict]] = (None, [])
        self.gauges = gauges
        self._monitoring_stamp: tuple[int, ...] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = configure_mlflow(settings)
        self.rules = load_rules()
        self.ready = False
        self._live: dict[str, tuple[float, Lookup]] = {}
        self._live_lock = threading.Lock()
        self._store_stamp: tuple[int, ...] | None = None

    def load_all(self) -> None:
        """Load every champion (refusing versions that fail their checks) and the rep hierarchy."""
        state = ServingState()
        with FeatureStore.from_settings(self.settings, threads=1, read_only=True) as store:
            state.hierarchy = load_hierarchy(store)
            if store.has_table("opportunities"):
                state.deals = store.table("opportunities").select(
                    "opportunity_id", "owner_rep_id", "amount", "closed_at", "outcome", "stage").execute()
            if store.has_table("opportunity_stage_history"):
                state.stages = store.table("opportunity_stage_history").select(
                    "opportunity_id", "from_stage", "to_stage", "changed_at").execute()
            for name in _champion_names(self.client):
                try:
                    served = self._load(name, store)
                except (RegistryError, ValueError, OSError) as exc:
                    log.error("refusing %s: %s", name, exc)
                    state.refused[name] = str(exc)
                    continue
                state.served[served.task] = served
        self.state = state
        self.ready = True

    def _load(self, name: str, store: FeatureStore) -> Served:
        info = get_alias(self.client, name, CHAMPION)
        if info is None:
            raise RegistryError(f"{name} has no champion")
        model, info = load_version_model(self.client, name, str(info.version))
        kind = info.tags.get(TAG_TASK_KIND) or canonical_model_name(name).partition(".")[0]
        task = info.tags.get(TAG_TASK) or model.metadata.get("task")
        if kind == "risk":
            lookup = self._prepared_lookup(store, task, name, str(info.version), model)
        elif kind == "demand":
            # A demand model carries its own history: nothing to look up per request.
            lookup = Lookup("unique_id", pd.DataFrame(), source=f"{name}@{info.version}")
        else:
            # Value and segments models carry their accounts; the owners scope each account to its rep and team.
            data = get_task(task, store).data
            as_of = model.clv.as_of if kind == "value" else model.as_of
            lookup = Lookup(data.id_column, pd.DataFrame(), _owners(store, data), as_of=f"{as_of:%Y-%m-%d}",
                            source=f"{name}@{info.version}")
        return Served(task, name, str(info.version), model, lookup, info.tags.get(TAG_GATE, "pending"),
                      info.tags.get(TAG_REPORT), datetime.now(UTC).isoformat(timespec="seconds"), kind)

    def _prepared_lookup(self, store: FeatureStore, task: str, name: str, version: str, model) -> Lookup:
        lookup = load_lookup(store, task, model)
        lookup.prepare(model)
        if 0 < len(lookup.features) <= self.settings.score_cache_rows:
            try:
                score_lookup(model, lookup, task, name, version, self.rules,
                             approximate=self.settings.reasons == "fast")
            except Exception:  # noqa: BLE001 - the cache only saves time: without it requests are scored live
                log.exception("could not precompute the scores of %s's lookup; scoring requests by id live", name)
                lookup.scores = None
        return lookup

    def live_lookup(self, served: Served) -> Lookup | None:
        """Features as of the store's latest data for a view task's entities (``None`` for task tables).

        Built on the first request for an id the served lookup lacks, and kept until the store's data snapshot
        changes (looked at no more often than every ``SALESML_RELOAD_SECONDS``).

        Raises:
            RequestError: 503 when the store cannot be read now (another process is writing it).
        """
        definition = TASKS.get(served.task)
        if definition is None or definition.data.source != "view" or not definition.data.events:
            return None
        with self._live_lock:
            now = time.monotonic()
            cached = self._live.get(served.task)
            if cached is not None and now - cached[0] < self.settings.reload_seconds:
                return cached[1]
            try:
                with FeatureStore.from_settings(self.settings, threads=1, read_only=True) as store:
                    snapshot = snapshot_hash(store)
                    if cached is not None and cached[1].source == f"live@{snapshot}":
                        lookup = cached[1]
                    else:
                        lookup = build_live_lookup(store, definition, snapshot)
                        log.info("computed %s features for %d entities as of %s on demand", served.task,
                                 len(lookup.features), lookup.as_of)
            except duckdb.Error as exc:
                raise RequestError(503, "records", f"the feature store cannot be read now ({exc}); try again "
                                   "shortly") from None
            self._live[served.task] = (now, lookup)
            return lookup

    def refresh(self) -> list[str]:
        """Swap in any champion that changed since the last look; returns the names reloaded."""
        changed = []
        current = self.state
        names = _champion_names(self.client)
        wanted = {}
        for name in names:
            alias = get_alias(self.client, name, CHAMPION)
            if alias is not None:
                wanted[name] = str(alias.version)
        served_by_name = {s.name: s for s in current.served.values()}
        todo = [n for n, v in wanted.items() if served_by_name.get(n) is None or served_by_name[n].version != v]
        todo = [n for n in todo if current.refused.get(n) != wanted[n]]
        stale = self._stale_lookups(current)
        if stale:
            current = self._refresh_lookups(current, stale)
            changed += [served.name for served in stale]
        if not todo:
            return changed
        served = dict(current.served)
        refused = dict(current.refused)
        with FeatureStore.from_settings(self.settings, threads=1, read_only=True) as store:
            for name in todo:
                try:
                    new = self._load(name, store)
                except (RegistryError, ValueError, OSError) as exc:
                    log.error("keeping the served version of %s; the new champion failed to load: %s", name, exc)
                    refused[name] = wanted[name]
                    continue
                served[new.task] = new
                refused.pop(name, None)
                changed.append(name)
                log.info("now serving %s version %s", name, new.version)
        # One assignment: a request holds either the old state or the new one.
        self.state = ServingState(served, current.hierarchy, refused, current.deals, current.stages)
        return changed

    def _stale_lookups(self, state: ServingState) -> list[Served]:
        """Served view tasks whose lookup is older than the newest materialised version of their view."""
        views = {s.task: TASKS[s.task].data.name for s in state.served.values()
                 if s.kind == "risk" and s.task in TASKS and TASKS[s.task].data.source == "view"}
        if not views:
            return []
        # Open the store only once it has changed: every open is a moment in which a writer (an ingest starting)
        # would find the file locked.
        files = [self.settings.feature_store_path, Path(f"{self.settings.feature_store_path}.wal")]
        stamp = tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in files)
        if stamp == self._store_stamp:
            return []
        try:
            with FeatureStore.from_settings(self.settings, threads=1, read_only=True) as store:
                newest = {task: store.latest_view_table(view) for task, view in views.items()}
        except duckdb.Error as exc:  # a writer holds the store: look again at the next poll
            log.debug("feature store busy, lookups not checked: %s", exc)
            return []
        self._store_stamp = stamp
        return [s for s in state.served.values() if s.task in newest and newest[s.task] not in (None, s.lookup.source)]

    def _refresh_lookups(self, state: ServingState, stale: list[Served]) -> ServingState:
        """The state with the lookups of ``stale`` rebuilt from the newest views (same model versions)."""
        served = dict(state.served)
        with FeatureStore.from_settings(self.settings, threads=1, read_only=True) as store:
            for old in stale:
                lookup = self._prepared_lookup(store, old.task, old.name, old.version, old.model)
                served[old.task] = replace(old, lookup=lookup)
                log.info("%s: features now from %s (as of %s)", old.name, lookup.source, lookup.as_of)
        with self._live_lock:
            for old in stale:
                self._live.pop(old.task, None)
        # One assignment: a request holds either the old state or the new one.
        self.state = ServingState(served, state.hierarchy, state.refused, state.deals, state.stages)
        return self.state

    def refresh_monitoring(self) -> bool:
        """Re-read monitoring's state and history when they changed, and set the gauges; returns whether they
        changed."""
        from serving.monitoring import read_monitoring

        folder = self.settings.monitoring_dir
        stamp = tuple(int(f.stat().st_mtime_ns) if f.is_file() else 0
                      for f in (folder / "state.json", folder / "history.jsonl"))
        if stamp == self._monitoring_stamp:
            return False
        self.monitoring = read_monitoring(self.settings)
        self._monitoring_stamp = stamp
        if self.gauges is not None:
            self.gauges.update(self.monitoring[0])
        return True

    def start_reloading(self) -> None:
        """Poll for champion changes in a background thread."""
        def loop() -> None:
            while not self._stop.wait(self.settings.reload_seconds):
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - a failed poll must not stop the service
                    log.exception("champion refresh failed")
                try:
                    self.refresh_monitoring()
                except Exception:  # noqa: BLE001 - nor a failed read of monitoring's files
                    log.exception("monitoring refresh failed")

        self._thread = threading.Thread(target=loop, name="salesml-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reload thread."""
        self._stop.set()

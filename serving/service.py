"""The BentoML service: loads the champions, keeps them current, and mounts the salesml HTTP API.

It holds state only: scoring, scopes and errors live in ``serving.app`` and ``serving.predict``. BentoML adds
``/healthz``, ``/livez``, ``/readyz`` (ready once the champions are loaded) and Prometheus ``/metrics`` (with
monitoring's gauges: ``serving.monitoring``).
Run with ``salesml serve``.
"""

from __future__ import annotations

import gc
import logging

import bentoml

from salesml.settings import TELEMETRY_OFF, get_settings
from serving.app import create_app
from serving.inference_log import InferenceLogger
from serving.monitoring import MonitoringGauges
from serving.state import ModelServer

log = logging.getLogger(__name__)
_settings = get_settings()
_app = create_app(_settings, lambda: bentoml.get_current_service().server,
                  lambda: bentoml.get_current_service().inference_log)


@bentoml.service(name="salesml", workers=_settings.serve_workers, traffic={"timeout": 60},
                 logging={"access": {"enabled": _settings.access_log}},
                 envs=[{"name": k, "value": v} for k, v in TELEMETRY_OFF.items()])
@bentoml.asgi_app(_app, path="/")
class SalesML:
    """Serves the champion of every registered task."""

    def __init__(self) -> None:
        self.server = ModelServer(_settings, MonitoringGauges())
        self.server.load_all()
        self.server.refresh_monitoring()
        self.server.start_reloading()
        self.inference_log = InferenceLogger(_settings.logs_dir, _settings.log_flush_seconds,
                                             _settings.log_queue_records)
        # Full collections were the service's latency tail (p99 136 ms against 40 ms without, in the serving
        # benchmark): long-lived objects (models, lookups, modules) move out of the collector's reach, and full
        # collections become rare; young cycles are still collected often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 1_000)
        served = ", ".join(f"{s.name} v{s.version}" for s in self.server.state.served.values()) or "nothing"
        log.warning("salesml serving %s; refused: %s", served, self.server.state.refused or "none")

    def __is_ready__(self) -> bool:
        return self.server.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.server.stop()
        self.inference_log.close()

"""The HTTP layer: request and response schemas, bearer-token authentication, scope checks, errors as JSON.

``create_app`` builds the FastAPI application the BentoML service mounts; it reads models through a
``ModelServer`` and delegates scoring to ``serving.predict``. Client mistakes are answered 4xx with the field and
the reason, never 500.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import orjson
from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from salesml.access import AccessError, Principal, authenticate
from salesml.settings import Settings
from serving.dashboard import dashboard_data, dashboard_html, deal_detail
from serving.demand import forecast_request, log_records, series_ids
from serving.inference_log import InferenceLogger
from serving.monitoring import MONITORING_ROLES, monitoring_html, monitoring_page_data
from serving.predict import RequestError, check_role, out_of_scope, resolve_parts, score_request, unknown_ids
from serving.schemas import (
    ErrorResponse,
    ForecastRequest,
    ModelsResponse,
    ScoreRequest,
    SegmentsRequest,
    ValueRequest,
)
from serving.segments import assign_request, segments_html, segments_page_data
from serving.state import ModelServer, Served
from serving.value import predict_value_request
from training.registry import KINDS, resolve

log = logging.getLogger(__name__)
D3 = Path(__file__).resolve().parent / "web" / "node_modules" / "d3" / "dist" / "d3.min.js"
THREE = Path(__file__).resolve().parent / "web" / "node_modules" / "three"

#: Marks a route as needing a bearer token, in the OpenAPI document too. It never refuses by itself
#: (``auto_error=False``): ``principal_of`` answers 401 with the field and the reason.
BEARER = HTTPBearer(auto_error=False, description="A token from `salesml access add`.")
ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 422, 503)}


class TokenCache:
    """Verified tokens by their SHA-256, invalidated when ``access.yaml`` changes (scrypt is slow on purpose)."""

    def __init__(self, path: Path):
        self.path = path
        self.cache: dict[str, Principal] = {}
        self.stamp: float | None = None

    def principal(self, token: str) -> Principal:
        stamp = self.path.stat().st_mtime if self.path.exists() else None
        if stamp != self.stamp:
            self.cache, self.stamp = {}, stamp
        key = hashlib.sha256(token.encode()).hexdigest()
        if key not in self.cache:
            self.cache[key] = authenticate(self.path, token)
        return self.cache[key]


class _OrjsonRequest(Request):
    """A request whose JSON body is parsed by orjson (several times faster than json on 10,000-record bodies).

    orjson's decode error is a ``json.JSONDecodeError``, so malformed JSON is still FastAPI's 422; unlike json it
    also refuses the non-standard NaN and Infinity literals there.
    """

    async def json(self):  # noqa: ANN201 - Starlette's signature
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    """Routes that parse request bodies with orjson."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route_handler


def create_app(settings: Settings, server_provider: Callable[[], ModelServer],
               logger_provider: Callable[[], InferenceLogger | None] = lambda: None) -> FastAPI:
    """The FastAPI application of the service.

    Args:
        settings: limits and where state lives.
        server_provider: returns the ``ModelServer`` (the BentoML service owns it).
        logger_provider: returns the inference logger, if any.
    """
    app = FastAPI(title="salesml", version="1", description="Risk scores with reasons and next-best actions, "
                  "checked by role and data scope.", docs_url=None, redoc_url=None)
    app.router.route_class = OrjsonRoute
    tokens = TokenCache(settings.access_file)
    authenticated: set[str] = set()  # the paths of routes marked with BEARER, filled once they are declared

    def error(exc: RequestError) -> JSONResponse:
        # With BentoML's access log off, this line is the record of a refused request.
        log.warning("refused %s: %s %s%s", exc.status, exc.field, exc.reason,
                    f" (ids: {', '.join(exc.ids[:20])})" if exc.ids else "")
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        return error(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI validates the body before the endpoint runs; who is asking is still answered first, so an
        # unauthenticated caller learns nothing about the request schema.
        if request.url.path in authenticated:
            try:
                principal_of(request)
            except RequestError as denied:
                return error(denied)
        first = exc.errors()[0] if exc.errors() else {"loc": ["body"], "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body") or "body"
        log.warning("refused 422: %s %s", where, first.get("msg", "invalid"))
        return JSONResponse({"error": {"status": 422, "field": where, "reason": first.get("msg", "invalid")},
                             "detail": [{"field": ".".join(str(p) for p in e.get("loc", [])), "reason": e.get("msg")}
                                        for e in exc.errors()[:20]]}, status_code=422)

    def principal_of(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RequestError(401, "authorization", "missing bearer token")
        try:
            return tokens.principal(token.strip())
        except AccessError:
            raise RequestError(401, "authorization", "invalid token") from None

    def served_of(server: ModelServer, task: str, kind: str) -> Served:
        """The champion serving ``task``, which must be of ``kind``.

        Raises:
            RequestError: 404 naming the tasks of that kind that are served, and the endpoint of the task's own
            kind when it has another.
        """
        served = server.state.served.get(task)
        if served is None or served.kind != kind:
            known = ", ".join(sorted(t for t, s in server.state.served.items() if s.kind == kind)) or "none"
            elsewhere = (f"; task {task!r} is a {served.kind} task: use {KINDS[served.kind].serving.endpoint}"
                         if served is not None and served.kind in KINDS else "")
            raise RequestError(404, "task", f"no {kind} champion serves task {task!r} (served: {known}){elsewhere}")
        return served

    async def score(body: ScoreRequest, request: Request) -> Response:
        """Score records with the champion of a risk task (deal loss, churn, an imported binary outcome)."""
        principal = principal_of(request)
        check_role(principal.role)
        if len(body.records) > settings.max_batch_rows:
            raise RequestError(413, "records", f"{len(body.records)} records; at most {settings.max_batch_rows} per request")
        server = server_provider()
        state = server.state
        served = served_of(server, body.task, "risk")
        # Ids the served lookup lacks (a deal created after the view's cutoff) get features computed as of the
        # store's latest data; building them takes seconds once per data snapshot, off the event loop.
        live = None
        if unknown_ids(body.records, served.model, served.lookup) and hasattr(server, "live_lookup"):
            live = await run_in_threadpool(server.live_lookup, served)
        parts = resolve_parts(body.records, served.model, served.lookup, lambda: live)
        outside = sorted({i for part in parts
                          for i in out_of_scope(part.resolved.ids, principal.scope, part.lookup, state.hierarchy)})
        if outside:
            raise RequestError(403, "records", f"{principal.name} may not score these records (scope "
                               f"{principal.scope})", outside)
        results: list = [None] * len(body.records)
        rows: list = [None] * len(body.records)
        for part in parts:
            # The server's rules: those it precomputed the answers by id with.
            scored = score_request(served.model, part.resolved, part.lookup, served.task, served.name,
                                   served.version, server.rules, approximate=settings.reasons == "fast")
            for at, result, row in zip(part.indexes, scored, part.resolved.rows, strict=True):
                results[at], rows[at] = result, row
        logger = logger_provider()
        if logger is not None:
            logger.log(served.task, principal.name, served.name, served.version, rows, results,
                       served.lookup.id_field, served.kind, KINDS[served.kind].serving.prediction)
        # The results are built to the ScoreResponse schema; re-validating 10,000 of them would cost more than
        # scoring them, so they go out as they are.
        return Response(orjson.dumps({"results": results}), media_type="application/json")

    async def forecast(body: ForecastRequest, request: Request) -> Response:
        """Forecast demand with the champion of a demand task: p10 / p50 / p90 per series and period, along a
        what-if price path when one is given. Products are not customer data: every scoring role may forecast
        every series (no record scope)."""
        principal = principal_of(request)
        check_role(principal.role)
        server = server_provider()
        served = served_of(server, body.task, "demand")
        ids = series_ids([ref.model_dump() for ref in body.series])
        model = served.model
        forecasts = await run_in_threadpool(forecast_request, model, ids, body.horizon, body.prices,
                                            min(settings.max_batch_rows, model.max_series))
        logger = logger_provider()
        if logger is not None:
            inputs, results = log_records(forecasts, body.horizon, body.prices)
            logger.log(served.task, principal.name, served.name, served.version, inputs, results, "series",
                       served.kind, KINDS[served.kind].serving.prediction)
        history_end = model.history_["ds"].max().strftime("%Y-%m-%d")
        return Response(orjson.dumps({"task": served.task, "model": served.name, "version": served.version,
                                      "horizon": body.horizon, "history_end": history_end,
                                      "forecasts": forecasts}), media_type="application/json")

    async def value(body: ValueRequest, request: Request) -> Response:
        """Expected purchases, spend and value over a horizon, P(alive), lifetime value and value band per
        account, from the champion of a value task. Accounts are customer data: a rep may ask for the accounts
        they own, a manager for their team's."""
        principal = principal_of(request)
        check_role(principal.role)
        server = server_provider()
        served = served_of(server, body.task, "value")
        model = served.model
        outside = out_of_scope(list(body.accounts), principal.scope, served.lookup, server.state.hierarchy)
        if outside:
            raise RequestError(403, "accounts", f"{principal.name} may not see these accounts (scope "
                               f"{principal.scope})", outside[:50])
        results = await run_in_threadpool(predict_value_request, model, body.accounts, body.horizon_days,
                                          min(settings.max_batch_rows, model.max_accounts))
        logger = logger_provider()
        if logger is not None:
            horizon = body.horizon_days or model.horizon_days
            # The horizon starts at the model's as-of day, not at the request: monitoring labels it from there.
            as_of = f"{model.clv.as_of:%Y-%m-%d}"
            logger.log(served.task, principal.name, served.name, served.version,
                       [{"account_id": a, "horizon_days": horizon, "as_of": as_of} for a in body.accounts], results,
                       "account_id",
                       served.kind, KINDS[served.kind].serving.prediction)
        return Response(orjson.dumps({"task": served.task, "model": served.name, "version": served.version,
                                      "as_of": f"{model.clv.as_of:%Y-%m-%d}",
                                      "horizon_days": body.horizon_days or model.horizon_days,
                                      "ltv_months": model.clv.ltv_months, "discount_rate": model.clv.discount_rate,
                                      "results": results}), media_type="application/json")

    async def segments(body: SegmentsRequest, request: Request) -> Response:
        """Segment, name, membership strength, lifetime value, P(alive) and value band per account, from the
        champion of a segments task; ids it segmented, or full profile records. Scoped like risk."""
        principal = principal_of(request)
        check_role(principal.role)
        server = server_provider()
        served = served_of(server, body.task, "segments")
        model = served.model
        ids = list(body.accounts) or [str(r.get("account_id")) for r in body.records if r.get("account_id")]
        outside = out_of_scope(ids, principal.scope, served.lookup, server.state.hierarchy)
        if outside:
            raise RequestError(403, "accounts" if body.accounts else "records", f"{principal.name} may not see "
                               f"these accounts (scope {principal.scope})", outside[:50])
        worth = next((s for s in server.state.served.values() if s.kind == "value"), None)
        results = await run_in_threadpool(assign_request, model, list(body.accounts), list(body.records),
                                          min(settings.max_batch_rows, model.max_accounts),
                                          worth.model if worth is not None else None)
        logger = logger_provider()
        if logger is not None:
            inputs = [{"account_id": r["account_id"], "source": r["source"]} for r in results]
            logger.log(served.task, principal.name, served.name, served.version, inputs, results, "account_id",
                       served.kind, KINDS[served.kind].serving.prediction)
        return Response(orjson.dumps({"task": served.task, "model": served.name, "version": served.version,
                                      "value_model": worth.name if worth else None,
                                      "value_version": worth.version if worth else None,
                                      "as_of": f"{model.as_of:%Y-%m-%d}", "results": results}),
                        media_type="application/json")

    # Each kind's endpoint comes from the task registry; older paths stay as documented, deprecated aliases.
    handlers = {"risk": score, "demand": forecast, "value": value, "segments": segments}
    for kind in KINDS.values():
        handler = handlers[kind.name]
        response = resolve(kind.serving.response_schema)
        app.post(kind.serving.endpoint, response_model=response, responses=ERRORS,
                 dependencies=[Security(BEARER)], name=f"{kind.name}_score")(handler)
        for path in kind.serving.legacy_endpoints:
            app.post(path, response_model=response, responses=ERRORS, dependencies=[Security(BEARER)],
                     deprecated=True, name=f"{kind.name}_score_{path.strip('/').replace('/', '_')}",
                     description=f"The old path of {kind.serving.endpoint}, kept as an alias.")(handler)

    @app.get("/models", response_model=ModelsResponse)
    def models() -> dict:
        """Served versions, their gate and audit report."""
        state = server_provider().state
        return {"models": [{"task": s.task, "model": s.name, "version": s.version, "gate": s.gate,
                            "audit_report": s.report, "audit_url": f"/models/{s.task}/audit" if s.report else None,
                            "loaded_at": s.loaded_at} for s in state.served.values()],
                "refused": state.refused}

    @app.get("/models/{task}/audit", response_class=HTMLResponse, responses={404: {"model": ErrorResponse}})
    def audit_report(task: str) -> FileResponse:
        """The audit report (self-contained HTML) of the version serving a task."""
        served = server_provider().state.served.get(task)
        if served is None or not served.report or not Path(served.report).is_file():
            raise RequestError(404, "task", f"no audit report for a served model of task {task!r}")
        return FileResponse(served.report, media_type="text/html")

    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> str:
        """The pipeline dashboard page (the data comes from /dashboard/data with the viewer's token)."""
        return dashboard_html()

    @app.get("/dashboard/data", responses=ERRORS, dependencies=[Security(BEARER)])
    def data(request: Request) -> dict:
        """Pipeline figures within the caller's scope (executives and managers; reps see their own deals)."""
        principal = principal_of(request)
        check_role(principal.role)
        server = server_provider()
        return dashboard_data(settings, server.state, principal, server.rules,
                              getattr(server, "monitoring", (None, []))[0])

    @app.get("/dashboard/deals/{opportunity_id}", responses=ERRORS, dependencies=[Security(BEARER)])
    def deal(opportunity_id: str, request: Request) -> dict:
        """One deal's drill-down: its score now with reasons and next-best actions, its score history and its
        stage history (within the caller's scope)."""
        principal = principal_of(request)
        check_role(principal.role)
        server = server_provider()
        return deal_detail(settings, server.state, principal, server.rules, opportunity_id)

    @app.get("/monitoring", response_class=HTMLResponse, include_in_schema=False)
    def monitoring_page() -> str:
        """The monitoring page (the data comes from /monitoring/data with the viewer's token)."""
        return monitoring_html()

    @app.get("/monitoring/data", responses=ERRORS, dependencies=[Security(BEARER)])
    def monitoring_data(request: Request) -> dict:
        """Each champion's live metric month by month with its training-time value, its drifted share and its
        alerts, from the newest `salesml monitor` run (managers, executives and validators)."""
        principal = principal_of(request)
        if principal.role not in MONITORING_ROLES:
            raise RequestError(403, "authorization", f"role {principal.role} may not see model monitoring (roles: "
                               f"{', '.join(MONITORING_ROLES)})")
        state, history = getattr(server_provider(), "monitoring", (None, []))
        return monitoring_page_data(state, history)

    @app.get("/segments", response_class=HTMLResponse, include_in_schema=False)
    def segments_page() -> str:
        """The segments page (the data comes from /segments/data with the viewer's token)."""
        return segments_html()

    @app.get("/segments/data", responses=ERRORS, dependencies=[Security(BEARER)])
    def segments_data(request: Request) -> dict:
        """Bubbles, profiles and migration of the segments champion, over the accounts in the caller's scope."""
        principal = principal_of(request)
        check_role(principal.role)
        server = server_provider()
        served = next((s for s in server.state.served.values() if s.kind == "segments"), None)
        if served is None:
            raise RequestError(404, "task", "no segments champion is served: train, audit and promote one")
        return {"task": served.task, "model": served.name, "version": served.version,
                **segments_page_data(served.model, server.state.hierarchy.owners_in(principal.scope))}

    @app.get("/static/d3.min.js", include_in_schema=False)
    def d3() -> FileResponse:
        if not D3.is_file():
            raise RequestError(404, "path", "D3 is not installed: run `make install` (npm ci in serving/web)")
        return FileResponse(D3, media_type="text/javascript")

    @app.get("/static/three/{path:path}", include_in_schema=False)
    def three(path: str) -> FileResponse:
        """three.js modules (the build and its examples' controls), from the npm registry at build time."""
        root = THREE.resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root) or target.suffix != ".js" or not target.is_file():
            raise RequestError(404, "path", f"no three.js module {path!r}" if root.is_dir() else
                               "three.js is not installed: run `make install` (npm ci in serving/web)")
        return FileResponse(target, media_type="text/javascript")

    authenticated.update(route.path for route in app.routes if isinstance(route, APIRoute)
                         and any(d.dependency is BEARER for d in route.dependencies))
    return app

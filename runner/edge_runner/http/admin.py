"""The admin plane (default port 9090): health, readiness, metrics, introspection.

Never routed to functions.  ``/readyz`` turns ready after the first complete
sync of functions and routes and unready as soon as shutdown begins, so a load
balancer stops sending traffic before in-flight requests are drained.
"""

from __future__ import annotations

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_runner.invoke.catalog import Catalog
from edge_runner.metrics import RunnerMetrics


class Lifecycle:
    """Shared flags: set by the server, read by the probes."""

    def __init__(self) -> None:
        self.shutting_down = False


def build_admin_app(catalog: Catalog, metrics: RunnerMetrics, lifecycle: Lifecycle) -> FastAPI:
    app = FastAPI(title="edge-runner admin", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if lifecycle.shutting_down:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        if not catalog.synced:
            return JSONResponse({"status": "waiting for the first sync"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/functions")
    async def functions() -> dict[str, object]:
        return catalog.describe()

    return app

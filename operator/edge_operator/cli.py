"""``edge-operator`` command line: runs the kopf operator for one or more namespaces.

The options are the fields of :class:`edge_operator.config.OperatorConfig`.
"""

from __future__ import annotations

import asyncio
import sys

import kopf
from prometheus_client import start_http_server

from edge_api import logs, settings
from edge_api.k8s import async_client, load_config
from edge_operator.config import OperatorConfig
from edge_operator.handlers import Context, registry
from edge_operator.metrics import OperatorMetrics
from edge_operator.propagation import PropagationTracker
from edge_operator.status import FIELD_MANAGER


async def run(namespaces: list[str], *, metrics: OperatorMetrics, config: OperatorConfig,
              health_port: int, stop_flag: asyncio.Event | None = None) -> None:
    kube = async_client(field_manager=FIELD_MANAGER)
    try:
        await kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=False,
            namespaces=namespaces,
            liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
            memo=kopf.Memo(context=Context(
                kube=kube, config=config, metrics=metrics,
                tracker=PropagationTracker(kube=kube, namespaces=namespaces, metrics=metrics,
                                           interval=config.rollout_interval),
                namespaces=namespaces,
            )),
            stop_flag=stop_flag,
        )
    finally:
        await kube.close()


def main(argv: list[str] | None = None) -> int:
    config = settings.parse(OperatorConfig, sys.argv[1:] if argv is None else argv)
    if isinstance(config, str):
        print(f"edge-operator: error: {config}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    namespaces = config.namespace or [load_config().namespace]
    metrics = OperatorMetrics()
    if config.metrics_port:
        start_http_server(config.metrics_port, registry=metrics.registry)
    asyncio.run(run(namespaces, metrics=metrics, config=config, health_port=config.health_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

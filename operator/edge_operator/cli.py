"""``edge-operator`` command line: runs the kopf operator for one or more namespaces."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import kopf
from prometheus_client import start_http_server

from edge_api import logs
from edge_api.kube import KubeClient, load_config
from edge_operator.config import OperatorConfig
from edge_operator.handlers import Context, registry
from edge_operator.metrics import OperatorMetrics
from edge_operator.propagation import PropagationTracker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-operator",
        description="Reconcile EdgeFunction and EdgeRoute objects into runner ConfigMaps.",
    )
    parser.add_argument("--namespace", action="append", dest="namespaces",
                        help="namespace to watch (repeatable; default: POD_NAMESPACE or the"
                        " kubeconfig's namespace)")
    parser.add_argument("--metrics-port", type=int, default=8000,
                        help="port of the Prometheus /metrics endpoint (0 = off)")
    parser.add_argument("--health-port", type=int, default=8081,
                        help="port of kopf's liveness endpoint /healthz (0 = off)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="json", choices=["json", "text"])
    return parser


async def run(namespaces: list[str], *, metrics: OperatorMetrics, config: OperatorConfig,
              health_port: int, stop_flag: asyncio.Event | None = None) -> None:
    kube = KubeClient(load_config())
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
            )),
            stop_flag=stop_flag,
        )
    finally:
        await kube.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    namespaces = args.namespaces or [os.environ.get("POD_NAMESPACE") or load_config().namespace]
    metrics = OperatorMetrics()
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=metrics.registry)
    config = OperatorConfig()
    asyncio.run(run(namespaces, metrics=metrics, config=config, health_port=args.health_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

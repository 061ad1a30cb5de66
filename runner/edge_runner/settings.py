"""Every setting of ``edge-runner serve``, declared once.

:class:`RunnerSettings` is the one settings model of the runner process: each
field is a command-line flag (``max_wait`` -> ``--max-wait``) and an
environment variable (``EDGE_RUNNER_MAX_WAIT``); a flag wins over the variable,
the variable over the default.  Descriptions here are the ``--help`` text, and
docs/cli.md lists the same names (a unit test keeps the two in step).  The CLI
(:mod:`edge_runner.cli`) parses them, :mod:`edge_runner.server` and the parts
it builds read them; nothing else in the runner reads the environment, except
the Kubernetes client's own in-cluster and KUBECONFIG discovery.  How flags,
variables and the downward API's ``POD_NAMESPACE``/``POD_NAME`` combine, and why
an unknown ``EDGE_RUNNER_*`` variable is an error: :mod:`edge_api.settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import SettingsConfigDict

from edge_api.settings import BASE_CONFIG, ProcessSettings
from edge_api.units import parse_quantity
from edge_runner.host.cpusched import MIN_SLICE

ENV_PREFIX = "EDGE_RUNNER_"


def _quantity(value: Any) -> Any:
    return parse_quantity(value.strip()) if isinstance(value, str) else value


#: Bytes, as an integer or a Kubernetes quantity ("512Mi").
Quantity = Annotated[int, BeforeValidator(_quantity)]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edge-runner/modules`` (``~/.cache`` without XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-runner" / "modules"


class RunnerSettings(ProcessSettings):
    """Serve WebAssembly HTTP functions: standalone with --manifests, else cluster mode.

    Every option is also an environment variable EDGE_RUNNER_<NAME> (e.g.
    EDGE_RUNNER_MAX_WAIT); flags win.
    """

    model_config = SettingsConfigDict(
        **BASE_CONFIG, env_prefix=ENV_PREFIX, cli_prog_name="edge-runner serve"
    )
    downward: ClassVar[Mapping[str, str]] = {"POD_NAMESPACE": "namespace",
                                             "POD_NAME": "pod_name"}

    # -- what to serve and where ---------------------------------------------------
    manifests: Path | None = Field(
        None, description="folder of EdgeFunction/EdgeRoute YAML (standalone mode); unset:"
        " cluster mode, serving what the operator publishes")
    namespace: str | None = Field(
        None, description="namespace to watch in cluster mode (default: $POD_NAMESPACE, else the"
        " kubeconfig's)")
    pod_name: str | None = Field(
        None, description="this runner's name in its Lease (default: $POD_NAME, else host name and"
        " process id)")
    host: str = Field("0.0.0.0", description="data plane bind address")
    port: int = Field(8080, ge=0, le=65535, description="data plane port")
    admin_host: str = Field("0.0.0.0", description="admin plane bind address")
    admin_port: int = Field(9090, ge=0, le=65535, description="admin plane port")

    # -- concurrency and queueing --------------------------------------------------
    max_concurrency: int | None = Field(
        None, ge=1, description="guest invocations running at once on the shared lane's worker"
        " threads (default: twice the CPUs the process may use: affinity, capped by the cgroup"
        " CPU quota; docs/scheduling.md has the measurements)")
    max_waiting: int = Field(64, ge=0, description="requests queued per function when all its"
                             " instances are busy")
    max_queued: int = Field(256, ge=0, description="requests queued runner-wide for a worker"
                            " thread")
    max_wait: float = Field(1.0, gt=0, description="seconds a queued request waits for an"
                            " instance and a thread before 503")
    max_connections: int = Field(1000, ge=1, description="open connections (plus running"
                                 " requests) per port before uvicorn answers 503")
    inline_fuel: int = Field(1_000_000, ge=0, description="fuel a call may use on the event"
                             " loop before it moves to a worker thread (0 = always threads)")
    instance_max_requests: int = Field(10_000, ge=0, description="requests after which an"
                                       " instance is recycled (0 = never); bounds what a"
                                       " slowly leaking guest accumulates")
    instance_renewal: bool = Field(True, description="for functions with pool.reuse false,"
                                   " renew an instance after each request to the state it"
                                   " was instantiated in, where its module allows it, instead"
                                   " of creating one per request (docs/abi.md); false: always"
                                   " a new instance")

    # -- sharing worker threads between functions (docs/scheduling.md) -------------
    max_thread_share: float = Field(0.75, gt=0, le=1, description="share of the shared"
                                    " lane's worker threads one function may hold at once"
                                    " (rounded up; at least one); in quarantine a function"
                                    " runs one call at a time")
    quarantine_threads: int | None = Field(
        None, ge=0, description="worker threads of the quarantine lane, where functions that"
        " keep failing or computing long run at the lowest CPU priority (default: four per"
        " CPU the process may use; 0 = no quarantine)")
    quarantine_strikes: float = Field(3.0, ge=0, description="strikes that quarantine a"
                                      " function: a failed call is one, a call computing"
                                      " longer than --heavy-call one per --heavy-call; each"
                                      " other call takes one off, and at zero a quarantined"
                                      " function is released (0 = never quarantine)")
    heavy_call: float = Field(0.02, gt=0, description="CPU seconds of one call on a worker"
                              " thread beyond which it counts as strikes")

    # -- CPU scheduling of the runner's threads ------------------------------------
    worker_nice: int = Field(19, ge=0, le=19, description="nice increment of guest worker"
                             " threads (0 = same priority as the event loop)")
    cpu_slice: float = Field(MIN_SLICE, ge=0, description="time slice in seconds the runner's"
                             " threads ask the scheduler for: how long a guest may keep a CPU"
                             " from the event loop (Linux 6.12+; 0 = kernel default)")

    # -- memory budget ---------------------------------------------------------------
    memory_limit: Quantity | None = Field(
        None, gt=0, description="memory limit to budget against (bytes or a quantity such as"
        " 512Mi; default: the cgroup's; the chart sets the container limit)")
    memory_default: Quantity = Field(2 * 2**30, gt=0, description="memory limit when there is"
                                     " no cgroup limit (a laptop)")
    memory_fraction: float = Field(0.8, gt=0, le=1, description="share of the memory limit"
                                   " that the runner's baseline and guest reservations may use;"
                                   " the rest is slack for what the budget does not count")
    cgroup_root: Path = Field(Path("/sys/fs/cgroup"), description="cgroup filesystem root")

    # -- hostile clients ---------------------------------------------------------------
    max_head_bytes: int = Field(32 * 1024, ge=1024, description="request line + headers,"
                                " bytes (over: 431); 32 KiB is the common proxy default")
    max_headers: int = Field(100, ge=1, description="request header fields (over: 431)")
    head_timeout: float = Field(10.0, gt=0, description="seconds a client has to send a"
                                " request head (slowloris: 408)")
    body_timeout: float = Field(30.0, gt=0, description="seconds a client has to send a"
                                " request body once its head is complete (408)")
    keep_alive: float = Field(5.0, gt=0, description="seconds an idle keep-alive connection"
                              " stays open")

    # -- lifecycle -----------------------------------------------------------------------
    drain_delay: float = Field(0.0, ge=0, description="seconds between failing /readyz and"
                               " closing the data port on SIGTERM (time for endpoints to be"
                               " removed from Services)")
    grace: float = Field(25.0, ge=0, description="seconds in-flight requests get to finish"
                         " on shutdown")
    idle_sweep: float = Field(1.0, gt=0, description="seconds between sweeps for instances"
                              " idle longer than their pool.idleTimeout")
    lease_seconds: int = Field(15, ge=1, description="duration of this runner's Lease in"
                               " cluster mode; renewed every third of it")
    cache_dir: Path | None = Field(
        default_factory=default_cache_dir, description="compiled-module disk cache (default:"
        " $XDG_CACHE_HOME/edge-runner/modules); an empty value disables it")

    # -- logs ------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="'warning' turns the per-request access log off")
    log_format: Literal["json", "text"] = Field("json", description="log line format")
    access_log_interval: float = Field(0.2, gt=0, description="seconds between batched writes"
                                       " of access lines (sooner when 512 wait; all are"
                                       " written on shutdown)")

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _empty_disables(cls, value: Any) -> Any:
        return None if isinstance(value, str | Path) and str(value) in ("", ".") else value


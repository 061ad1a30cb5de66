"""End to end on kind: the README quickstart, step by step.

Runs only where `kind` and a working Docker engine exist (and the internet is
reachable for ingress-nginx's manifest); elsewhere it is reported as skipped
with the reason. It creates a cluster from kind-config.yaml (named
edge-runner-e2e; host ports 80 and 443 must be free), installs ingress-nginx,
builds and loads both images, installs the chart with an Ingress, applies the
hello-world sample and calls it through the Ingress with a Host header.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.helm import REPO_DIR, Helm
from support.k8s import find_bin_dir, wait_until

pytestmark: list[pytest.MarkDecorator] = [pytest.mark.slow]

CLUSTER = "edge-runner-e2e"
NAMESPACE = "edge-system"
HOST = "hello.example.com"
INGRESS_NGINX = os.environ.get(
    "EDGE_INGRESS_NGINX_MANIFEST",
    "https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.12.1"
    "/deploy/static/provider/kind/deploy.yaml",
)


def why_not_runnable() -> str | None:
    """None if kind and Docker work here, else the reason to skip."""
    if shutil.which("kind") is None:
        return "kind is not installed (no `kind` on PATH)"
    if shutil.which("docker") is None:
        return "Docker is not installed (no `docker` on PATH)"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "`docker info` timed out: no working Docker engine"
    if info.returncode != 0:
        first = (info.stderr.strip().splitlines() or ["no output"])[0]
        return f"no working Docker engine (`docker info`: {first})"
    return None


SKIP_REASON = why_not_runnable()
if SKIP_REASON:
    pytestmark.append(pytest.mark.skip(reason=SKIP_REASON))


def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A kind cluster from kind-config.yaml; the env (KUBECONFIG, PATH) to reach it."""
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    kubectl = shutil.which("kubectl") or str(find_bin_dir() / "kubectl")
    env = dict(os.environ)
    env["KUBECONFIG"] = str(kubeconfig)
    env["PATH"] = f"{Path(kubectl).parent}{os.pathsep}{env.get('PATH', '')}"
    run(
        "kind", "create", "cluster", "--config", str(REPO_DIR / "kind-config.yaml"),
        "--name", CLUSTER, "--kubeconfig", str(kubeconfig), "--wait", "180s",
    )  # fmt: skip
    try:
        yield env
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], check=False)


def test_quickstart_hello_world_through_the_ingress(
    kind_cluster: dict[str, str], helm: Helm, hello_wasm: Path
) -> None:
    env = kind_cluster
    # 2. ingress-nginx on the ingress-ready node.
    run("kubectl", "apply", "-f", INGRESS_NGINX, env=env)
    run(
        "kubectl", "-n", "ingress-nginx", "wait", "--for=condition=Ready", "pod",
        "-l", "app.kubernetes.io/component=controller", "--timeout=300s", env=env,
    )  # fmt: skip
    # 3. The images, built here and loaded into the node.
    tag = f"e2e-{uuid.uuid4().hex[:8]}"
    images = []
    for component in ("runner", "operator"):
        image = f"ghcr.io/edge-runner/{component}:{tag}"
        run(
            "docker", "build", "-f", str(REPO_DIR / "images" / f"{component}.Dockerfile"),
            "-t", image, str(REPO_DIR), timeout=1800,
        )  # fmt: skip
        images.append(image)
    run("kind", "load", "docker-image", "--name", CLUSTER, *images)
    # 4. The chart, with an Ingress for HOST.
    helm.run(
        "install", "edge-runner", str(helm.chart), "--namespace", NAMESPACE,
        "--create-namespace", "--wait", "--timeout", "5m",
        "--set", f"runner.image.tag={tag}", "--set", "runner.image.pullPolicy=Never",
        "--set", f"operator.image.tag={tag}", "--set", "operator.image.pullPolicy=Never",
        "--set", "ingress.enabled=true", "--set", "ingress.className=nginx",
        "--set", f"ingress.hosts={{{HOST}}}",
        env={"KUBECONFIG": env["KUBECONFIG"]}, timeout=600,
    )  # fmt: skip
    # 5. hello-world (the module was built by the hello_wasm fixture).
    assert hello_wasm.is_file()
    run("kubectl", "-n", NAMESPACE, "apply", "-k", str(REPO_DIR / "functions" / "hello-world"),
        env=env)  # fmt: skip
    run(
        "kubectl", "-n", NAMESPACE, "wait", "--for=condition=Ready",
        "edgefunction/hello-world", "--timeout=180s", env=env,
    )  # fmt: skip

    # 6. Through the Ingress on localhost, as a user would with curl.
    def hello() -> httpx.Response | None:
        try:
            response = httpx.get("http://localhost/hello", headers={"Host": HOST}, timeout=5)
        except httpx.HTTPError:
            return None
        return response if response.status_code == 200 else None

    response = wait_until(hello, timeout=120, interval=1, what="hello-world via the Ingress")
    assert response is not None
    assert response.text
    assert response.headers.get("x-request-id")

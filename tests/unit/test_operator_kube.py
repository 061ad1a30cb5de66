"""The operator's (and the runner's) Kubernetes client set-up, in process (edge_api.k8s):
kubeconfig merging as kubectl does it, credentials, and Retry-After, against a real
loopback HTTP server.  Talking to the API server is tested in tests/k8s."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import ssl
import stat
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from lightkube import ConfigError

from edge_api.k8s import (
    RetryAfterTransport,
    authorization,
    in_cluster_config,
    kubeconfig_paths,
    load_config,
    merge_kubeconfigs,
    retry_after,
    ssl_context,
)
from support.k8s import _write_pki


def config(clusters: dict[str, Any], users: dict[str, Any], contexts: dict[str, Any],
           current: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [{"name": n, "context": c} for n, c in contexts.items()],
    }
    if current:
        document["current-context"] = current
    return document


def test_kubeconfig_paths_split_like_kubectl() -> None:
    assert kubeconfig_paths(os.pathsep.join(["/a", "", "/b "])) == [Path("/a"), Path("/b ")]
    assert kubeconfig_paths("~/x")[0] == Path.home() / "x"


def test_first_definition_and_first_current_context_win() -> None:
    first = config({"c": {"server": "https://one"}}, {}, {"ctx": {"cluster": "c"}}, "ctx")
    second = config({"c": {"server": "https://two"}, "d": {"server": "https://d"}},
                    {"u": {"token": "t"}}, {"other": {"cluster": "d", "user": "u"}}, "other")
    merged = merge_kubeconfigs([(Path("/k/1"), first), (Path("/k/2"), second), (Path("/k/3"),
                                                                                  None)])
    assert merged["current-context"] == "ctx"
    assert [c["name"] for c in merged["clusters"]] == ["c", "d"]
    assert merged["clusters"][0]["cluster"]["server"] == "https://one"
    assert [u["name"] for u in merged["users"]] == ["u"]
    assert [c["name"] for c in merged["contexts"]] == ["ctx", "other"]


def test_relative_files_resolve_against_their_own_kubeconfig() -> None:
    document = config({"c": {"server": "https://s", "certificate-authority": "ca.crt"}},
                      {"u": {"client-certificate": "sub/u.crt", "client-key": "/abs/u.key",
                             "tokenFile": "token",
                             "exec": {"command": "./bin/plugin", "args": ["x"]}},
                       "path": {"exec": {"command": "aws"}}},
                      {"x": {"cluster": "c", "user": "u"}})
    merged = merge_kubeconfigs([(Path("/etc/kube/config"), document)])
    assert merged["clusters"][0]["cluster"]["certificate-authority"] == "/etc/kube/ca.crt"
    user = merged["users"][0]["user"]
    assert user["client-certificate"] == "/etc/kube/sub/u.crt"
    assert user["client-key"] == "/abs/u.key"
    assert user["tokenFile"] == "/etc/kube/token"
    assert user["exec"]["command"] == "/etc/kube/bin/plugin"
    assert merged["users"][1]["user"]["exec"]["command"] == "aws"  # looked up on PATH


def test_exec_plugins_get_non_interactive_exec_info() -> None:
    document = config({}, {"v1": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                           "command": "p"}},
                           "beta": {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                             "command": "p", "env": [{"name": "A",
                                                                      "value": "1"}]}}}, {})
    users = {u["name"]: u["user"]["exec"] for u in
             merge_kubeconfigs([(Path("/k"), document)])["users"]}
    info = json.loads(users["v1"]["env"][-1]["value"])
    assert users["v1"]["env"][-1]["name"] == "KUBERNETES_EXEC_INFO"
    assert info == {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                    "spec": {"interactive": False}}
    # lightkube runs v1 plugins under the v1beta1 name (same ExecCredential token output).
    assert users["v1"]["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert [e["name"] for e in users["beta"]["env"]] == ["A", "KUBERNETES_EXEC_INFO"]


def write(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


def test_load_config_merges_every_kubeconfig_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first = write(tmp_path / "a", {"current-context": "ctx"})
    second = write(tmp_path / "b" / "config", config(
        {"c": {"server": "https://api.example:6443"}}, {"u": {"token": "secret"}},
        {"ctx": {"cluster": "c", "user": "u", "namespace": "team"}}))
    listing = os.pathsep.join([str(tmp_path / "absent"), str(first), str(second)])
    monkeypatch.setenv("KUBECONFIG", listing)
    single = load_config()
    assert single.cluster.server == "https://api.example:6443"
    assert single.namespace == "team"
    assert single.user is not None and single.user.token == "secret"
    assert load_config(str(second), context="ctx").context_name == "ctx"


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no kubeconfig file"):
        load_config(str(tmp_path / "absent"))
    empty = write(tmp_path / "empty", {"apiVersion": "v1"})
    with pytest.raises(ConfigError, match="no context"):
        load_config(str(empty))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(write(tmp_path / "k", config({"c": {}}, {}, {"x": {"cluster": "c"}}))),
                    context="y")


def test_without_current_context_the_first_is_used(tmp_path: Path) -> None:
    path = write(tmp_path / "k", config({"c": {"server": "https://s"}}, {},
                                        {"first": {"cluster": "c"}, "second": {"cluster": "c"}}))
    assert load_config(str(path)).context_name == "first"


def test_in_cluster_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "namespace").write_text("edge\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    single = in_cluster_config(tmp_path)
    assert single.cluster.server == "https://[fd00::1]:443"
    assert single.cluster.certificate_auth == str(tmp_path / "ca.crt")
    assert single.namespace == "edge"
    assert asyncio.run(authorization(single)) == "Bearer sa-token"


def test_a_context_without_user_has_no_credentials(tmp_path: Path) -> None:
    path = write(tmp_path / "k", config({"c": {"server": "https://s"}}, {},
                                        {"x": {"cluster": "c"}}, "x"))
    single = load_config(str(path))
    assert single.user is not None
    assert asyncio.run(authorization(single)) is None


def test_authorization_from_token_file_and_exec_plugin(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    plugin = tmp_path / "plugin"
    plugin.write_text(f"""#!{sys.executable}
import json, os
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {{"token": "exec-" + os.environ["SUFFIX"]}}}}))
""")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    path = write(tmp_path / "config", config(
        {"c": {"server": "https://s"}},
        {"file": {"tokenFile": "token"},
         "exec": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "./plugin",
                           "env": [{"name": "SUFFIX", "value": "42"}]}}},
        {"file": {"cluster": "c", "user": "file"}, "exec": {"cluster": "c", "user": "exec"}},
        "file"))
    assert asyncio.run(authorization(load_config(str(path)))) == "Bearer from-file"
    assert asyncio.run(authorization(load_config(str(path), context="exec"))) == "Bearer exec-42"


def test_retry_after_follows_client_go() -> None:
    assert retry_after(429, "3") == 3.0
    assert retry_after(503, " 1 ") == 1.0
    assert retry_after(429, None) is None  # no header: not retried
    assert retry_after(404, "1") is None
    assert retry_after(409, "1") is None
    assert retry_after(500, "Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry_after(429, "-5") == 0.0
    assert retry_after(429, "3600") == 60.0


@asynccontextmanager
async def http_server(answers: list[tuple[int, dict[str, str]]]
                      ) -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback HTTP/1.1 server giving ``answers`` in turn (then 200); records requests."""
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                lines = head.decode().split("\r\n")
                length = next((int(line.split(":", 1)[1]) for line in lines
                               if line.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length)
                seen.append(f"{lines[0].split(' ')[0]} {body.decode()}")
                status, headers = answers.pop(0) if answers else (200, {})
                extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                             f"{extra}content-length: 2\r\n\r\n{{}}".encode())
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", seen


def test_retry_after_transport_repeats_until_served() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def run() -> tuple[int, list[str]]:
        answers = [(429, {"Retry-After": "2"}), (503, {"Retry-After": "1"})]
        async with http_server(answers) as (url, seen):
            transport = RetryAfterTransport(httpx2.AsyncHTTPTransport(), sleep=sleep)
            async with httpx2.AsyncClient(transport=transport) as client:
                response = await client.patch(url, content=b'{"a":1}')
            return response.status_code, seen

    status, seen = asyncio.run(run())
    assert status == 200
    assert seen == ['PATCH {"a":1}'] * 3  # the body is sent again each time
    assert slept == [2.0, 1.0]


def test_retry_after_transport_gives_up_and_ignores_other_errors() -> None:
    async def run(answers: list[tuple[int, dict[str, str]]], retries: int) -> tuple[int, int]:
        async def sleep(_seconds: float) -> None:
            return None

        async with http_server(answers) as (url, seen):
            transport = RetryAfterTransport(httpx2.AsyncHTTPTransport(), max_retries=retries,
                                            sleep=sleep)
            async with httpx2.AsyncClient(transport=transport) as client:
                response = await client.get(url)
            return response.status_code, len(seen)

    assert asyncio.run(run([(429, {"Retry-After": "0"})] * 5, 2)) == (429, 3)
    assert asyncio.run(run([(500, {})], 5)) == (500, 1)
    assert asyncio.run(run([(429, {})], 5)) == (429, 1)


def test_inline_certificates_leave_no_files_behind(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pki = _write_pki(tmp_path / "pki")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def data(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    path = write(tmp_path / "config", config(
        {"c": {"server": "https://127.0.0.1:1", "certificate-authority-data": data(pki.ca_cert)}},
        {"u": {"client-certificate-data": data(pki.admin_cert),
               "client-key-data": data(pki.admin_key)}},
        {"x": {"cluster": "c", "user": "u"}}, "x"))
    context = ssl_context(load_config(str(path)))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1
    gc.collect()
    assert list(scratch.iterdir()) == []

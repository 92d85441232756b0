"""Gateway state survives restarts; deployments are placed on node pools by instance type."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.gateway.conftest import GatewayProcess, deployment_yaml, endpoint_yaml
from turnout.triton.client import TritonClient
from turnout.triton.embedded import EmbeddedTriton

pytestmark = pytest.mark.integration


def score(gateway: GatewayProcess, key: str, endpoint: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/endpoints/{endpoint}/score", content=b'{"x": 3}',
                      headers={"Authorization": f"Bearer {key}", **headers})


def test_restart_keeps_endpoints_keys_and_weights(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    repository.mkdir()
    first = GatewayProcess(repository, tmp_path / "state").start()
    try:
        first.cli("endpoint", "create", "-f", str(endpoint_yaml(tmp_path, "durable")))
        first.cli("deployment", "create", "-f", str(deployment_yaml(tmp_path, "blue", endpoint="durable")),
                  "--all-traffic")
        first.cli("deployment", "create", "-f", str(deployment_yaml(tmp_path, "green", endpoint="durable")))
        first.cli("endpoint", "update", "-n", "durable", "--traffic", "blue=70 green=30",
                  "--mirror-traffic", "green=0")
        keys = first.keys("durable")
    finally:
        first.stop()
    second = GatewayProcess(repository, tmp_path / "state").start()
    try:
        endpoint = second.cli_json("endpoint", "show", "-n", "durable")
        assert endpoint["traffic"] == {"blue": 70, "green": 30}
        assert second.keys("durable") == keys
        assert score(second, keys[0], "durable").status_code == 200
        for deployment in ("blue", "green"):
            pinned = score(second, keys[1], "durable", **{"azureml-model-deployment": deployment})
            assert pinned.json()["color"] == deployment
            shown = second.cli_json("deployment", "show", "-n", deployment, "-e", "durable")
            assert shown["state"] == "ready"
    finally:
        second.stop()


@pytest.fixture
def two_pools(tmp_path: Path) -> Iterator[tuple[GatewayProcess, dict[str, EmbeddedTriton]]]:
    """Two real Triton processes as nodes: one in pool cpu, one in pool gpu (CPU instances, since this
    machine has no GPU: the node says kind cpu)."""
    repository = tmp_path / "repository"
    repository.mkdir()
    state = tmp_path / "state"
    deployments, built = state / "deployments", state / "built"
    deployments.mkdir(parents=True)
    built.mkdir()
    nodes: dict[str, EmbeddedTriton] = {}
    try:
        for name in ("cpu-node", "gpu-node"):
            nodes[name] = EmbeddedTriton(repository=repository, extra_repositories=[built, deployments],
                                         work_dir=tmp_path / name).start()
        nodes_file = tmp_path / "nodes.yaml"
        nodes_file.write_text(yaml.safe_dump({"nodes": [
            {"name": "cpu-node", "url": nodes["cpu-node"].http_url, "grpc_url": nodes["cpu-node"].grpc_url,
             "pool": "cpu", "log_dir": str(nodes["cpu-node"].log_dir)},
            {"name": "gpu-node", "url": nodes["gpu-node"].http_url, "grpc_url": nodes["gpu-node"].grpc_url,
             "pool": "gpu", "kind": "cpu", "log_dir": str(nodes["gpu-node"].log_dir)},
        ]}))
        gateway = GatewayProcess(repository, state, "--nodes", str(nodes_file)).start()
        try:
            yield gateway, nodes
        finally:
            gateway.stop()
    finally:
        for node in nodes.values():
            node.stop()
        shutil.rmtree(tmp_path / "state", ignore_errors=True)


def inference_count(node: EmbeddedTriton, entry: str) -> int:
    with TritonClient(node.http_url) as client:
        stats = client.stats(entry)["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


def test_instance_type_places_deployments_on_their_pool(two_pools, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gateway, nodes = two_pools
    gateway.cli("endpoint", "create", "-f", str(endpoint_yaml(tmp_path, "pools")))
    gateway.cli("deployment", "create", "-f",
                str(deployment_yaml(tmp_path, "small", endpoint="pools", instance_type="Standard_DS3_v2")),
                "--all-traffic")
    gateway.cli("deployment", "create", "-f",
                str(deployment_yaml(tmp_path, "big", endpoint="pools", instance_type="Standard_NC6s_v3")))
    small = gateway.cli_json("deployment", "show", "-n", "small", "-e", "pools")
    big = gateway.cli_json("deployment", "show", "-n", "big", "-e", "pools")
    assert (small["pool"], small["nodes"]) == ("cpu", ["cpu-node"])
    assert (big["pool"], big["nodes"]) == ("gpu", ["gpu-node"])
    key, _ = gateway.keys("pools")
    for _ in range(5):
        assert score(gateway, key, "pools", **{"azureml-model-deployment": "big"}).json()["color"] == "big"
    assert inference_count(nodes["gpu-node"], big["entry"]) >= 5  # ours, plus any health probe
    with TritonClient(nodes["cpu-node"].http_url) as client:
        assert not client.is_ready(big["entry"])
    # A dead node: its requests fail with 502, the other pool keeps serving.
    nodes["gpu-node"].stop()
    dead = score(gateway, key, "pools", **{"azureml-model-deployment": "big"})
    assert dead.status_code == 502 and dead.json()["error"]["code"] == "node_unreachable"
    assert score(gateway, key, "pools").status_code == 200


def test_a_node_restarted_empty_is_repopulated_and_serves_again(tmp_path: Path) -> None:
    """Two nodes of one pool, a deployment on both; SIGKILL one and start a fresh tritonserver on its
    address (what a Kubernetes pod restart does): its entry is loaded there again and it serves again."""
    import os
    import signal
    import threading
    import time

    repository, state = tmp_path / "repository", tmp_path / "state"
    repository.mkdir()
    deployments, built = state / "deployments", state / "built"
    deployments.mkdir(parents=True)
    built.mkdir()
    nodes = {name: EmbeddedTriton(repository=repository, extra_repositories=[built, deployments],
                                  work_dir=tmp_path / name).start() for name in ("node-a", "node-b")}
    nodes_file = tmp_path / "nodes.yaml"
    nodes_file.write_text(yaml.safe_dump({"nodes": [
        {"name": name, "url": node.http_url, "grpc_url": node.grpc_url, "pool": "cpu", "log_dir": str(node.log_dir)}
        for name, node in nodes.items()]}))
    gateway = GatewayProcess(repository, state, "--nodes", str(nodes_file), "--health-interval-seconds", "0.5").start()
    try:
        gateway.cli("endpoint", "create", "-f", str(endpoint_yaml(tmp_path, "spread")))
        gateway.cli("deployment", "create", "-f", str(deployment_yaml(tmp_path, "blue", endpoint="spread",
                                                                       instance_count=2)), "--all-traffic")
        entry = gateway.cli_json("deployment", "show", "-n", "blue", "-e", "spread")["entry"]
        key, _ = gateway.keys("spread")
        codes: list[int] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=30) as client:
                for _ in range(2000):
                    if stop.is_set():
                        return
                    codes.append(client.post(f"{gateway.url}/endpoints/spread/score", content=b'{"x": 1}',
                                             headers={"Authorization": f"Bearer {key}"}).status_code)
                    time.sleep(0.005)

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(1)
        old = nodes["node-b"]
        assert old._process is not None
        os.killpg(old._process.pid, signal.SIGKILL)  # the node and its stubs
        old._process.wait()
        killed_at = time.monotonic()
        nodes["node-b"] = EmbeddedTriton(repository=repository, extra_repositories=[built, deployments],
                                         work_dir=tmp_path / "node-b-again", http_port=old.http_port,
                                         grpc_port=old.grpc_port, metrics_port=old.metrics_port, reuse_ports=True).start()
        assert nodes["node-b"].http_url == old.http_url
        recovered = None
        with TritonClient(nodes["node-b"].http_url) as client:
            for _ in range(200):
                if client.is_ready(entry):
                    recovered = time.monotonic() - killed_at
                    break
                time.sleep(0.1)
        assert recovered is not None, "the gateway did not load the entry on the restarted node"
        time.sleep(1)
        served_before = inference_count(nodes["node-b"], entry)
        time.sleep(1.5)
        stop.set()
        loader.join(30)
        assert inference_count(nodes["node-b"], entry) > served_before  # it takes traffic again
        failed = [c for c in codes if c != 200]
        assert len(failed) <= 4 and set(failed) <= {502}, (len(codes), failed)  # only what was in flight on it
        shown = gateway.cli_json("deployment", "show", "-n", "blue", "-e", "spread")
        assert (shown["state"], shown["nodes"]) == ("ready", ["node-a", "node-b"])
        print(f"node restart: {len(codes)} requests, {len(failed)} failed, entry back on the node "
              f"{recovered:.1f} s after the kill")
    finally:
        gateway.stop()
        for node in nodes.values():
            node.stop()

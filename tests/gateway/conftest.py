"""A real gateway (``gateway serve`` in its own process, on free loopback ports) over real Triton."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import FIXTURES

BIN = Path(sys.executable).parent
ROLLOUT = FIXTURES / "rollout"


def gateway_ports(count: int) -> list[int]:
    """Free loopback ports *below* the kernel's ephemeral range. The gateway's embedded Triton picks its own
    ports with bind(0), from that range, after the test chose the gateway's and before the gateway binds
    them: ports from outside it can never be handed to that Triton as well (seen once: a POST answered by
    Triton's metrics listener)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", random.randrange(max(1024, low - 12000), low)))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        return [int(sock.getsockname()[1]) for sock in held]
    finally:
        for sock in held:
            sock.close()


class GatewayProcess:
    def __init__(self, repository: Path, state: Path, *args: str, cwd: Path | None = None) -> None:
        self.repository, self.state, self.args, self.cwd = repository, state, args, cwd
        self.port, self.grpc_port = gateway_ports(2)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = state.parent / f"gateway-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_key(self) -> str:
        return (self.state / "admin.key").read_text().strip()

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def start(self, timeout: float = 90) -> GatewayProcess:
        self.state.mkdir(parents=True, exist_ok=True)
        command = [str(BIN / "gateway"), "serve", "--repository", str(self.repository), "--state", str(self.state),
                   "--port", str(self.port), "--grpc-port", str(self.grpc_port), "--log-level", "warning", *self.args]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gateway not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TURNOUT_GATEWAY_URL": self.url, "TURNOUT_STATE_DIR": str(self.state)}
        result = subprocess.run([str(BIN / "gateway"), *args], capture_output=True, text=True, env=env,
                                timeout=300, cwd=ROLLOUT)
        if check and result.returncode != 0:
            raise AssertionError(f"gateway {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args).stdout)

    def keys(self, endpoint: str) -> tuple[str, str]:
        creds = self.cli_json("endpoint", "get-credentials", "-n", endpoint)
        return creds["primaryKey"], creds["secondaryKey"]


def deployment_yaml(tmp: Path, name: str, endpoint: str = "rollout", **changes: Any) -> Path:
    """A copy of the rollout fixture's deployment YAML with some keys changed (code stays the fixture's)."""
    data = yaml.safe_load((ROLLOUT / "blue.yml").read_text())
    data.update(name=name, endpoint_name=endpoint, environment_variables={"COLOR": name})
    data["code_configuration"]["code"] = str(ROLLOUT / "code")
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp / f"{endpoint}-{name}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def endpoint_yaml(tmp: Path, name: str, auth_mode: str = "key") -> Path:
    path = tmp / f"endpoint-{name}.yml"
    path.write_text(yaml.safe_dump({"name": name, "auth_mode": auth_mode}))
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, examples_ready: Path) -> Iterator[GatewayProcess]:
    """One gateway for a test module: the examples built into its repository, plus a broken package."""
    root = tmp_path_factory.mktemp("gateway")
    repository = root / "repository"
    packager = str(BIN / "packager")
    for source in ("torch-mlp", "onnx-classifier", "schema-azure", "sklearn-azure/blue-deployment.yml"):
        subprocess.run([packager, "build", str(examples_ready / source), "-r", str(repository)], check=True,
                       capture_output=True)
    subprocess.run([packager, "build", str(FIXTURES / "broken" / "init_raises"), "-r", str(repository),
                    "--name", "broken"], check=True, capture_output=True)
    server = GatewayProcess(repository, root / "state", "--token-ttl-seconds", "2", "--max-body-bytes", "100000")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root / "state" / "triton", ignore_errors=True)

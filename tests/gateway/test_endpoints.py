"""Endpoints and deployments through the gateway CLI, as an Azure user would drive them."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.gateway.conftest import GatewayProcess, deployment_yaml, endpoint_yaml

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rollout(gateway: GatewayProcess) -> GatewayProcess:
    """The rollout endpoint with blue (all traffic) and green (none), made with the CLI."""
    gateway.cli("endpoint", "create", "-f", "endpoint.yml")
    gateway.cli("deployment", "create", "-f", "blue.yml", "--all-traffic")
    gateway.cli("deployment", "create", "-f", "green.yml")
    return gateway


def score(gateway: GatewayProcess, key: str, endpoint: str = "rollout", **headers: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/endpoints/{endpoint}/score", content=b'{"x": 7}',
                      headers={"Authorization": f"Bearer {key}", **headers})


def metric(gateway: GatewayProcess, pattern: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics").text
    return sum(float(m) for m in re.findall(pattern + r" ([0-9.e+]+)", text))


def test_weights_split_traffic_and_every_answer_names_its_deployment(rollout: GatewayProcess) -> None:
    key, _ = rollout.keys("rollout")
    rollout.cli("endpoint", "update", "-n", "rollout", "--traffic", "blue=90 green=10")
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
        def one(_: int) -> tuple[str, str]:
            response = client.post(f"{rollout.url}/endpoints/rollout/score", content=b'{"x": 1}')
            assert response.status_code == 200
            return response.headers["azureml-model-deployment"], response.json()["color"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(1000)))
    # The header names the deployment whose script actually answered.
    assert all(named == color for named, color in answers)
    green = sum(1 for named, _ in answers if named == "green") / len(answers)
    assert 0.07 <= green <= 0.13, green
    rollout.cli("endpoint", "update", "-n", "rollout", "--traffic", "blue=100 green=0")


def test_pinning_reaches_a_deployment_without_traffic(rollout: GatewayProcess) -> None:
    key, _ = rollout.keys("rollout")
    for _ in range(5):
        response = score(rollout, key, **{"azureml-model-deployment": "green"})
        assert (response.status_code, response.headers["azureml-model-deployment"]) == (200, "green")
        assert response.json() == {"color": "green", "echo": 7}
    unknown = score(rollout, key, **{"azureml-model-deployment": "purple"})
    assert unknown.status_code == 404 and "deployments: blue, green" in unknown.json()["error"]["message"]
    invoked = rollout.cli("endpoint", "invoke", "-n", "rollout", "--request-file", "sample-request.json",
                          "--deployment-name", "green")
    assert json.loads(invoked.stdout) == {"color": "green", "echo": 1}
    assert "served by: green" in invoked.stderr


def test_mirror_copies_live_traffic_without_the_caller_seeing_it(rollout: GatewayProcess) -> None:
    key, _ = rollout.keys("rollout")
    rollout.cli("endpoint", "update", "-n", "rollout", "--traffic", "blue=100", "--mirror-traffic", "green=20")
    before = metric(rollout, r'turnout_mirror_requests_total\{deployment="green",endpoint="rollout",outcome="ok"\}')
    served = [score(rollout, key).headers["azureml-model-deployment"] for _ in range(400)]
    assert set(served) == {"blue"}
    # Pinned requests are never mirrored.
    for _ in range(50):
        score(rollout, key, **{"azureml-model-deployment": "blue"})
    time.sleep(0.5)  # mirrors finish after the live answers
    mirrored = metric(rollout, r'turnout_mirror_requests_total\{deployment="green",endpoint="rollout",outcome="ok"\}')
    assert 0.12 * 400 <= mirrored - before <= 0.28 * 400, mirrored - before
    rollout.cli("endpoint", "update", "-n", "rollout", "--mirror-traffic", "green=0")


def metric_with(gateway: GatewayProcess, name: str, **labels: str) -> float:
    """The sum of a metric's samples that carry all ``labels``, whatever their order."""
    total = 0.0
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_mirror_covers_rest_v2_and_grpc_and_copies_are_not_live_requests(rollout: GatewayProcess) -> None:
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_rest

    key, _ = rollout.keys("rollout")
    auth = {"authorization": f"Bearer {key}"}  # lower case: gRPC metadata keys must be
    rollout.cli("endpoint", "update", "-n", "rollout", "--traffic", "blue=100", "--mirror-traffic", "green=50")
    mirrored_before = metric_with(rollout, "turnout_mirror_requests_total", deployment="green", outcome="ok")
    live_green_before = metric_with(rollout, "turnout_requests_total", deployment="green")
    try:
        for module, client in ((triton_rest, triton_rest.InferenceServerClient(f"127.0.0.1:{rollout.port}")),
                               (triton_grpc, triton_grpc.InferenceServerClient(f"127.0.0.1:{rollout.grpc_port}"))):
            try:
                for _ in range(60):
                    tensor = module.InferInput("BODY", [1, 1], "BYTES")
                    tensor.set_data_from_numpy(np.array([[b'{"x": 7}']], dtype=np.object_))
                    result = client.infer("rollout", [tensor], headers=dict(auth))  # the REST client adds to it
                    assert json.loads(result.as_numpy("BODY")[0][0])["color"] == "blue"
            finally:
                client.close()
        time.sleep(0.5)  # mirrors finish after the live answers
        mirrored = metric_with(rollout, "turnout_mirror_requests_total", deployment="green", outcome="ok") - mirrored_before
        assert 0.3 * 120 <= mirrored <= 0.7 * 120, mirrored
        assert metric_with(rollout, "turnout_requests_total", deployment="green") == live_green_before
    finally:
        rollout.cli("endpoint", "update", "-n", "rollout", "--mirror-traffic", "green=0")


@pytest.mark.parametrize(("args", "message"), [
    (["--traffic", "blue=90 green=20"], "must sum to 100 (or 0 to stop all traffic), got 110"),
    (["--traffic", "blue=90 purple=10"], "unknown deployment 'purple' in traffic (deployments: blue, green)"),
    (["--mirror-traffic", "green=60"], "mirror traffic is at most 50%, got green=60"),
    (["--traffic", "blue=90 green=10", "--mirror-traffic", "green=10"], "'green' takes live traffic (10%)"),
    (["--traffic", "blue=ninety"], "expected NAME=PERCENT pairs"),
])
def test_invalid_traffic_is_refused_and_changes_nothing(rollout: GatewayProcess, args: list[str], message: str) -> None:
    before = rollout.cli_json("endpoint", "show", "-n", "rollout")
    result = rollout.cli("endpoint", "update", "-n", "rollout", *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    after = rollout.cli_json("endpoint", "show", "-n", "rollout")
    assert (after["traffic"], after["mirror_traffic"]) == (before["traffic"], before["mirror_traffic"])


def test_deleting_a_deployment_with_traffic_is_refused(rollout: GatewayProcess) -> None:
    result = rollout.cli("deployment", "delete", "-n", "blue", "-e", "rollout", check=False)
    assert result.returncode != 0 and "takes 100% of traffic" in result.stderr


def test_lists_print_as_tables_with_o_table(rollout: GatewayProcess) -> None:
    lines = rollout.cli("deployment", "list", "-e", "rollout", "-o", "table").stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "ENDPOINT_NAME"] and "STATE" in lines[0]
    assert sorted(line.split()[0] for line in lines[1:]) == ["blue", "green"]
    assert json.loads(rollout.cli("endpoint", "show", "-n", "rollout", "-o", "json").stdout)["name"] == "rollout"


def test_key_auth(rollout: GatewayProcess) -> None:
    primary, secondary = rollout.keys("rollout")
    assert score(rollout, primary).status_code == 200
    assert score(rollout, secondary).status_code == 200
    missing = httpx.post(f"{rollout.url}/endpoints/rollout/score", content=b"{}")
    assert missing.status_code == 401 and "needs 'Authorization: Bearer <key>'" in missing.json()["error"]["message"]
    assert score(rollout, "not-a-key").status_code == 401
    rollout.cli("endpoint", "regenerate-keys", "-n", "rollout", "--key-type", "primary")
    new_primary, same_secondary = rollout.keys("rollout")
    assert new_primary != primary and same_secondary == secondary
    assert score(rollout, primary).status_code == 401
    assert score(rollout, new_primary).status_code == 200
    # A token of another endpoint is a valid credential, but not here: 403.
    rollout.cli("endpoint", "create", "-f", str(endpoint_yaml(Path(rollout.state), "other", "aml_token")))
    token = rollout.cli_json("endpoint", "get-credentials", "-n", "other")["accessToken"]
    assert score(rollout, token).status_code == 403
    # The control plane wants the admin key, not an endpoint key.
    assert httpx.get(f"{rollout.url}/admin/endpoints", headers={"Authorization": f"Bearer {new_primary}"}).status_code == 401


def test_tokens_expire(gateway: GatewayProcess, tmp_path: Path) -> None:
    gateway.cli("endpoint", "create", "-f", str(endpoint_yaml(tmp_path, "tokens", "aml_token")))
    gateway.cli("deployment", "create", "-f", str(deployment_yaml(tmp_path, "only", endpoint="tokens")),
                "--all-traffic")
    token = gateway.cli_json("endpoint", "get-credentials", "-n", "tokens")["accessToken"]
    assert score(gateway, token, endpoint="tokens").status_code == 200
    key = httpx.post(f"{gateway.url}/admin/endpoints/tokens/credentials", headers=gateway.admin).json()
    assert "primaryKey" not in key  # token endpoints hand out tokens
    time.sleep(2.5)  # this gateway's tokens live 2 s
    expired = score(gateway, token, endpoint="tokens")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


def test_swagger_comes_from_inference_schema(gateway: GatewayProcess, examples_ready: Path, tmp_path: Path) -> None:
    gateway.cli("endpoint", "create", "-f", str(endpoint_yaml(tmp_path, "schema")))
    spec = deployment_yaml(tmp_path, "first", endpoint="schema",
                           code_configuration={"code": str(examples_ready / "schema-azure"), "scoring_script": "score.py"})
    made = gateway.cli("deployment", "create", "-f", str(spec), "--all-traffic")
    assert "Creating: " in made.stderr and "being created" in made.stderr  # progress while it was made
    key, _ = gateway.keys("schema")
    swagger = httpx.get(f"{gateway.url}/endpoints/schema/swagger.json", headers={"Authorization": f"Bearer {key}"})
    assert swagger.status_code == 200
    operation = swagger.json()["paths"]["/endpoints/schema/score"]["post"]
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["properties"]["data"]["format"] == "numpy.ndarray"
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["required"] == ["predictions"]
    assert httpx.get(f"{gateway.url}/endpoints/schema/swagger.json").status_code == 401


def test_a_deployment_that_cannot_load_fails_clearly(gateway: GatewayProcess, tmp_path: Path) -> None:
    gateway.cli("endpoint", "create", "-f", str(endpoint_yaml(tmp_path, "fragile")))
    bad = deployment_yaml(tmp_path, "bad", endpoint="fragile", environment_variables={"FAIL_INIT": "1"})
    result = gateway.cli("deployment", "create", "-f", str(bad), "--all-traffic", check=False)
    assert result.returncode == 1
    assert "deployment 'bad' failed" in result.stderr and "init refused: FAIL_INIT is set" in result.stderr
    shown = gateway.cli_json("deployment", "show", "-n", "bad", "-e", "fragile")
    assert (shown["state"], shown["provisioning_state"]) == ("failed", "Failed")
    assert gateway.cli_json("endpoint", "show", "-n", "fragile")["traffic"] == {}
    logs = gateway.cli("deployment", "get-logs", "-n", "bad", "-e", "fragile").stdout
    assert "Traceback (most recent call last)" in logs and "FAIL_INIT" in logs
    refused = gateway.cli("endpoint", "update", "-n", "fragile", "--traffic", "bad=100", check=False)
    assert "deployment 'bad' is failed" in refused.stderr
    # The rest of the gateway never noticed.
    healthy = httpx.post(f"{gateway.url}/models/schema-azure/score", content=b'{"data": [[1, 2, 3]]}',
                         headers=gateway.admin)
    assert healthy.status_code == 200


def test_overload_answers_429_with_retry_after(gateway: GatewayProcess, tmp_path: Path) -> None:
    gateway.cli("endpoint", "create", "-f", str(endpoint_yaml(tmp_path, "narrow")))
    narrow = deployment_yaml(tmp_path, "one", endpoint="narrow",
                             request_settings={"max_concurrent_requests_per_instance": 1})
    gateway.cli("deployment", "create", "-f", str(narrow), "--all-traffic")
    key, _ = gateway.keys("narrow")
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
        def slow(_: int) -> httpx.Response:
            return client.post(f"{gateway.url}/endpoints/narrow/score", content=b'{"sleep": 0.5}')

        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(slow, range(4)))
    codes = sorted(r.status_code for r in responses)
    assert codes[0] == 200 and 429 in codes, codes
    rejected = next(r for r in responses if r.status_code == 429)
    assert rejected.headers["retry-after"] == "1"


def test_safe_rollout_ends_on_green(rollout: GatewayProcess) -> None:
    rollout.cli("endpoint", "update", "-n", "rollout", "--traffic", "blue=0 green=100")
    rollout.cli("deployment", "delete", "-n", "blue", "-e", "rollout")
    key, _ = rollout.keys("rollout")
    assert score(rollout, key).json()["color"] == "green"
    endpoint = rollout.cli_json("endpoint", "show", "-n", "rollout")
    assert endpoint["deployments"] == ["green"] and endpoint["traffic"] == {"green": 100}
    history = httpx.get(f"{rollout.url}/admin/endpoints/rollout/history", headers=rollout.admin).json()
    assert history[0]["action"] == "delete-deployment"

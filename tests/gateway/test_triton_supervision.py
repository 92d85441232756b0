"""A dead embedded Triton (SIGKILL under load) is supervised back: what it left is reaped, requests in flight
fail at once (502), /healthz says the gateway cannot serve while it restarts, the models serve again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import FIXTURES
from tests.gateway.conftest import BIN, GatewayProcess
from turnout.triton.embedded import processes_in_group

NAP = """\
import json
import time


def init():
    pass


def run(raw_data):
    seconds = json.loads(raw_data).get("seconds", 0)
    time.sleep(seconds)
    return {"slept": seconds}
"""


def _tritonserver_of(gateway: subprocess.Popen[bytes]) -> int:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        command, rest = text.split(" (", 1)[1].rsplit(")", 1)
        if command == "tritonserver" and int(rest.split()[1]) == gateway.pid:
            return int(stat.parent.name)
    raise AssertionError("the gateway has no tritonserver child")


@pytest.fixture()
def napping_gateway(tmp_path: Path) -> GatewayProcess:
    package = tmp_path / "nap"
    package.mkdir()
    (package / "score.py").write_text(NAP)
    repository = tmp_path / "repository"
    subprocess.run([str(BIN / "packager"), "build", str(package), "-r", str(repository), "--name", "nap"],
                   check=True, capture_output=True)
    return GatewayProcess(repository, tmp_path / "state", "--allow-anonymous")


def test_a_killed_embedded_triton_is_reaped_restarted_and_serves_again(napping_gateway: GatewayProcess) -> None:
    gw = napping_gateway.start()
    try:
        url = f"{gw.url}/models/nap/score"
        assert httpx.post(url, json={"seconds": 0}, timeout=30).status_code == 200
        in_flight: list[tuple[int, float]] = []

        def long_call() -> None:
            started = time.monotonic()
            answer = httpx.post(url, json={"seconds": 60}, timeout=90)
            in_flight.append((answer.status_code, time.monotonic() - started))

        callers = [threading.Thread(target=long_call) for _ in range(3)]
        for caller in callers:
            caller.start()
        time.sleep(1.0)  # the calls are in the stub now
        assert gw.process is not None
        triton = _tritonserver_of(gw.process)
        os.kill(triton, signal.SIGKILL)
        killed = time.monotonic()

        health: list[tuple[int, dict[str, object]]] = []
        served_again = None
        while time.monotonic() - killed < 60:
            answer = httpx.get(f"{gw.url}/healthz", timeout=5)
            health.append((answer.status_code, answer.json()))
            if answer.status_code == 200 and len(health) > 1:
                if httpx.post(url, json={"seconds": 0}, timeout=30).status_code == 200:
                    served_again = time.monotonic() - killed
                    break
            time.sleep(0.05)
        for caller in callers:
            caller.join(timeout=30)

        # Requests in flight at the kill fail at once, not at their timeout (the stubs held their sockets).
        assert [code for code, _ in in_flight] == [502] * 3, in_flight
        assert max(seconds for _, seconds in in_flight) < 1.0 + 5.0, in_flight
        # Nothing of the dead server lives on: no stub, no zombie.
        assert processes_in_group(triton) == []
        assert not Path(f"/proc/{triton}").exists()
        # Liveness said so while it was down, and tells what happened.
        down = [body for code, body in health if code == 503]
        assert down and down[0]["status"] == "unhealthy" and down[0]["nodes"] == {"embedded": False}, health[:3]
        status = health[-1][1]["embedded_triton"]
        assert isinstance(status, dict) and status["restarts"] == 1 and status["state"] == "running", status
        assert status["reaped_processes"] >= 1  # the stub that held the in-flight calls
        assert served_again is not None and served_again < 30, health[-3:]
        print(json.dumps({"recovered_in_seconds": round(served_again, 2), "supervisor": status,
                          "in_flight_failed_after": [round(s - 1.0, 2) for _, s in in_flight]}))
    finally:
        stopping = time.monotonic()
        gw.stop()
        # The stop no longer waits out its graceful timeout on connections the dead server's stubs held.
        assert time.monotonic() - stopping < 25


def test_a_call_stuck_in_c_past_its_bound_answers_504_and_its_process_is_restarted(tmp_path: Path) -> None:
    """SIGALRM cannot interrupt a C call that holds the GIL (the issue: a 3 s bound answered after 31 s);
    the backend's watchdog ends the process just past the bound and the gateway heals it."""
    repository = tmp_path / "repository"
    package = tmp_path / "stuck"
    shutil.copytree(FIXTURES / "broken" / "c_call_hangs", package)
    subprocess.run([str(BIN / "packager"), "build", str(package), "-r", str(repository)], check=True,
                   capture_output=True)
    gw = GatewayProcess(repository, tmp_path / "state", "--allow-anonymous", "--health-interval-seconds", "1").start()
    try:
        url = f"{gw.url}/models/stuck/score"
        assert httpx.post(url, content=b"fine", timeout=30).status_code == 200
        started = time.monotonic()
        answer = httpx.post(url, content=b"hang", timeout=60)
        took = time.monotonic() - started
        assert answer.status_code == 504, answer.text
        assert "timeout_seconds (2 s)" in answer.json()["error"]["message"]
        assert took < 2 + 4, took  # the bound, the watchdog's grace, Triton noticing: not the call's 30 s
        healed = None
        while time.monotonic() - started < 60:
            if httpx.post(url, content=b"fine", timeout=30).status_code == 200:
                healed = time.monotonic() - started
                break
            time.sleep(0.2)
        assert healed is not None
        entry_logs = list((tmp_path / "state" / "triton" / "logs").glob("*stuck*.log"))
        assert any("Timeout (0:00:03)!" in p.read_text() for p in entry_logs), [p.read_text()[-500:] for p in entry_logs]
        print(json.dumps({"answered_504_after": round(took, 2), "serving_again_after": round(healed, 2)}))
    finally:
        gw.stop()

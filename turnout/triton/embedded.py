"""The embedded Triton: a real ``tritonserver`` on CPU from the ``nvidia-pytriton`` wheel.

This module alone knows where the wheel keeps the server, how to assemble a backend directory that holds
Triton's Python backend next to our ``python_scoring`` backend, and which environment and flags the server
needs on this kind of machine (see docs/triton.md for the traps each line avoids).

We depend on the ``nvidia-pytriton`` wheel itself rather than unpacking its files into a cache: pip then
pins, verifies and removes the binary with the rest of the environment, its RPATHs keep finding the
bundled libraries, and there is no second copy to keep in sync. We use none of PyTriton's Python API.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from turnout.errors import TurnoutError

log = logging.getLogger("turnout.triton")

BACKEND_NAME = "python_scoring"
# backends/python_scoring/ in the source tree: the one model.py every entry runs.
SCORING_BACKEND_DIR = Path(__file__).resolve().parents[2] / "backends" / BACKEND_NAME


class TritonStartError(TurnoutError):
    code = "triton_start_failed"


@dataclass(frozen=True)
class ServerFiles:
    """Where the wheel keeps the pieces of Triton we run."""

    binary: Path
    python_backend: Path  # holds libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for the running Python
    libs: Path  # nvidia_pytriton.libs, the wheel's bundled shared libraries

    @classmethod
    def locate(cls) -> ServerFiles:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or spec.origin is None:
            raise TritonStartError(
                "nvidia-pytriton is not installed in this environment; it ships the tritonserver binary "
                "(pip install nvidia-pytriton==0.7.0)"
            )
        root = Path(spec.origin).parent / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        files = cls(
            binary=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
            libs=Path(spec.origin).parents[1] / "nvidia_pytriton.libs",
        )
        for path in (files.binary, files.python_backend / "libtriton_python.so", files.stub):
            if not path.exists():
                raise TritonStartError(f"the nvidia-pytriton wheel lacks {path} (Python {version} stub?)")
        return files


def assemble_backend_dir(target: Path, files: ServerFiles | None = None) -> Path:
    """Lay out ``target/python`` (Triton's Python backend + our interpreter's stub) and
    ``target/python_scoring`` (our backend).

    Triton refuses a backend library whose real path escapes the backend directory, so the wheel's
    files are copied (hard-linked where possible); our backend folder is a symlink so edits are live."""
    files = files or ServerFiles.locate()
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in (files.python_backend / "libtriton_python.so",
                   files.python_backend / "triton_python_backend_utils.py", files.stub):
        _place_copy(source, python_dir / source.name)
    link = target / BACKEND_NAME
    if not (link.is_symlink() and link.resolve() == SCORING_BACKEND_DIR.resolve()):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(SCORING_BACKEND_DIR)
    return target


def _place_copy(source: Path, destination: Path) -> None:
    if destination.exists() and destination.stat().st_size == source.stat().st_size:
        return
    staged = destination.with_suffix(destination.suffix + ".tmp")
    staged.unlink(missing_ok=True)
    try:
        os.link(source, staged)
    except OSError:
        shutil.copy2(source, staged)
    os.replace(staged, destination)


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook that has the kernel SIGTERM the child when the thread that started it dies, so a
    killed gateway or test runner never leaves a Triton (and its stubs) running. Resolved here, in the
    parent: the child may not import or allocate between fork and exec. Linux only."""
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct free ports: all held open while they are picked (one after another, the kernel may hand
    out the same one twice, and Triton refuses equal HTTP/gRPC/metrics ports, printing its usage)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def processes_in_group(group: int) -> list[int]:
    """The live processes of a process group (Linux: read from /proc)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat, encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command's closing parenthesis: state, ppid, pgrp.
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.split("/")[2]))
    return found


def server_environment(files: ServerFiles, log_dir: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    # The stub takes its site-packages from the first python3 on PATH: make it ours.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # The interpreter's LIBDIR keeps the stub off the system libpython (ssl breaks otherwise).
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    lib_path = [str(files.libs), libdir, env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in lib_path if p)
    if log_dir is not None:
        env["TURNOUT_LOG_DIR"] = str(log_dir)
    return env


@dataclass
class EmbeddedTriton:
    """One ``tritonserver`` process in explicit model-control mode on free loopback ports.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Its log goes to ``log_file``; the
    scoring backend writes one log per entry into ``log_dir``.
    """

    repository: Path
    work_dir: Path | None = None
    extra_repositories: list[Path] = field(default_factory=list)
    host: str = "127.0.0.1"
    load_models: list[str] = field(default_factory=list)
    load_all: bool = False
    startup_timeout: float = 60.0
    exit_timeout: int = 10
    extra_args: list[str] = field(default_factory=list)

    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    reuse_ports: bool = False  # start on the ports given (a node restarted on its address) instead of free ones
    _process: subprocess.Popen[bytes] | None = None
    _owned_work_dir: bool = False

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def log_file(self) -> Path:
        return self._work / "tritonserver.log"

    @property
    def log_dir(self) -> Path:
        return self._work / "logs"

    @property
    def _work(self) -> Path:
        if self.work_dir is None:
            raise RuntimeError("EmbeddedTriton has not been started")
        return self.work_dir

    @property
    def _shm_prefix(self) -> str:
        return f"turnout_{os.getpid()}_{self.http_port}_"

    def start(self) -> EmbeddedTriton:
        """Start and wait until live. Call it from a thread that lives as long as the server: Triton is
        told to stop when that thread ends."""
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="turnout-triton-"))
            self._owned_work_dir = True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        files = ServerFiles.locate()
        backend_dir = assemble_backend_dir(self._work / "backends", files)
        last_error: Exception | None = None
        # A free port can be taken between our probe and Triton's bind: retry with new ports.
        for _ in range(3):
            if not (self.reuse_ports and self.http_port):  # a restart keeps its address: clients know it
                self.http_port, self.grpc_port, self.metrics_port = free_ports(3, self.host)
            try:
                self._launch(files, backend_dir)
                return self
            except TritonStartError as exc:
                last_error = exc
                self._kill()
                if "address already in use" not in self.log_tail(40).lower():
                    break
        raise last_error or TritonStartError("tritonserver did not start")

    def _launch(self, files: ServerFiles, backend_dir: Path) -> None:
        args = [
            str(files.binary),
            f"--model-repository={self.repository}",
            *[f"--model-repository={extra}" for extra in self.extra_repositories],
            f"--backend-directory={backend_dir}",
            "--model-control-mode=explicit",
            "--disable-auto-complete-config",
            "--exit-on-error=false",
            "--strict-readiness=false",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--log-verbose=0",
            *self.extra_args,
        ]
        args += ["--load-model=*"] if self.load_all else [f"--load-model={m}" for m in self.load_models]
        log.info("starting tritonserver on %s (log %s)", self.http_url, self.log_file)
        with open(self.log_file, "ab") as out:
            self._process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=server_environment(files, self.log_dir),
                start_new_session=True,  # our Ctrl-C is handled by stop(), not delivered twice
                preexec_fn=_parent_death_signal(),
            )
        self._wait_until_live()

    def _wait_until_live(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    raise TritonStartError(
                        f"tritonserver exited during startup; log tail:\n{self.log_tail(30)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.http_url}/v2/health/live").status_code == 200:
                        return
                time.sleep(0.1)
        raise TritonStartError(f"tritonserver not live after {self.startup_timeout}s; log:\n{self.log_tail(30)}")

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 50) -> str:
        try:
            with open(self.log_file, "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, wait for the drain, SIGKILL if it does not end; then remove what this server leaked.

        Callers must close their own keep-alive HTTP connections first: an idle one blocks Triton's exit."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=self.exit_timeout + 15)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not exit after SIGTERM; killing it")
                self._kill()
        self._cleanup()

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            # The stubs are in the server's session: take them down too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def exit_code(self) -> int | None:
        """None while the server runs; its exit status (reaped: no zombie is left) once it has ended."""
        return None if self._process is None else self._process.poll()

    def reap(self) -> list[int]:
        """After the server died: kill what it left behind and return those pids.

        Its stubs outlive it (Triton does not take them down when it is killed) and hold the connections
        it had accepted, so callers of requests in flight would wait for their timeout; they are in the
        server's process group, which outlives its leader while a member lives."""
        if self._process is None:
            return []
        self._process.poll()
        leftovers = processes_in_group(self._process.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        for segment in glob.glob(f"/dev/shm/{self._shm_prefix}*"):
            with contextlib.suppress(OSError):
                os.unlink(segment)
        return leftovers

    def restart(self) -> EmbeddedTriton:
        """Start again on the same ports (the gateway's nodes keep their URLs). Call :meth:`reap` first."""
        self.reuse_ports = True
        return self.start()

    def _cleanup(self) -> None:
        for segment in glob.glob(f"/dev/shm/{self._shm_prefix}*"):
            with contextlib.suppress(OSError):
                os.unlink(segment)
        if self._owned_work_dir and os.environ.get("TURNOUT_KEEP_TRITON_LOGS") != "1":
            shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> EmbeddedTriton:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

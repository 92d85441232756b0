"""``packager test``: build into a throwaway repository, serve it on a real embedded Triton, send one
request and report what came back, with the entry's own log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packager import scratch
from packager.build import build_entry
from packager.environments import Built
from packager.package import SAMPLE_REQUEST, StagedPackage
from turnout.errors import PackageError, TurnoutError
from turnout.manifest import CODE_DIR
from turnout.triton.client import TritonClient
from turnout.triton.embedded import EmbeddedTriton
from turnout.wire import RequestMeta


@dataclass(frozen=True)
class TestOutcome:
    passed: bool
    status: int | None
    body: str
    log_tail: str
    stage: str  # "load" or "request"


def request_body_for(package: StagedPackage, request_file: Path | None) -> bytes:
    if request_file is not None:
        return bytes(request_file.read_bytes())
    candidates = [package.root / CODE_DIR / SAMPLE_REQUEST]
    source = Path(package.source)
    if source.suffix.lower() in (".yml", ".yaml"):  # Azure's examples keep it beside the deployment YAML
        candidates.append(source.parent / SAMPLE_REQUEST)
    for sample in candidates:
        if sample.is_file():
            return sample.read_bytes()
    raise PackageError(f"no --request-file given and no {SAMPLE_REQUEST} in the package"
                       + (f" or beside {source.name}" if len(candidates) > 1 else ""))


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_package_test(package: StagedPackage, body: bytes, content_type: str = "application/json",
                     environment: Built | None = None) -> TestOutcome:
    with scratch.temporary("test") as tmp:
        repository = Path(tmp) / "repository"
        entry = build_entry(package, repository, environment=environment).name
        with EmbeddedTriton(repository=repository, work_dir=Path(tmp) / "triton") as triton:
            entry_log = triton.log_dir / f"{entry}.log"
            with TritonClient(triton.http_url) as client:
                try:
                    client.load(entry)
                except TurnoutError as exc:
                    return TestOutcome(False, None, exc.message, _tail(entry_log) or triton.log_tail(40), "load")
                try:
                    result = client.score(entry, body, RequestMeta(headers={"Content-Type": content_type}))
                except TurnoutError as exc:
                    return TestOutcome(False, int(exc.status), exc.message, _tail(entry_log), "request")
            return TestOutcome(result.status < 400, result.status, result.body.decode("utf-8", "replace"),
                               _tail(entry_log), "request")

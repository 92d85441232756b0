"""Real environment builds with uv from the package registries this machine reaches (small pure-Python
packages; uv's own cache is kept across runs): the cache, the failures and their messages, an interrupted
build, prune."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from packager import pipeline
from packager.environments import (
    LOCK_FILE,
    MARKER,
    EnvironmentSpec,
    entries,
    prepare,
    prune,
    used_by,
)
from packager.sources import resolve_source
from turnout.errors import DeploymentFailed, PackageError

pytestmark = pytest.mark.integration


def spec_of(tmp_path: Path, requirements: str, name: str = "environment") -> EnvironmentSpec:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.txt").write_text(requirements)
    spec = EnvironmentSpec.of(folder)
    assert spec is not None
    return spec


def run_in(environment: Path, code: str) -> str:
    # Not from the checkout (nor a PYTHONPATH naming it): its turnout/ would shadow the environment's own copy.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(environment / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          check=True, cwd=environment, env=env).stdout.strip()


def test_a_small_spec_builds_once_and_is_then_found_in_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "environments"
    lines: list[str] = []
    built = prepare(spec_of(tmp_path, "tabulate==0.8.10\n"), root, progress=lines.append)
    assert not built.cached and built.installed == ["tabulate==0.8.10"]
    assert built.path.parent == root and (built.path / MARKER).is_file()
    # Its own version first, the serving environment's packages after it, Turnout's runtime inside.
    assert run_in(built.path, "import tabulate, numpy, turnout.scoring, sys; print(tabulate.__version__, "
                              "numpy.__version__ < '2', turnout.__file__.startswith(sys.prefix))") == "0.8.10 True True"
    steps = [line.split("] ", 1)[1].split(":")[0] for line in lines]
    assert {"create", "resolve", "install", "runtime", "check", "ready"} <= set(steps)
    assert (built.path / LOCK_FILE).read_text() == "tabulate==0.8.10\n    # via -r requirements.in\n"  # no build path
    again = prepare(spec_of(tmp_path, "tabulate==0.8.10\n", "again"), root)
    assert again.cached and again.path == built.path
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == [built.key]


def test_two_packages_with_the_same_requirements_share_one_build(tmp_path: Path) -> None:
    root = tmp_path / "environments"
    paths = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "score.py").write_text("import tabulate\ndef init(): pass\ndef run(raw): return tabulate.__version__\n")
        (folder / "requirements.txt").write_text("tabulate==0.9.0\n")
        with resolve_source(str(folder)) as package:
            built = pipeline.prepare_environment(package, pipeline.EnvironmentOptions(root))
            assert built is not None
            paths.append((built.path, built.cached))
            # The resolved lock goes with the package: the version registered from it rebuilds identically.
            assert (package.root / "environment" / LOCK_FILE).read_text() == (built.path / LOCK_FILE).read_text()
    assert paths[0][0] == paths[1][0] and paths == [(paths[0][0], False), (paths[0][0], True)]
    assert len(entries(root)) == 1


def test_a_package_that_carries_its_lock_installs_exactly_it(tmp_path: Path) -> None:
    root = tmp_path / "environments"
    folder = tmp_path / "environment"
    folder.mkdir()
    (folder / "requirements.txt").write_text("tabulate\n")  # open: the lock decides
    (folder / LOCK_FILE).write_text("tabulate==0.8.9\n    # via -r requirements.in\n")
    spec = EnvironmentSpec.of(folder)
    assert spec is not None
    built = prepare(spec, root)
    assert built.installed == ["tabulate==0.8.9"]
    assert run_in(built.path, "import tabulate; print(tabulate.__version__)") == "0.8.9"


@pytest.mark.parametrize(("requirements", "kind", "says"), [
    ("no-such-package-turnout-test-xyz==1.0\n", "no matching distribution",
     "no-such-package-turnout-test-xyz was not found in the package registry"),
    ("tabulate==99.0\n", "no matching distribution", "there is no version of tabulate==99.0"),
    ("tabulate==0.8.10\ntabulate==0.9.0\n", "resolution conflict", "No solution found when resolving dependencies"),
    ("jax\n", "heavy package", "resolving it would install jax, jaxlib from PyPI"),
])
def test_a_build_that_cannot_succeed_fails_with_its_reason_first(tmp_path: Path, requirements: str, kind: str,
                                                                 says: str) -> None:
    root = tmp_path / "environments"
    with pytest.raises(DeploymentFailed) as caught:
        prepare(spec_of(tmp_path, requirements), root)
    failure = caught.value
    assert failure.status == 424 and failure.code == "deployment_failed"
    assert failure.message.startswith(f"its environment could not be built ({kind}): ")
    assert says in failure.message
    assert failure.details["kind"] == kind and failure.details["log_tail"]
    assert Path(failure.details["log"]).is_file()  # the whole log is kept
    assert entries(root) == [] and not [p for p in root.iterdir() if p.name.startswith(".staging")]


def test_numpy_2_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="numpy 1's ABI"):
        prepare(spec_of(tmp_path, "numpy>=2\n"), tmp_path / "environments")
    assert not (tmp_path / "environments").exists()


def test_a_build_past_its_timeout_fails_as_a_timeout(tmp_path: Path) -> None:
    with pytest.raises(DeploymentFailed, match=r"\(timeout\): the build did not finish within its timeout"):
        prepare(spec_of(tmp_path, "tabulate==0.9.0\n"), tmp_path / "environments", timeout=0.000001)


KILLED_BUILD = """
import os, signal, sys
from pathlib import Path
from packager.environments import EnvironmentSpec, prepare

def progress(line):
    if "install:" in line:  # killed in the middle, as a power cut or an OOM kill would
        os.kill(os.getpid(), signal.SIGKILL)

prepare(EnvironmentSpec.of(Path(sys.argv[1])), Path(sys.argv[2]), progress=progress)
"""


def test_an_interrupted_build_is_never_used_and_is_cleaned_up(tmp_path: Path) -> None:
    root = tmp_path / "environments"
    spec = spec_of(tmp_path, "tabulate==0.8.10\n")
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_BUILD), str(tmp_path / "environment"),
                             str(root)], cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    leftovers = [p for p in root.iterdir() if p.name.startswith(".staging")]
    assert leftovers and entries(root) == []  # half-built, and not under any key
    built = prepare(spec, root)
    assert not built.cached
    assert run_in(built.path, "import tabulate; print(tabulate.__version__)") == "0.8.10"
    assert not any(p.exists() for p in leftovers)


def test_prune_removes_only_what_no_entry_links_to(tmp_path: Path) -> None:
    root = tmp_path / "environments"
    kept = prepare(spec_of(tmp_path, "tabulate==0.9.0\n", "kept"), root)
    unused = prepare(spec_of(tmp_path, "tabulate==0.8.10\n", "unused"), root)
    repository = tmp_path / "repository"
    (repository / "model-v1").mkdir(parents=True)
    os.symlink(os.path.relpath(kept.path, repository / "model-v1"), repository / "model-v1" / "python-env")
    assert used_by([repository]) == {kept.key: [f"{repository}/model-v1"]}
    removed = prune(root, [repository])
    assert [r["key"] for r in removed] == [unused.key] and removed[0]["bytes"] > 0
    assert kept.path.is_dir() and not unused.path.exists()
    # Its resolution is forgotten with it: the same spec builds again rather than naming a missing folder.
    again = prepare(spec_of(tmp_path, "tabulate==0.8.10\n", "unused"), root)
    assert not again.cached and again.path.is_dir()
    assert json.loads((again.path / MARKER).read_text())["installed"] == ["tabulate==0.8.10"]


def test_packager_show_names_the_registered_versions_lock_and_its_build(tmp_path: Path) -> None:
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "score.py").write_text("import tabulate\ndef init(): pass\ndef run(raw): return tabulate.__version__\n")
    (folder / "requirements.txt").write_text("tabulate==0.8.10\n")
    env = {**os.environ, "TURNOUT_REGISTRY": str(tmp_path / "registry"),
           "TURNOUT_ENVIRONMENTS_DIR": str(tmp_path / "environments")}
    packager = str(Path(sys.executable).parent / "packager")
    registered = subprocess.run([packager, "register", str(folder)], capture_output=True, text=True, env=env, timeout=120)
    assert registered.returncode == 0, registered.stderr
    assert "install: downloading and installing tabulate==0.8.10" in registered.stderr  # progress, as it goes
    shown = json.loads(subprocess.run([packager, "show", "tables:1"], capture_output=True, text=True, env=env,
                                      check=True, timeout=60).stdout)
    assert shown["environment_lock"] == ["tabulate==0.8.10"]
    assert any("ready: environment" in line for line in shown["environment"]["build_log"])


def test_two_deployments_of_one_spec_at_once_build_it_once(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path / "environments"
    specs = [spec_of(tmp_path, "tabulate==0.8.7\n", f"at-once-{n}") for n in range(2)]
    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(lambda spec: prepare(spec, root), specs))
    assert built[0].path == built[1].path
    assert sorted(b.cached for b in built) == [False, True]  # the second waited for the first, then found it
    assert len(entries(root)) == 1

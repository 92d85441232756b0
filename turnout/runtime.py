"""The slim scoring runtime: what Triton's stub imports to run a python_scoring entry, and how to put it
into another Python environment (a deployment's own, an NGC Triton image's).

It is ``turnout/__init__.py``, ``errors.py``, ``wire.py``, ``manifest.py``, ``runtime.py`` and
``scoring/``; it needs only :data:`REQUIREMENTS` and runs on Python 3.10 to 3.12 (the stub's Python in the
NGC Triton images). Everything else of Turnout (gateway, packager, ``turnout.triton``) stays server-side.

Why a vendored copy rather than a second distribution: the runtime is a subset of the ``turnout``
package, and two distributions owning one import package collide in the server's own environment; the
environments it goes into are built by Turnout itself, so :func:`install` copies the files into the
target's site-packages (no build step, no index), and :func:`fingerprint` (a hash of exactly those files)
keys whatever was built with them.

    python -m turnout.runtime requirements          # what to pip/uv install beside it
    python -m turnout.runtime install SITE_PACKAGES  # copy the runtime there
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
RUNTIME_FILES = ("__init__.py", "errors.py", "wire.py", "manifest.py", "runtime.py")
RUNTIME_DIRS = ("scoring",)
# numpy < 2: Triton's stub speaks the numpy 1.x ABI. The Azure shims are what unmodified Azure scoring
# scripts import (inference_schema decorators, azureml.contrib.services AMLRequest/AMLResponse).
REQUIREMENTS = ("numpy>=1.21,<2", "orjson>=3.9", "inference-schema>=1.7", "azureml-contrib-services>=1.50")
PYTHONS = ("3.10", "3.11", "3.12")


def files() -> list[Path]:
    """Every file of the runtime, relative to the package folder, sorted."""
    found = [Path(name) for name in RUNTIME_FILES]
    for folder in RUNTIME_DIRS:
        found += sorted(p.relative_to(PACKAGE_DIR) for p in (PACKAGE_DIR / folder).rglob("*.py"))
    return sorted(found)


def fingerprint() -> str:
    digest = hashlib.sha256()
    for relative in files():
        digest.update(relative.as_posix().encode() + b"\0" + (PACKAGE_DIR / relative).read_bytes())
    return digest.hexdigest()[:16]


def install(site_packages: Path) -> Path:
    """Copy the runtime into ``site_packages/turnout`` (replacing an older copy); returns that folder."""
    target = site_packages / "turnout"
    staging = site_packages / ".turnout-runtime.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    for relative in files():
        destination = staging / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_DIR / relative, destination)
    (staging / "RUNTIME").write_text(fingerprint() + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def main(argv: list[str]) -> int:
    if argv[:1] == ["requirements"]:
        print("\n".join(REQUIREMENTS))
        return 0
    if len(argv) == 2 and argv[0] == "install":
        print(install(Path(argv[1])))
        return 0
    print("usage: python -m turnout.runtime requirements | install SITE_PACKAGES", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

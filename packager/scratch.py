"""Temporary folders that a killed process does not leave behind for good.

Every scratch folder's name carries the pid of the process that made it (``turnout-<kind>-<pid>-…`` in the
temporary directory, ``.staging-<pid>-…`` inside a repository or registry). A process killed with SIGKILL
cannot remove its own; the next packager or gateway run removes those whose process is gone (:func:`sweep`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("turnout.packager.scratch")
_OWNED = re.compile(r"^(?:turnout-[a-z]+|\.staging)-(\d+)-")


def temporary(kind: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder (removed when closed) named for ``kind`` and this process."""
    return tempfile.TemporaryDirectory(prefix=f"turnout-{kind}-{os.getpid()}-")


def staging(folder: Path) -> Path:
    """A staging folder inside ``folder`` (same filesystem: what is staged is renamed into place)."""
    return Path(tempfile.mkdtemp(prefix=f".staging-{os.getpid()}-", dir=folder))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(*folders: Path) -> list[Path]:
    """Remove scratch folders of processes that are gone, in the temporary directory and ``folders``."""
    removed = []
    for folder in (Path(tempfile.gettempdir()), *folders):
        try:
            candidates = list(folder.iterdir())
        except OSError:
            continue
        for path in candidates:
            match = _OWNED.match(path.name)
            if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("removed %d scratch folder(s) left by killed processes", len(removed))
    return removed

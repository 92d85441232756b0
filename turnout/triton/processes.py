"""Triton's Python stubs on this machine, and the memory each entry's instances use (Linux: /proc).

A stub's command line is ``triton_python_backend_stub <repository>/<entry>/<version>/model.py <shm region>
<shm size> <growth> <server pid> …``: the entry is the folder two levels above ``model.py``, the server is the
``tritonserver`` that started it.
"""

from __future__ import annotations

import os
from pathlib import Path

STUB = "triton_python_backend_stub"


def _memory_of(pid: str) -> int | None:
    """Proportional set size (shared pages split among their users), else resident size, in bytes."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def stub_memory(server_pid: int) -> dict[str, list[int]]:
    """Each entry's stubs (one per instance) of the ``tritonserver`` with ``server_pid``: their memory in bytes."""
    found: dict[str, list[int]] = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) < 6 or not argv[0].endswith(STUB.encode()) or argv[5] != str(server_pid).encode():
            continue
        memory = _memory_of(cmdline.parent.name)
        if memory is not None:
            entry = Path(argv[1].decode("utf-8", "replace")).parent.parent.name
            found.setdefault(entry, []).append(memory)
    return found

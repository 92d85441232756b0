"""The layout's rules, checked on the source: no import cycles (lazy and TYPE_CHECKING imports count),
and the slim scoring runtime (what Triton's stub imports) pulls in nothing of the server side."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGES = ("turnout", "packager", "gateway")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """What a module names: ``from pkg import sub`` depends on pkg.sub when that is a module, else on pkg."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for package in PACKAGES for p in (REPO_ROOT / package).rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        graph[module] = {target for target in _imports(path, module, set(modules))
                         if target in modules and target != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "gateway.app" in graph and "gateway.entries" in graph["gateway.app"]
    assert cycles(graph) == []


# What the stub imports must not drag in the server side: a deployment's own environment has only the
# slim runtime's requirements (turnout/runtime.py).
SERVER_SIDE = ("pydantic", "pydantic_settings", "fastapi", "starlette", "tritonclient", "google.protobuf", "yaml",
               "httpx", "aiohttp", "uvicorn", "typer", "gateway", "packager", "turnout.triton")


def test_the_scoring_runtime_imports_nothing_of_the_server() -> None:
    script = textwrap.dedent(f"""
        import sys
        import turnout.runtime, turnout.wire, turnout.errors, turnout.manifest, turnout.scoring
        import turnout.scoring.azure, turnout.scoring.hooks, turnout.scoring.batch
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in {SERVER_SIDE!r} or m.startswith({SERVER_SIDE!r}))
        print(",".join(leaked))
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert completed.stdout.strip() == ""


def test_the_inspecting_child_imports_nothing_of_the_server_but_itself() -> None:
    """It runs in a deployment's own environment, where pydantic may be another major version or absent."""
    script = textwrap.dedent(f"""
        import sys
        import packager.inspect_child
        leaked = sorted(m for m in sys.modules if (m.split(".")[0] in {SERVER_SIDE!r} or m.startswith({SERVER_SIDE!r}))
                        and m not in ("packager", "packager.inspect_child"))
        print(",".join(leaked))
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert completed.stdout.strip() == ""

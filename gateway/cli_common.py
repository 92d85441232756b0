"""What the ``gateway`` CLI's verbs share: the options every verb takes, the admin client, output as
``az ml`` prints it (``-o json`` or ``-o table``), and errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from gateway.client import AdminClient
from gateway.schemas import PackageHeader
from packager.package import PACKAGE_FILE
from packager.registry import Registry, default_registry_root
from packager.sources import resolve_source

DEFAULT_STATE = Path(".turnout/gateway")
GatewayUrl = Annotated[str, typer.Option("--gateway-url", envvar="TURNOUT_GATEWAY_URL", help="Gateway to talk to.")]
AdminKey = Annotated[str | None, typer.Option("--admin-key", envvar="TURNOUT_ADMIN_KEY",
                                              help="Admin credential (default: read from the state folder).")]
StateDir = Annotated[Path, typer.Option("--state", envvar="TURNOUT_STATE_DIR", help="Gateway state folder.")]
DEFAULT_URL = "http://127.0.0.1:8080"


Output = Annotated[str, typer.Option("--output", "-o", help="json or table, as az ml's -o.")]


# Long or rarely scanned fields stay in -o json.
_NOT_TABULATED = frozenset({"content_hash", "created", "updated", "description", "scoring_uri", "openapi_uri",
                            "log_tail", "last_crash"})


def table(rows: list[dict[str, Any]]) -> str:
    """The short scalar columns of the first row (nested and long values are shown by -o json)."""
    if not rows:
        return "(none)"
    columns = [k for k, v in rows[0].items()
               if (v is None or isinstance(v, (str, int, float, bool))) and k not in _NOT_TABULATED]
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def show(value: Any, output: str = "json") -> None:
    if isinstance(value, str):
        typer.echo(value)
    elif output == "table":
        typer.echo(table(value if isinstance(value, list) else [value]))
    elif output == "json":
        typer.echo(json.dumps(value, indent=2))
    else:
        fail(f"-o {output!r}: use json or table", 2)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _key_file(state: Path) -> Path:
    """``state``'s admin key; the default (relative) state folder is also looked for in the folders above, as
    git finds its ``.git``: a verb run from ``examples/batch-images`` finds the gateway started at the root."""
    key_file = state / "admin.key"
    if key_file.exists() or state.is_absolute() or state != DEFAULT_STATE:
        return key_file
    for folder in Path.cwd().parents:
        if (folder / state / "admin.key").exists():
            return folder / state / "admin.key"
    return key_file


def admin_client(url: str, admin_key: str | None, state: Path) -> AdminClient:
    if admin_key is None:
        key_file = _key_file(state)
        if not key_file.exists():
            fail(f"no admin key: pass --admin-key, set TURNOUT_ADMIN_KEY, or point --state at the gateway's "
                  f"state folder (looked for {key_file})", 2)
        admin_key = key_file.read_text().strip()
    return AdminClient(url, admin_key)


def package_archive(file: Path, overrides: dict[str, Any], deployment_json: str) -> bytes:
    """A deployment YAML's package staged here and sent whole: a gzipped tar of the package, its identity
    (``package.json``) and the deployment's settings (``deployment.json``)."""
    with resolve_source(str(file), Registry(default_registry_root()), overrides) as package:
        for warning in (w for w in package.warnings if not w.startswith("ignored Azure keys")):  # said before
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
        header = PackageHeader(name=package.name, spec=package.spec.model_dump(mode="json"),
                               model_name=package.model_name, source=package.source)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(package.root, arcname=".", filter=lambda t: None if t.name == f"./{PACKAGE_FILE}" else t)
            for member, content in ((PACKAGE_FILE, header.model_dump_json()), ("deployment.json", deployment_json)):
                info = tarfile.TarInfo(member)
                info.size = len(content.encode())
                tar.addfile(info, io.BytesIO(content.encode()))
    return buffer.getvalue()

"""``packager``: turn a model + score.py into a registered version and a Triton repository entry."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from packager import pipeline, scratch
from packager.environment_assets import EnvironmentAssets
from packager.environments import LOCK_FILE, built_from_lock
from packager.environments import default_root as default_environments_root
from packager.environments import entries as environment_entries
from packager.environments import prune as prune_environments
from packager.environments import used_by as environments_used_by
from packager.inspection import Inspection, inspect_package
from packager.package import StagedPackage
from packager.registry import Registry, default_registry_root
from packager.scaffold import scaffold
from packager.sources import bare_model
from packager.spec import apply_overrides, load_azure_model
from packager.testing import request_body_for, run_package_test
from turnout.errors import TurnoutError
from turnout.manifest import ENVIRONMENT_DIR

app = typer.Typer(help=(__doc__ or "").replace("``", ""), no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)

RegistryOption = Annotated[
    Path | None,
    typer.Option("--registry", help="Registry folder (default: $TURNOUT_REGISTRY, else ~/.turnout/registry)."),
]
SourceArgument = Annotated[
    str, typer.Argument(help="Package folder, .tar.gz/.zip, Azure deployment YAML, or registered name[:version].")
]


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


EnvironmentsOption = Annotated[Path | None, typer.Option(
    "--environments", help="Environment cache (default: $TURNOUT_ENVIRONMENTS_DIR, else .turnout/gateway/environments, "
    "the gateway's default).")]


def _environment(root: Path | None) -> pipeline.EnvironmentOptions:
    """Build progress on stderr as it happens (resolve, download, install, with times)."""
    return pipeline.EnvironmentOptions(root=root, progress=lambda line: typer.echo(line, err=True))


OutputOption = Annotated[str, typer.Option("--output", "-o", help="table or json")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="For an Azure YAML: KEY=VALUE to change before it is read (repeatable), e.g. endpoint_name=shop.")]


def _stage(source: str, registry: Path | None, sets: list[str] | None = None) -> StagedPackage:
    package = pipeline.stage(source, Registry(default_registry_root(registry)), apply_overrides({}, sets or []))
    for warning in package.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    return package


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the package in.")],
    name: Annotated[str | None, typer.Option(help="Model name (default: the folder's name).")] = None,
) -> None:
    """Scaffold a package: score.py with hooks, a tiny model, model.yaml and sample-request.json."""
    for path in scaffold(directory, name):
        typer.echo(f"created {path}")
    typer.echo(f"next: packager test {directory}")


@app.command()
def validate(source: SourceArgument, registry: RegistryOption = None, set_: SetOption = None,
             environments: EnvironmentsOption = None) -> None:
    """Load the scoring script with the backend's loader (in a subprocess, in its own environment if it
    declares one) and report its mode."""
    with _stage(source, registry, set_) as package:
        built = pipeline.prepare_environment(package, _environment(environments))
        result = inspect_package(package, python=built.python if built else None)
    if result.log.strip():
        typer.echo(result.log.rstrip(), err=True)
    if not result.ok:
        _fail(result.message)
    typer.secho(f"ok: {package.name} {result.message}", fg=typer.colors.GREEN)
    _advise(result)


def _advise(result: Inspection | None) -> None:
    if result is not None and result.advice:
        typer.secho(f"hint: {result.advice}", fg=typer.colors.CYAN, err=True)


@app.command()
def register(
    source: SourceArgument,
    name: Annotated[str | None, typer.Option(help="Model name (default: from model.yaml or the folder).")] = None,
    version: Annotated[int | None, typer.Option(help="Version to create (default: next).", min=1)] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag as key=value; repeatable.")] = None,
    description: Annotated[str | None, typer.Option(help="Description.")] = None,
    skip_validation: Annotated[bool, typer.Option(help="Register without loading the script first.")] = False,
    registry: RegistryOption = None,
    set_: SetOption = None,
    environments: EnvironmentsOption = None,
) -> None:
    """Register an immutable name:version (the same content twice gives the same version)."""
    tags = _tag_pairs(tag)
    reg = Registry(default_registry_root(registry))
    with _stage(source, registry, set_) as package:
        before = {r.content_hash: r.tags for r in reg.versions(name or package.name)}
        try:
            record, created, inspection = pipeline.register(
                package, reg, validate=not skip_validation, name=name, version=version, tags=tags,
                description=description, environment=_environment(environments))
        except pipeline.InspectionFailed as exc:
            typer.echo(str(exc.details.get("log_tail", "")).rstrip(), err=True)
            _fail(f"not registered: {exc.message}")
        _advise(inspection)
    verb = "registered" if created else "already registered (same content)"
    typer.echo(f"{verb} {record.ref} {record.content_hash}")
    if not created:
        added = {k: v for k, v in record.tags.items() if before.get(record.content_hash, {}).get(k) != v}
        if added:
            typer.echo(f"tags added: {_tags(added)} (content never changes; tags may: packager update)")


def _tags(tags: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in tags.items()) or "none"


def _tag_pairs(items: list[str] | None) -> dict[str, str]:
    tags = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--tag {item!r}: expected key=value")
        tags[key] = value
    return tags


@app.command()
def update(
    reference: Annotated[str, typer.Argument(help="name:version")],
    tag: Annotated[list[str] | None, typer.Option(help="Tag as key=value to set; repeatable.")] = None,
    remove_tag: Annotated[list[str] | None, typer.Option(help="Tag key to remove; repeatable.")] = None,
    registry: RegistryOption = None,
) -> None:
    """Change the tags of a registered version (its content never changes), as az ml model update --set tags."""
    record = Registry(default_registry_root(registry)).update_tags(reference, _tag_pairs(tag), remove_tag or [])
    typer.echo(f"{record.ref} tags: {_tags(record.tags)}")


model_app = typer.Typer(help="Bare models, as az ml model registers them (deployments name them azureml:NAME:VERSION).",
                        no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("create")
def model_create(
    file: Annotated[Path, typer.Option("--file", "-f", help="Azure ML model YAML (name, version, path, ...).")],
    registry: RegistryOption = None,
) -> None:
    """Register a model folder or file with no code, from Azure's model YAML (as az ml model create)."""
    spec = load_azure_model(file)
    model_path = (file.parent / spec.path).resolve()
    with bare_model(model_path, spec.name, str(file.resolve())) as package:
        record, created = Registry(default_registry_root(registry)).register(
            package, version=spec.version, tags=spec.tags, description=spec.description, asset="model")
    verb = "registered model" if created else "already registered (same content)"
    typer.echo(f"{verb} {record.ref} {record.content_hash}")


@model_app.command("list")
def model_list(registry: RegistryOption = None) -> None:
    """List registered bare models."""
    records = [r for r in Registry(default_registry_root(registry)).list() if r.asset == "model"]
    for r in records:
        typer.echo(f"{r.name:<28} {r.version:>7}  {r.created:%Y-%m-%d %H:%M:%S}  {_tags(r.tags)}")
    if not records:
        typer.echo("no registered models")


@model_app.command("show")
def model_show(reference: Annotated[str, typer.Argument(help="name or name:version")],
               registry: RegistryOption = None) -> None:
    """Show one registered model as JSON."""
    typer.echo(json.dumps(Registry(default_registry_root(registry)).resolve(reference).model_dump(mode="json"), indent=2))


@app.command("list")
def list_(registry: RegistryOption = None) -> None:
    """List registered model versions."""
    records = Registry(default_registry_root(registry)).list()
    if not records:
        typer.echo("no registered models")
        return
    typer.echo(f"{'NAME':<28} {'VERSION':>7}  {'CREATED':<20} {'HASH':<19} TAGS")
    for r in records:
        tags = ",".join(f"{k}={v}" for k, v in r.tags.items())
        typer.echo(f"{r.name:<28} {r.version:>7}  {r.created:%Y-%m-%d %H:%M:%S}  {r.content_hash[7:25]} {tags}")


@app.command()
def show(
    reference: Annotated[str, typer.Argument(help="name or name:version")], registry: RegistryOption = None,
    environments: EnvironmentsOption = None,
) -> None:
    """Show one registered version as JSON (with its environment's lock and build log, if it has one)."""
    reg = Registry(default_registry_root(registry))
    record = reg.resolve(reference)
    shown = record.model_dump(mode="json")
    lock = reg.path_of(record) / ENVIRONMENT_DIR / LOCK_FILE
    if lock.is_file():
        text = lock.read_text(encoding="utf-8")
        shown["environment_lock"] = [line for line in text.splitlines() if line and not line.lstrip().startswith("#")]
        built = built_from_lock(text, environments or default_environments_root())
        if built is not None:
            shown["environment"] = {"key": built.name, "path": str(built),
                                    "build_log": (built / "build.log").read_text(encoding="utf-8").splitlines()}
    typer.echo(json.dumps(shown, indent=2))


@app.command()
def build(
    source: SourceArgument,
    repository: Annotated[Path, typer.Option("--repository", "-r", help="Triton model repository.")] = Path(
        "model_repository"
    ),
    name: Annotated[str | None, typer.Option("--name", help="Entry name (default: NAME-vVERSION).")] = None,
    registry: RegistryOption = None,
    set_: SetOption = None,
    environments: EnvironmentsOption = None,
) -> None:
    """Build SOURCE into a Triton model-repository entry (staged, then moved into place), with its own
    Python environment if it declares one."""
    with _stage(source, registry, set_) as package:
        built = pipeline.build(package, repository, entry=name, environment=_environment(environments))
    state = "built" if built.changed else "unchanged"
    where = f", environment {built.manifest.environment}" if built.manifest.environment else ""
    typer.echo(f"{state} {built.path} ({built.manifest.name}:{built.manifest.version}{where})")


@app.command("test")
def test_(
    source: SourceArgument,
    request_file: Annotated[Path | None, typer.Option(help="Request body (default: sample-request.json).")] = None,
    content_type: Annotated[str, typer.Option(help="Content-Type of the request.")] = "application/json",
    registry: RegistryOption = None,
    environments: EnvironmentsOption = None,
) -> None:
    """Serve SOURCE on a real embedded Triton, send one request, print the answer and the entry's log."""
    with _stage(source, registry) as package:
        body = request_body_for(package, request_file)
        built = pipeline.prepare_environment(package, _environment(environments))
        outcome = run_package_test(package, body, content_type, built)
    if outcome.log_tail:
        typer.echo("--- entry log (tail) ---", err=True)
        typer.echo(outcome.log_tail, err=True)
        typer.echo("---", err=True)
    if outcome.stage == "load":
        _fail(f"{package.name} failed to load: {outcome.body}", 1)
    typer.echo(f"HTTP {outcome.status}")
    typer.echo(outcome.body)
    if not outcome.passed:
        _fail(f"{package.name} answered {outcome.status}", 1)
    typer.secho(f"passed: {package.name}", fg=typer.colors.GREEN, err=True)


environment_app = typer.Typer(help="Python environments: registered (az ml environment create) and built (the cache).",
                               no_args_is_help=True)
app.add_typer(environment_app, name="environment")


@environment_app.command("create")
def environment_create(
    file: Annotated[Path, typer.Option("--file", "-f", help="Azure ML environment YAML (name, version, conda_file, image).")],
    registry: RegistryOption = None,
) -> None:
    """Register an environment from Azure's environment YAML; deployments name it azureml:NAME:VERSION."""
    asset, created = EnvironmentAssets(default_registry_root(registry)).create(file)
    verb = "registered environment" if created else "already registered (same content)"
    typer.echo(f"{verb} {asset.ref}")


def _size(count: int) -> str:
    return f"{count / 1024 / 1024:.1f} MiB"


@environment_app.command("list")
def environment_list(registry: RegistryOption = None, environments: EnvironmentsOption = None,
                     output: OutputOption = "table") -> None:
    """List registered environments and the built ones in the cache, with their disk use."""
    assets = EnvironmentAssets(default_registry_root(registry)).list()
    root = environments or default_environments_root()
    built = environment_entries(root)
    if output == "json":
        typer.echo(json.dumps({"registered": [a.model_dump(mode="json") for a in assets],
                               "built": built, "cache": str(root),
                               "bytes": sum(int(b["bytes"]) for b in built)}, indent=2))
        return
    typer.echo("registered:" if assets else "registered: none")
    for a in assets:
        typer.echo(f"  {a.ref:<40} {a.created:%Y-%m-%d %H:%M:%S}  {a.conda_file or '-'}  {a.image or ''}")
    typer.echo(f"built in {root}: {len(built)}, {_size(sum(int(b['bytes']) for b in built))}")
    for b in built:
        typer.echo(f"  {b['key']}  {_size(int(b['bytes'])):>10}  {b['built']}  {', '.join(b['installed']) or '(layered only)'}")


@environment_app.command("show")
def environment_show(reference: Annotated[str, typer.Argument(help="azureml:NAME:VERSION, or a built environment's key")],
                     registry: RegistryOption = None, environments: EnvironmentsOption = None) -> None:
    """Show a registered environment, or a built one (its record, lock and build log's tail), as JSON."""
    root = environments or default_environments_root()
    for record in environment_entries(root):
        if record["key"] == reference or record["key"].startswith(reference) and len(reference) >= 6:
            folder = Path(record["path"])
            record["lock"] = (folder / LOCK_FILE).read_text(encoding="utf-8").splitlines()
            record["build_log_tail"] = (folder / "build.log").read_text(encoding="utf-8").splitlines()[-20:]
            typer.echo(json.dumps(record, indent=2))
            return
    asset = EnvironmentAssets(default_registry_root(registry)).resolve(reference)
    typer.echo(json.dumps(asset.model_dump(mode="json"), indent=2))


@environment_app.command("prune")
def environment_prune(
    repository: Annotated[list[Path] | None, typer.Option(
        "--repository", "-r", help="Repositories whose entries keep their environment (repeatable; default: "
        "model_repository and the gateway's state: <state>/deployments, <state>/built).")] = None,
    state_dir: Annotated[Path, typer.Option(help="The gateway's state folder.")] = Path(".turnout/gateway"),
    environments: EnvironmentsOption = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would be removed, remove nothing.")] = False,
) -> None:
    """Remove built environments that no entry uses."""
    root = environments or default_environments_root()
    repositories = repository or [Path("model_repository"), state_dir / "deployments", state_dir / "built"]
    if dry_run:
        users = environments_used_by(repositories)
        unused = [r for r in environment_entries(root) if r["key"] not in users]
        for r in unused:
            typer.echo(f"would remove {r['key']} ({_size(int(r['bytes']))})")
        typer.echo(f"{len(unused)} unused, {_size(sum(int(r['bytes']) for r in unused))}")
        return
    removed = prune_environments(root, repositories)
    for r in removed:
        typer.echo(f"removed {r['key']} ({_size(int(r['bytes']))})")
    typer.echo(f"{len(removed)} removed, {_size(sum(int(r['bytes']) for r in removed))} freed")


def main() -> None:
    scratch.sweep()  # stages a killed packager left in the temporary directory
    try:
        app()
    except TurnoutError as exc:
        tail = exc.details.get("log_tail") if isinstance(exc.details, dict) else None
        if tail:
            typer.echo(f"--- log (tail) ---\n{str(tail).rstrip()}\n---", err=True)
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        sys.exit(2)

"""``packager``: turn a model + score.py into a registered version and a Triton repository entry."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from packager import pipeline, scratch
from packager.inspection import Inspection, inspect_package
from packager.package import StagedPackage
from packager.registry import Registry, default_registry_root
from packager.scaffold import scaffold
from packager.sources import bare_model
from packager.spec import apply_overrides, load_azure_model
from packager.testing import request_body_for, run_package_test
from turnout.errors import TurnoutError

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
def validate(source: SourceArgument, registry: RegistryOption = None, set_: SetOption = None) -> None:
    """Load the scoring script with the backend's loader (in a subprocess) and report its mode."""
    with _stage(source, registry, set_) as package:
        result = inspect_package(package)
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
) -> None:
    """Register an immutable name:version (the same content twice gives the same version)."""
    tags = _tag_pairs(tag)
    reg = Registry(default_registry_root(registry))
    with _stage(source, registry, set_) as package:
        before = {r.content_hash: r.tags for r in reg.versions(name or package.name)}
        try:
            record, created, inspection = pipeline.register(
                package, reg, validate=not skip_validation, name=name, version=version, tags=tags,
                description=description)
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
    reference: Annotated[str, typer.Argument(help="name or name:version")], registry: RegistryOption = None
) -> None:
    """Show one registered version as JSON."""
    record = Registry(default_registry_root(registry)).resolve(reference)
    typer.echo(json.dumps(record.model_dump(mode="json"), indent=2))


@app.command()
def build(
    source: SourceArgument,
    repository: Annotated[Path, typer.Option("--repository", "-r", help="Triton model repository.")] = Path(
        "model_repository"
    ),
    name: Annotated[str | None, typer.Option("--name", help="Entry name (default: NAME-vVERSION).")] = None,
    registry: RegistryOption = None,
    set_: SetOption = None,
) -> None:
    """Build SOURCE into a Triton model-repository entry (staged, then moved into place)."""
    with _stage(source, registry, set_) as package:
        built = pipeline.build(package, repository, entry=name)
    state = "built" if built.changed else "unchanged"
    typer.echo(f"{state} {built.path} ({built.manifest.name}:{built.manifest.version})")


@app.command("test")
def test_(
    source: SourceArgument,
    request_file: Annotated[Path | None, typer.Option(help="Request body (default: sample-request.json).")] = None,
    content_type: Annotated[str, typer.Option(help="Content-Type of the request.")] = "application/json",
    registry: RegistryOption = None,
) -> None:
    """Serve SOURCE on a real embedded Triton, send one request, print the answer and the entry's log."""
    with _stage(source, registry) as package:
        body = request_body_for(package, request_file)
        outcome = run_package_test(package, body, content_type)
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


def main() -> None:
    scratch.sweep()  # stages a killed packager left in the temporary directory
    try:
        app()
    except TurnoutError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        sys.exit(2)

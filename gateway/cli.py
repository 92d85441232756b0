"""``gateway``: run the Turnout gateway, and drive it with the verbs of Azure's ``az ml online-endpoint``
and ``az ml online-deployment`` (same YAML files, same flags where they exist)."""

from __future__ import annotations

import inspect
import json
import logging
import sys
import threading
import time
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Optional, Union, get_args, get_origin

import typer
from pydantic import ValidationError

from gateway import cli_batch
from gateway.cli_common import DEFAULT_STATE, DEFAULT_URL, AdminKey, GatewayUrl, Output, StateDir, package_archive
from gateway.cli_common import admin_client as _client
from gateway.cli_common import fail as _fail
from gateway.cli_common import show as _print
from gateway.client import AdminClient
from gateway.schemas import AZURE_ENDPOINT_IGNORED, DeploymentSpec, EndpointSpec, RequestSettings
from packager.spec import apply_overrides, format_validation, load_azure_deployment, read_yaml
from turnout.errors import BadInput, TurnoutError

app = typer.Typer(help=(__doc__ or "").replace("``", ""), no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
endpoint_app = typer.Typer(help="Online endpoints: a stable scoring URL over deployments.", no_args_is_help=True)
deployment_app = typer.Typer(help="Deployments: a model version serving behind an endpoint.", no_args_is_help=True)
model_app = typer.Typer(help="Models in the gateway's repository.", no_args_is_help=True)
app.add_typer(endpoint_app, name="endpoint")
app.add_typer(deployment_app, name="deployment")
app.add_typer(model_app, name="model")
app.add_typer(cli_batch.endpoint_app, name="batch-endpoint")
app.add_typer(cli_batch.deployment_app, name="batch-deployment")
app.add_typer(cli_batch.job_app, name="job")

Name = Annotated[str, typer.Option("--name", "-n", help="Endpoint name.")]
EndpointName = Annotated[str, typer.Option("--endpoint-name", "-e", help="Endpoint name.")]
DeploymentName = Annotated[str, typer.Option("--name", "-n", help="Deployment name.")]


def _pairs(text: str, option: str) -> dict[str, int]:
    """ "blue=90 green=10" (Azure's format; commas work too) -> {"blue": 90, "green": 10}."""
    pairs: dict[str, int] = {}
    for item in text.replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or not name or not value.lstrip("-").isdigit():
            _fail(f"{option} {text!r}: expected NAME=PERCENT pairs such as \"blue=90 green=10\"", 2)
        pairs[name] = int(value)
    return pairs


# --- serve -------------------------------------------------------------------------------------------


# Option names that differ from their settings field (kept from the first release).
_SERVE_FLAGS = {"state_dir": "--state", "nodes_file": "--nodes"}


def _serve_parameters() -> list[inspect.Parameter]:
    """One ``gateway serve`` option per GatewaySettings field: its help and default come from the model
    (the one place they are written), and an option left out leaves the field to TURNOUT_<FIELD> or its
    default."""
    from gateway.settings import GatewaySettings

    parameters = []
    for name, field in GatewaySettings.model_fields.items():
        flag = _SERVE_FLAGS.get(name, "--" + name.replace("_", "-"))
        annotation: Any = field.annotation
        default = field.get_default(call_default_factory=True)
        if annotation is bool:
            flag = f"{flag}/--no-{flag[2:]}"
        elif get_origin(annotation) is dict:
            annotation = str  # JSON, as the environment variable takes it
        elif get_origin(annotation) in (Union, UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        shown = "none" if default is None else json.dumps(default) if isinstance(default, dict) else default
        help_text = f"{field.description} (env TURNOUT_{name.upper()}; default: {shown})"
        option = typer.Option(flag, help=help_text, show_default=False)
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[Optional[annotation], option]))  # noqa: UP045
    return parameters


def serve(**given: Any) -> None:
    """Run the gateway (and, without --nodes, an embedded Triton on the repository)."""
    from pydantic import ValidationError

    from gateway import http_server
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    options = {k: v for k, v in given.items() if v is not None}
    if isinstance(options.get("instance_type_pools"), str):
        try:
            options["instance_type_pools"] = json.loads(options["instance_type_pools"])
        except ValueError as exc:
            _fail(f"--instance-type-pools: expected JSON such as '{{\"Standard_NC6\": \"gpu\"}}': {exc}", 2)
    try:
        settings = GatewaySettings(**options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        _fail(f"invalid gateway settings: {problems}", 2)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    typer.echo(f"Turnout gateway on http://{settings.host}:{settings.port} "
               f"(repository {settings.repository}, state {settings.state_dir})")
    typer.echo(f"admin key: {settings.state_dir / 'admin.key'}" if settings.admin_key is None
               else "admin key: from --admin-key")
    if settings.allow_anonymous:
        typer.secho("dev mode: model URLs answer without a key", fg=typer.colors.YELLOW)
    http_server.serve(create_app(settings), settings, log_level=settings.log_level, access_log=False,
                      timeout_graceful_shutdown=30)


serve.__signature__ = inspect.Signature(_serve_parameters())  # type: ignore[attr-defined]
app.command()(serve)


# --- endpoints ---------------------------------------------------------------------------------------


@endpoint_app.command("create")
def endpoint_create(
    file: Annotated[Path, typer.Option("--file", "-f", help="Azure endpoint YAML (name, auth_mode).")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Override the YAML's name.")] = None,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
) -> None:
    """Create an endpoint from Azure's endpoint.yml."""
    data = read_yaml(file)
    ignored = sorted(k for k in data if k in AZURE_ENDPOINT_IGNORED and k != "$schema")
    spec_data = {k: v for k, v in data.items() if k not in AZURE_ENDPOINT_IGNORED}
    if name:
        spec_data["name"] = name
    if ignored:
        typer.secho(f"warning: ignored Azure keys (not used by Turnout): {', '.join(ignored)}",
                    fg=typer.colors.YELLOW, err=True)
    try:
        spec = EndpointSpec.model_validate(spec_data)
    except ValidationError as exc:
        _fail(format_validation(exc, file), 2)
    _print(_client(gateway_url, admin_key, state).post("/admin/endpoints", spec.model_dump()))


@endpoint_app.command("update")
def endpoint_update(
    name: Name,
    traffic: Annotated[str | None, typer.Option(help='Traffic weights, e.g. "blue=90 green=10".')] = None,
    mirror_traffic: Annotated[str | None, typer.Option(help='Mirror, e.g. "green=20" (at most 50).')] = None,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
) -> None:
    """Change traffic weights and mirror traffic (applied atomically)."""
    body: dict[str, Any] = {}
    if traffic is not None:
        body["traffic"] = _pairs(traffic, "--traffic")
    if mirror_traffic is not None:
        body["mirror_traffic"] = _pairs(mirror_traffic, "--mirror-traffic")
    if not body:
        _fail("nothing to update: give --traffic and/or --mirror-traffic", 2)
    _print(_client(gateway_url, admin_key, state).patch(f"/admin/endpoints/{name}", body))


@endpoint_app.command("show")
def endpoint_show(name: Name, gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                  state: StateDir = DEFAULT_STATE, output: Output = "json") -> None:
    """Show an endpoint: auth mode, traffic, mirror traffic, scoring and OpenAPI URLs, deployments."""
    _print(_client(gateway_url, admin_key, state).get(f"/admin/endpoints/{name}"), output)


@endpoint_app.command("list")
def endpoint_list(gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                  state: StateDir = DEFAULT_STATE, output: Output = "json") -> None:
    """List the gateway's endpoints."""
    _print(_client(gateway_url, admin_key, state).get("/admin/endpoints"), output)


@endpoint_app.command("delete")
def endpoint_delete(name: Name, gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                    state: StateDir = DEFAULT_STATE) -> None:
    """Delete an endpoint and all its deployments."""
    _client(gateway_url, admin_key, state).delete(f"/admin/endpoints/{name}")
    typer.echo(f"deleted endpoint {name}")


@endpoint_app.command("get-credentials")
def endpoint_credentials(name: Name, gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                         state: StateDir = DEFAULT_STATE) -> None:
    """Keys (auth_mode key) or a fresh token (auth_mode aml_token)."""
    _print(_client(gateway_url, admin_key, state).post(f"/admin/endpoints/{name}/credentials", {}))


@endpoint_app.command("regenerate-keys")
def endpoint_regenerate(
    name: Name, key_type: Annotated[str, typer.Option(help="primary or secondary")] = "primary",
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
) -> None:
    """Replace an endpoint's primary or secondary key (the other keeps working meanwhile)."""
    _print(_client(gateway_url, admin_key, state).post(f"/admin/endpoints/{name}/regenerate-keys",
                                                       {"key_type": key_type}))


@endpoint_app.command("invoke")
def endpoint_invoke(
    name: Name,
    request_file: Annotated[Path, typer.Option(help="JSON request body.")],
    deployment_name: Annotated[str | None, typer.Option(help="Pin one deployment.")] = None,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
) -> None:
    """Score a request on the endpoint; prints the answer (the serving deployment goes to stderr)."""
    try:
        body_bytes = request_file.read_bytes()
    except OSError as exc:
        _fail(f"--request-file {request_file}: {exc.strerror or exc}", 2)
    status, deployment, body = _client(gateway_url, admin_key, state).invoke(name, body_bytes, deployment_name)
    typer.echo(f"served by: {deployment}", err=True)
    typer.echo(body)
    if status >= 400:
        raise typer.Exit(1)


# --- deployments -------------------------------------------------------------------------------------


EndpointOverride = Annotated[str | None, typer.Option("--endpoint-name", "-e", help="Override the YAML's endpoint_name.")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="KEY=VALUE to change in the YAML before it is read, as az ml takes it (repeatable; dotted keys "
                  "reach nested ones: environment_variables.COLOR=red).")]


def _overrides(name: str | None, endpoint_name: str | None, sets: list[str] | None) -> dict[str, Any]:
    given = {k: v for k, v in (("name", name), ("endpoint_name", endpoint_name)) if v}
    return apply_overrides(given, sets or [])


def _deployment_archive(file: Path, name: str | None, endpoint_name: str | None,
                        sets: list[str] | None = None) -> tuple[DeploymentSpec, bytes]:
    overrides = _overrides(name, endpoint_name, sets)
    azure, ignored = load_azure_deployment(file, overrides)
    for key, option in (("endpoint_name", "-e NAME"), ("name", "-n NAME")):
        value = getattr(azure, key) or ""
        if value.startswith("<") and value.endswith(">"):  # Azure's docs ship files with placeholders
            _fail(f"{file}: {key} is the placeholder {value!r}: give {option} (or --set {key}=NAME)", 2)
    if ignored:
        typer.secho(f"warning: ignored Azure keys (not used by Turnout): {', '.join(ignored)}",
                    fg=typer.colors.YELLOW, err=True)
    endpoint = endpoint_name or azure.endpoint_name
    if not endpoint:
        _fail(f"{file}: no endpoint_name; give --endpoint-name", 2)
    settings = (RequestSettings.model_validate(azure.request_settings.model_dump(exclude_none=True))
                if azure.request_settings else None)
    spec = DeploymentSpec(
        name=name or azure.name, endpoint_name=endpoint, instance_type=azure.instance_type,
        instance_count=azure.instance_count, description=azure.description or "", tags=azure.tags,
        request_settings=settings, ignored_keys=ignored,
    )
    archive = package_archive(file, overrides, spec.model_dump_json())
    return spec, archive


def _put_deployment(file: Path, name: str | None, endpoint_name: str | None, all_traffic: bool,
                    client: AdminClient, sets: list[str] | None = None) -> None:
    spec, archive = _deployment_archive(file, name, endpoint_name, sets)
    typer.echo(f"deploying {spec.endpoint_name}/{spec.name} ({len(archive) / 1e6:.1f} MB) ...", err=True)
    done = threading.Event()
    printed = [0]  # build progress lines shown so far
    started = time.monotonic()
    watcher = threading.Thread(target=_show_progress, args=(client, spec, done, printed, started), daemon=True)
    watcher.start()
    try:
        answer = client.put_archive(f"/admin/endpoints/{spec.endpoint_name}/deployments/{spec.name}", archive,
                                    {"all_traffic": str(all_traffic).lower()})
    finally:
        done.set()
        watcher.join(2)
    for line in (answer.pop("build_progress", None) or [])[printed[0]:]:  # what the last poll did not see
        typer.echo(f"  {time.monotonic() - started:5.1f} s  environment {line}", err=True)
    _print(answer)


def _show_progress(client: AdminClient, spec: DeploymentSpec, done: threading.Event, shown_lines: list[int],
                   started: float) -> None:
    """While the gateway makes the deployment: its provisioning state and its environment's build, as they
    change, with the time."""
    last, printed = None, 0
    path = f"/admin/endpoints/{spec.endpoint_name}/deployments/{spec.name}"
    watching = AdminClient(client.url, client.admin_key, timeout=5)
    while not done.wait(0.1 if last is None else 1.0):
        try:
            shown = watching.get(path)
        except TurnoutError:
            continue
        progress = shown.get("build_progress") or []
        for line in progress[printed:]:
            typer.echo(f"  {time.monotonic() - started:5.1f} s  environment {line}", err=True)
        printed = shown_lines[0] = max(printed, len(progress))
        now = (shown.get("provisioning_state"), shown.get("state"), shown.get("reason"))
        if now != last:
            reason = f" ({now[2]})" if now[2] else ""
            typer.echo(f"  {time.monotonic() - started:5.1f} s  {now[0]}: {now[1]}{reason}", err=True)
            last = now


@deployment_app.command("create")
def deployment_create(
    file: Annotated[Path, typer.Option("--file", "-f", help="Azure ML CLI v2 deployment YAML.")],
    all_traffic: Annotated[bool, typer.Option("--all-traffic", help="Send 100% of traffic to it.")] = False,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Override the YAML's name.")] = None,
    endpoint_name: EndpointOverride = None,
    set_: SetOption = None,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
) -> None:
    """Create a deployment from Azure's deployment YAML; it takes traffic only once ready."""
    _put_deployment(file, name, endpoint_name, all_traffic, _client(gateway_url, admin_key, state), set_)


@deployment_app.command("update")
def deployment_update(
    file: Annotated[Path, typer.Option("--file", "-f", help="Azure ML CLI v2 deployment YAML.")],
    name: Annotated[str | None, typer.Option("--name", "-n")] = None,
    endpoint_name: EndpointOverride = None,
    set_: SetOption = None,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
) -> None:
    """Roll a deployment to new code, model or instance count: load, ready, switch, drain, unload."""
    _put_deployment(file, name, endpoint_name, False, _client(gateway_url, admin_key, state), set_)


@deployment_app.command("show")
def deployment_show(name: DeploymentName, endpoint_name: EndpointName, gateway_url: GatewayUrl = DEFAULT_URL,
                    admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE, output: Output = "json") -> None:
    """Show a deployment: model, generation, nodes, state (and why, when it failed)."""
    _print(_client(gateway_url, admin_key, state).get(f"/admin/endpoints/{endpoint_name}/deployments/{name}"), output)


@deployment_app.command("list")
def deployment_list(endpoint_name: EndpointName, gateway_url: GatewayUrl = DEFAULT_URL,
                    admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE, output: Output = "json") -> None:
    """List an endpoint's deployments."""
    _print(_client(gateway_url, admin_key, state).get(f"/admin/endpoints/{endpoint_name}/deployments"), output)


@deployment_app.command("delete")
def deployment_delete(name: DeploymentName, endpoint_name: EndpointName, gateway_url: GatewayUrl = DEFAULT_URL,
                      admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE) -> None:
    """Delete a deployment that takes no traffic (shift its traffic to 0 first)."""
    _client(gateway_url, admin_key, state).delete(f"/admin/endpoints/{endpoint_name}/deployments/{name}")
    typer.echo(f"deleted deployment {endpoint_name}/{name}")


@deployment_app.command("get-logs")
def deployment_logs(
    name: DeploymentName, endpoint_name: EndpointName,
    lines: Annotated[int, typer.Option("--lines", "-l", help="How many lines per node.")] = 200,
    build: Annotated[bool, typer.Option("--build", help="Its environment's build log (resolve, install, times).")] = False,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
) -> None:
    """The deployment's own log: its script's output and Turnout's backend lines (--build: its environment's)."""
    typer.echo(_client(gateway_url, admin_key, state).text(
        f"/admin/endpoints/{endpoint_name}/deployments/{name}/logs",
        {"lines": str(lines), **({"build": "true"} if build else {})}))


@model_app.command("list")
def model_list(gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
               state: StateDir = DEFAULT_STATE, output: Output = "json") -> None:
    """Every model in the repository with its state (ready, loading, failed + reason)."""
    _print(_client(gateway_url, admin_key, state).get("/models"), output)


def main() -> None:
    try:
        app()
    except TurnoutError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        details = exc.details.get("log_tail") if exc.details else None
        if details:
            typer.echo(f"--- log tail ---\n{details}", err=True)
        sys.exit(1 if not isinstance(exc, BadInput) else 2)

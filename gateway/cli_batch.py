"""``gateway batch-endpoint``, ``gateway batch-deployment`` and ``gateway job``: Azure's ``az ml`` batch verbs,
with its YAML files and flags (``--set``, ``--query NAME -o tsv`` as its scripts use them)."""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from gateway.cli_common import DEFAULT_STATE, DEFAULT_URL, AdminKey, GatewayUrl, StateDir, admin_client, fail, show
from gateway.client import AdminClient
from gateway.schemas import AZURE_BATCH_ENDPOINT_IGNORED, BatchDeploymentSpec, BatchEndpointSpec, BatchEndpointUpdate
from packager.sources import safe_extract
from packager.spec import apply_overrides, format_validation, load_azure_deployment, load_yaml, read_yaml
from turnout.errors import TurnoutError

endpoint_app = typer.Typer(help="Batch endpoints: jobs over folders of files, run by batch deployments.",
                           no_args_is_help=True)
deployment_app = typer.Typer(help="Batch deployments: a scoring script's run(mini_batch) on Triton nodes.",
                             no_args_is_help=True)
job_app = typer.Typer(help="Batch jobs: show, stream, cancel, logs, download.", no_args_is_help=True)

Name = Annotated[str, typer.Option("--name", "-n", help="Batch endpoint name.")]
EndpointName = Annotated[str, typer.Option("--endpoint-name", "-e", help="Batch endpoint name.")]
JobName = Annotated[str, typer.Option("--name", "-n", help="Job name.")]
Output = Annotated[str, typer.Option("--output", "-o", help="json, table or tsv, as az ml's -o.")]
Query = Annotated[str | None, typer.Option("--query", help="A field to print (dotted: outputs.score.file), "
                                                          "as az ml's --query NAME.")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE (repeatable), as az ml takes it.")]
FINISHED = ("Completed", "Failed", "Canceled")


def _select(value: Any, query: str | None) -> Any:
    for part in (query or "").split(".") if query else ():
        if isinstance(value, list):
            value = [item.get(part) if isinstance(item, dict) else None for item in value]
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            fail(f"--query {query!r}: {part!r} is not a field here", 2)
    return value


def _emit(value: Any, output: str, query: str | None) -> None:
    value = _select(value, query)
    if output == "tsv":
        rows = value if isinstance(value, list) else [value]
        for row in rows:
            typer.echo("\t".join(map(str, row.values())) if isinstance(row, dict) else ("" if row is None else str(row)))
    else:
        show(value, output)


# --- batch endpoints ---------------------------------------------------------------------------------


@endpoint_app.command("create")
def endpoint_create(
    file: Annotated[Path, typer.Option("--file", "-f", help="Azure batch endpoint YAML.")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Override the YAML's name.")] = None,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
    output: Output = "json", query: Query = None,
) -> None:
    """Create a batch endpoint from Azure's batch endpoint YAML."""
    data = read_yaml(file)
    ignored = sorted(k for k in data if k in AZURE_BATCH_ENDPOINT_IGNORED and k != "$schema")
    if ignored:
        typer.secho(f"warning: ignored Azure keys (not used by Turnout): {', '.join(ignored)}",
                    fg=typer.colors.YELLOW, err=True)
    body = {k: v for k, v in data.items() if k not in AZURE_BATCH_ENDPOINT_IGNORED}
    if name:
        body["name"] = name
    try:
        spec = BatchEndpointSpec.model_validate(body)
    except ValidationError as exc:
        fail(format_validation(exc, file), 2)
    if str(data.get("auth_mode", "aad_token")).replace("_", "").lower() == "aadtoken":
        typer.secho("note: auth_mode aad_token is served as Turnout's own token (aml_token): "
                    "'gateway batch-endpoint get-credentials' gives one", err=True)
    _emit(admin_client(gateway_url, admin_key, state).post("/admin/batch-endpoints", spec.model_dump()), output, query)


@endpoint_app.command("update")
def endpoint_update(
    name: Name, set_: Sets = None,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
) -> None:
    """Change the default deployment (--set defaults.deployment_name=D), description or tags."""
    try:
        update = BatchEndpointUpdate.model_validate(apply_overrides({}, set_ or []))
    except ValidationError as exc:
        fail(format_validation(exc, Path("--set")), 2)
    if not update.model_dump(exclude_none=True):
        fail("nothing to update: give --set defaults.deployment_name=NAME (or description=..., tags.KEY=...)", 2)
    show(admin_client(gateway_url, admin_key, state).patch(f"/admin/batch-endpoints/{name}",
                                                      update.model_dump(exclude_none=True)))


@endpoint_app.command("show")
def endpoint_show(name: Name, gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                  state: StateDir = DEFAULT_STATE, output: Output = "json", query: Query = None) -> None:
    """Show a batch endpoint: its default deployment, deployments and invoke URL."""
    _emit(admin_client(gateway_url, admin_key, state).get(f"/admin/batch-endpoints/{name}"), output, query)


@endpoint_app.command("list")
def endpoint_list(gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
                  output: Output = "json", query: Query = None) -> None:
    """List the batch endpoints."""
    _emit(admin_client(gateway_url, admin_key, state).get("/admin/batch-endpoints"), output, query)


@endpoint_app.command("delete")
def endpoint_delete(name: Name, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (az ml's flag).")] = False,
                    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                    state: StateDir = DEFAULT_STATE) -> None:
    """Delete a batch endpoint and its deployments (its jobs' records and outputs stay)."""
    admin_client(gateway_url, admin_key, state).delete(f"/admin/batch-endpoints/{name}")
    typer.echo(f"deleted batch endpoint {name}")


@endpoint_app.command("get-credentials")
def endpoint_credentials(name: Name, gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                         state: StateDir = DEFAULT_STATE) -> None:
    """Keys (auth_mode key) or a fresh token (aad_token / aml_token) for REST invokes."""
    show(admin_client(gateway_url, admin_key, state).post(f"/admin/batch-endpoints/{name}/credentials", {}))


@endpoint_app.command("list-jobs")
def endpoint_jobs(name: Name, gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                  state: StateDir = DEFAULT_STATE, output: Output = "json", query: Query = None) -> None:
    """The endpoint's jobs, oldest first."""
    _emit(admin_client(gateway_url, admin_key, state).get(f"/admin/jobs?endpoint={name}"), output, query)


@endpoint_app.command("invoke")
def endpoint_invoke(
    name: Name,
    input_: Annotated[str, typer.Option("--input", "-i", help="A folder (read recursively), a file, or a glob.")],
    input_type: Annotated[str | None, typer.Option(help="uri_folder or uri_file (default: what the path is).")] = None,
    deployment_name: Annotated[str | None, typer.Option("--deployment-name", "-d", help="Not the default one.")] = None,
    job_name: Annotated[str | None, typer.Option(help="Name the job (an idempotent submit).")] = None,
    output_path: Annotated[str | None, typer.Option(help="Folder for the output file (default: the job's).")] = None,
    mini_batch_size: Annotated[int | None, typer.Option(help="Files per run() call, for this job.")] = None,
    instance_count: Annotated[int | None, typer.Option(help="Instances for this job.")] = None,
    set_: Sets = None,
    stream: Annotated[bool, typer.Option("--stream", help="Follow the job to its end with a progress bar.")] = False,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
    output: Output = "json", query: Query = None,
) -> None:
    """Start a job over the input's files (paths are the gateway's: a local path is made absolute here)."""
    sets: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set {item!r}: expected KEY=VALUE, e.g. --set settings.error_threshold=5 or --set overwrite=true", 2)
        sets[key.strip()] = load_yaml(value) if value else ""
    body = {"input": _absolute(input_), "input_type": input_type, "deployment_name": deployment_name,
            "job_name": job_name, "output_path": _absolute(output_path) if output_path else None,
            "mini_batch_size": mini_batch_size, "instance_count": instance_count, "set": sets}
    client = admin_client(gateway_url, admin_key, state)
    job = client.post(f"/batch-endpoints/{name}/jobs", {k: v for k, v in body.items() if v is not None})
    if stream:
        typer.echo(f"job {job['name']}: {job['files_total']} files in {job['mini_batches_total']} mini-batches",
                   err=True)
        job = _follow(client, job["name"])
    _emit(job, output, query)
    if stream and job["status"] != "Completed":
        raise typer.Exit(1)


def _absolute(path: str) -> str:
    if "://" in path:
        fail(f"--input {path!r}: Turnout reads inputs from the gateway's file system (a folder, a file or a "
             "glob); copy the data there first", 2)
    given = Path(path).expanduser()
    return str(given if given.is_absolute() else Path.cwd() / given)


# --- batch deployments -------------------------------------------------------------------------------


@deployment_app.command("create")
def deployment_create(
    file: Annotated[Path, typer.Option("--file", "-f", help="Azure batch deployment YAML.")],
    endpoint_name: Annotated[str | None, typer.Option("--endpoint-name", "-e", help="Override endpoint_name.")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Override the YAML's name.")] = None,
    set_default: Annotated[bool, typer.Option("--set-default", help="Make it the endpoint's default.")] = False,
    set_: Sets = None,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
) -> None:
    """Create (or update) a batch deployment from Azure's batch deployment YAML."""
    _put_deployment(file, endpoint_name, name, set_default, set_, admin_client(gateway_url, admin_key, state))


@deployment_app.command("update")
def deployment_update(
    file: Annotated[Path, typer.Option("--file", "-f", help="Azure batch deployment YAML.")],
    endpoint_name: Annotated[str | None, typer.Option("--endpoint-name", "-e")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n")] = None,
    set_: Sets = None,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
) -> None:
    """Roll a batch deployment to new code, model or settings (jobs running go on with the new one)."""
    _put_deployment(file, endpoint_name, name, False, set_, admin_client(gateway_url, admin_key, state))


def _put_deployment(file: Path, endpoint_name: str | None, name: str | None, set_default: bool,
                    sets: list[str] | None, client: AdminClient) -> None:
    from gateway.cli_common import package_archive

    overrides = apply_overrides({k: v for k, v in (("name", name), ("endpoint_name", endpoint_name)) if v}, sets or [])
    azure, ignored = load_azure_deployment(file, overrides)
    if not azure.is_batch:
        fail(f"{file} is an online deployment (no 'settings:', no batchDeployment $schema): "
             "use 'gateway deployment create'", 2)
    endpoint = endpoint_name or azure.endpoint_name
    if not endpoint or (endpoint.startswith("<") and endpoint.endswith(">")):
        fail(f"{file}: no endpoint_name; give --endpoint-name", 2)
    raw = read_yaml(file)
    compute = raw.get("compute")
    shown = [k for k in ignored if k != "compute"]
    if shown:
        typer.secho(f"warning: ignored Azure keys (not used by Turnout): {', '.join(shown)}",
                    fg=typer.colors.YELLOW, err=True)
    if compute:
        typer.secho(f"note: compute {compute} is recorded, not used: Turnout runs batch deployments on its "
                    "Triton nodes (instance_type picks the pool)", err=True)
    spec = BatchDeploymentSpec(name=name or azure.name, endpoint_name=endpoint, instance_type=azure.instance_type,
                               instance_count=azure.instance_count, description=azure.description or "",
                               tags=azure.tags, compute=str(compute) if compute else None, ignored_keys=ignored)
    archive = package_archive(file, overrides, spec.model_dump_json())
    typer.echo(f"deploying batch deployment {spec.endpoint_name}/{spec.name} ({len(archive) / 1e6:.1f} MB) ...",
               err=True)
    show(client.put_archive(f"/admin/batch-endpoints/{spec.endpoint_name}/deployments/{spec.name}", archive,
                            {"set_default": str(set_default).lower()}))


@deployment_app.command("show")
def deployment_show(name: Annotated[str, typer.Option("--name", "-n")], endpoint_name: EndpointName,
                    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                    state: StateDir = DEFAULT_STATE, output: Output = "json", query: Query = None) -> None:
    """Show a batch deployment: model, settings, nodes, state."""
    _emit(admin_client(gateway_url, admin_key, state).get(f"/admin/batch-endpoints/{endpoint_name}/deployments/{name}"),
          output, query)


@deployment_app.command("list")
def deployment_list(endpoint_name: EndpointName, gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                    state: StateDir = DEFAULT_STATE, output: Output = "json", query: Query = None) -> None:
    """List a batch endpoint's deployments."""
    _emit(admin_client(gateway_url, admin_key, state).get(f"/admin/batch-endpoints/{endpoint_name}/deployments"),
          output, query)


@deployment_app.command("delete")
def deployment_delete(name: Annotated[str, typer.Option("--name", "-n")], endpoint_name: EndpointName,
                      yes: Annotated[bool, typer.Option("--yes", "-y")] = False,
                      gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                      state: StateDir = DEFAULT_STATE) -> None:
    """Delete a batch deployment with no job running."""
    admin_client(gateway_url, admin_key, state).delete(f"/admin/batch-endpoints/{endpoint_name}/deployments/{name}")
    typer.echo(f"deleted batch deployment {endpoint_name}/{name}")


@deployment_app.command("list-jobs")
def deployment_jobs(name: Annotated[str, typer.Option("--name", "-n")], endpoint_name: EndpointName,
                    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                    state: StateDir = DEFAULT_STATE, output: Output = "json", query: Query = None) -> None:
    """The deployment's jobs, oldest first."""
    _emit(admin_client(gateway_url, admin_key, state).get(f"/admin/jobs?endpoint={endpoint_name}&deployment={name}"),
          output, query)


@deployment_app.command("get-logs")
def deployment_logs(name: Annotated[str, typer.Option("--name", "-n")], endpoint_name: EndpointName,
                    lines: Annotated[int, typer.Option("--lines", "-l")] = 200,
                    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
                    state: StateDir = DEFAULT_STATE) -> None:
    """The deployment's node log (its script's init and Turnout's backend lines)."""
    typer.echo(admin_client(gateway_url, admin_key, state).text(
        f"/admin/batch-endpoints/{endpoint_name}/deployments/{name}/logs", {"lines": str(lines)}))


# --- jobs --------------------------------------------------------------------------------------------


@job_app.command("show")
def job_show(name: JobName, gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
             state: StateDir = DEFAULT_STATE, output: Output = "json", query: Query = None) -> None:
    """A job's status, counts, rate, ETA, first error and outputs."""
    _emit(admin_client(gateway_url, admin_key, state).get(f"/jobs/{name}"), output, query)


@job_app.command("list")
def job_list(endpoint_name: Annotated[str | None, typer.Option("--endpoint-name", "-e")] = None,
             gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
             output: Output = "json", query: Query = None) -> None:
    """Every job (or one endpoint's), oldest first."""
    path = "/admin/jobs" + (f"?endpoint={endpoint_name}" if endpoint_name else "")
    _emit(admin_client(gateway_url, admin_key, state).get(path), output, query)


@job_app.command("stream")
def job_stream(name: JobName, gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
               state: StateDir = DEFAULT_STATE) -> None:
    """Follow a job with a progress bar to its end; exits 1 unless it Completed."""
    job = _follow(admin_client(gateway_url, admin_key, state), name)
    if job["status"] != "Completed":
        raise typer.Exit(1)


@job_app.command("cancel")
def job_cancel(name: JobName, gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
               state: StateDir = DEFAULT_STATE) -> None:
    """Start no new mini-batch; those in flight finish, then the job is Canceled."""
    show(admin_client(gateway_url, admin_key, state).post(f"/admin/jobs/{name}/cancel", {}))


@job_app.command("logs")
def job_logs(name: JobName, gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None,
             state: StateDir = DEFAULT_STATE) -> None:
    """The job's log, every failed file with its error and traceback, and the script's output per mini-batch."""
    typer.echo(admin_client(gateway_url, admin_key, state).text(f"/admin/jobs/{name}/logs"))


@job_app.command("download")
def job_download(
    name: JobName,
    download_path: Annotated[Path, typer.Option(help="Where named-outputs/ and logs/ go.")] = Path("."),
    output_name: Annotated[str | None, typer.Option(help="score (the output file), or leave out for all.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Outputs and logs (the default).")] = False,
    gateway_url: GatewayUrl = DEFAULT_URL, admin_key: AdminKey = None, state: StateDir = DEFAULT_STATE,
) -> None:
    """Fetch the job's outputs (named-outputs/score/) and logs (logs/), as az ml job download lays them out."""
    client = admin_client(gateway_url, admin_key, state)
    archive = client.raw(f"/admin/jobs/{name}/download")
    download_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "job.tar.gz").write_bytes(archive)
        safe_extract(Path(tmp) / "job.tar.gz", Path(tmp) / "job")
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            members = [m.name for m in tar.getmembers() if m.isfile()]
        for member in members:
            if output_name and not member.startswith(f"named-outputs/{output_name}/"):
                continue
            target = download_path / member
            target.parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / "job" / member).replace(target)
            typer.echo(str(target))


def _follow(client: AdminClient, name: str) -> dict[str, Any]:
    """A live progress bar until the job ends, then its summary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stderr)
    job: dict[str, Any] = client.get(f"/jobs/{name}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
               TimeElapsedColumn(), TextColumn("{task.fields[detail]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(name, total=job["files_total"], detail="")
        while True:
            done = job["files_succeeded"] + job["files_failed"]
            eta = f"ETA {job['eta_seconds']:.0f} s" if job.get("eta_seconds") is not None else ""
            detail = f"{job['status']}  failed {job['files_failed']}  {job['files_per_second']} files/s  {eta}"
            progress.update(task, completed=done, detail=detail)
            if job["status"] in FINISHED:
                break
            time.sleep(0.5)
            try:
                job = client.get(f"/jobs/{name}")
            except TurnoutError as exc:
                progress.update(task, detail=f"(gateway: {exc.message})")
    summary = (f"{job['status']}: {job['files_succeeded']} of {job['files_total']} files succeeded, "
               f"{job['files_failed']} failed, {job['mini_batches_retried']} mini-batches retried, "
               f"in {job['elapsed_seconds']:.1f} s")
    console.print(summary + (f"\n  {job['error']}" if job.get("error") else ""))
    if job.get("outputs", {}).get("score", {}).get("file"):
        console.print(f"  output: {job['outputs']['score']['file']}")
    return job

"""Batch endpoints, their deployments and jobs, free of any transport (Azure's ``az ml batch-endpoint``,
``batch-deployment`` and ``job`` verbs map onto these calls).

A batch deployment is an entry placed like an online one (gateway/deployments.py), on ``instance_count``
nodes with ``max_concurrency_per_instance`` model instances each; nothing routes online traffic to it. A job
is made whole at submit (its files listed, its mini-batches cut, all in one transaction) and then run by
gateway/batch_runner.py.
"""

from __future__ import annotations

import asyncio
import copy
import io
import logging
import os
import secrets
import tarfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.auth import AUTH_MODES, Credentials, check_endpoint_access, hash_key, new_key
from gateway.batch_files import cut, fingerprint, list_input
from gateway.batch_runner import BatchRunner, job_files
from gateway.batch_state import (
    FINISHED,
    MB_FAILED,
    QUEUED,
    RUNNING,
    BatchDeploymentRecord,
    BatchEndpointRecord,
    BatchStore,
    JobRecord,
)
from gateway.controlplane import ControlPlane, unpack_deployment_archive
from gateway.deployments import Deployments
from gateway.entries import EntryState
from gateway.schemas import BatchDeploymentSpec, BatchEndpointSpec, BatchEndpointUpdate, JobSpec
from gateway.settings import GatewaySettings
from packager import pipeline, scratch
from packager.naming import batch_deployment_entry, batch_deployment_model
from packager.registry import Registry
from packager.spec import BatchSettings, format_validation
from turnout.errors import BadInput, Conflict, DeploymentFailed, Forbidden, NotFound, NotReady, Unauthorized
from turnout.manifest import ScoringKind

log = logging.getLogger("turnout.gateway.batch")
# ``--set`` keys of a job that are not BatchSettings.
_JOB_ONLY_KEYS = ("overwrite",)


class BatchControl:
    def __init__(self, store: BatchStore, runner: BatchRunner, credentials: Credentials, registry: Registry,
                 deployments: Deployments, control: ControlPlane, settings: GatewaySettings) -> None:
        self.store, self.runner, self.credentials, self.registry = store, runner, credentials, registry
        self.deployments, self.control, self.settings = deployments, control, settings
        self.lock = asyncio.Lock()

    # --- lifecycle ---
    def live_entries(self) -> set[str]:
        return {d.entry for d in self.store.deployments()}

    async def restore(self) -> None:
        """After a restart: place every batch deployment again, then go on with unfinished jobs."""
        for record in self.store.deployments():
            entry = await self.deployments.place(record)
            record.nodes = [n.name for n in entry.nodes]
            record.state, record.reason = entry.state.value, entry.reason
            with self.store.transaction() as db:
                self.store.put_deployment(db, record)
        self.runner.resume()

    # --- lookups ---
    def _endpoint(self, name: str) -> BatchEndpointRecord:
        record = self.store.endpoint(name)
        if record is None:
            known = ", ".join(e.name for e in self.store.endpoints()) or "none"
            raise NotFound(f"no batch endpoint named {name!r} (batch endpoints: {known})")
        return record

    def _deployment(self, endpoint: str, name: str) -> BatchDeploymentRecord:
        self._endpoint(endpoint)
        record = self.store.deployment(endpoint, name)
        if record is None:
            known = ", ".join(d.name for d in self.store.deployments(endpoint)) or "none"
            raise NotFound(f"batch endpoint {endpoint!r} has no deployment {name!r} (deployments: {known})")
        return record

    def _job(self, name: str) -> JobRecord:
        record = self.store.job(name)
        if record is None:
            raise NotFound(f"no job named {name!r}")
        return record

    # --- views ---
    def endpoint_view(self, record: BatchEndpointRecord) -> dict[str, Any]:
        return {
            "name": record.name, "description": record.description, "tags": record.tags,
            "auth_mode": record.auth_mode, "defaults": {"deployment_name": record.default_deployment},
            "scoring_uri": f"{self.control.base_url}/batch-endpoints/{record.name}/jobs",
            "provisioning_state": "Succeeded",
            "deployments": [d.name for d in self.store.deployments(record.name)],
            "created": record.created.isoformat(), "updated": record.updated.isoformat(),
        }

    def deployment_view(self, record: BatchDeploymentRecord) -> dict[str, Any]:
        view = self.control.deployment_view(record)
        view.pop("ignored_keys", None)
        return {**view, "type": "model", "settings": BatchSettings.model_validate(record.settings).model_dump(mode="json"),
                "compute": record.compute, "compute_used": False if record.compute else None,
                "ignored_keys": record.ignored_keys}

    def job_view(self, record: JobRecord) -> dict[str, Any]:
        counts = self.store.counts(record.name)
        settings = BatchSettings.model_validate(record.settings)
        end = record.ended or datetime.now(UTC)
        elapsed = (end - record.started).total_seconds() if record.started else 0.0
        processed = counts.files_succeeded + counts.files_failed
        rate = processed / elapsed if elapsed > 0 else 0.0
        eta = counts.files_pending / rate if rate > 0 and record.status == RUNNING else None
        files = job_files(record)
        return {
            "name": record.name, "status": record.status, "endpoint_name": record.endpoint,
            "deployment_name": record.deployment, "input": record.input, "input_type": record.input_type,
            "files_total": record.files, "files_succeeded": counts.files_succeeded, "files_failed": counts.files_failed,
            "mini_batches_total": record.mini_batches, "mini_batches_done": counts.mini_batches_done,
            "mini_batches_failed": counts.mini_batches_failed, "mini_batches_retried": counts.mini_batches_retried,
            "files_per_second": round(rate, 2), "eta_seconds": None if eta is None else round(eta, 1),
            "elapsed_seconds": round(elapsed, 2), "error": record.error,
            "outputs": {"score": {"path": str(files.output_dir),
                                  "file": str(files.output_file) if settings.output_action == "append_row" else None}},
            "logs": str(files.logs), "settings": settings.model_dump(mode="json"),
            "instance_count": record.instance_count,
            "created": record.created.isoformat(),
            "started": record.started.isoformat() if record.started else None,
            "ended": record.ended.isoformat() if record.ended else None,
        }

    def list_endpoints(self) -> list[dict[str, Any]]:
        return [self.endpoint_view(r) for r in self.store.endpoints()]

    def get_endpoint(self, name: str) -> dict[str, Any]:
        return self.endpoint_view(self._endpoint(name))

    def list_deployments(self, endpoint: str) -> list[dict[str, Any]]:
        self._endpoint(endpoint)
        return [self.deployment_view(r) for r in self.store.deployments(endpoint)]

    def get_deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        return self.deployment_view(self._deployment(endpoint, name))

    def get_job(self, name: str) -> dict[str, Any]:
        return self.job_view(self._job(name))

    def job_endpoint(self, name: str) -> str:
        return self._job(name).endpoint

    def list_jobs(self, endpoint: str | None = None, deployment: str | None = None) -> list[dict[str, Any]]:
        if endpoint is not None:
            self._endpoint(endpoint)
        return [self.job_view(j) for j in self.store.jobs(endpoint)
                if deployment is None or j.deployment == deployment]

    # --- endpoints ---
    async def create_endpoint(self, spec: BatchEndpointSpec) -> dict[str, Any]:
        if spec.auth_mode not in AUTH_MODES:
            raise BadInput(f"auth_mode {spec.auth_mode!r} is not supported")
        if spec.auth_mode == "none" and not self.settings.allow_anonymous:
            raise BadInput("auth_mode none is for local development: start the gateway with --allow-anonymous")
        if spec.defaults.deployment_name:
            raise BadInput("a new batch endpoint has no deployments yet: leave defaults.deployment_name out, then "
                           "create the deployment with --set-default")
        async with self.lock:
            if self.store.endpoint(spec.name) is not None:
                raise Conflict(f"batch endpoint {spec.name!r} already exists (use 'gateway batch-endpoint update')")
            keys = [new_key(), new_key()]
            record = BatchEndpointRecord(
                name=spec.name, auth_mode=spec.auth_mode, description=spec.description, tags=spec.tags,
                key_hashes=[hash_key(k) for k in keys], sealed_keys=[self.credentials.seal(k) for k in keys],
                uid=secrets.token_hex(8))
            with self.store.transaction() as db:
                self.store.put_endpoint(db, record)
        return self.endpoint_view(record)

    async def update_endpoint(self, name: str, update: BatchEndpointUpdate) -> dict[str, Any]:
        async with self.lock:
            record = self._endpoint(name)
            if update.defaults is not None and update.defaults.deployment_name is not None:
                self._deployment(name, update.defaults.deployment_name)  # 404 names the known ones
                record.default_deployment = update.defaults.deployment_name
            if update.description is not None:
                record.description = update.description
            if update.tags is not None:
                record.tags = update.tags
            with self.store.transaction() as db:
                self.store.put_endpoint(db, record)
        return self.endpoint_view(record)

    def _refuse_if_busy(self, endpoint: str, deployment: str | None = None) -> None:
        busy = [j.name for j in self.store.jobs(endpoint, (QUEUED, RUNNING))
                if deployment is None or j.deployment == deployment]
        if busy:
            raise Conflict(f"jobs are still running on it: {', '.join(busy)}; cancel them first "
                           "('gateway job cancel -n NAME')")

    async def delete_endpoint(self, name: str) -> None:
        async with self.lock:
            self._endpoint(name)
            self._refuse_if_busy(name)
            deployments = self.store.deployments(name)
            with self.store.transaction() as db:
                self.store.delete_endpoint(db, name)
            for record in deployments:
                await self.deployments.retire(self.deployments.entry_of(record))

    def get_credentials(self, name: str) -> dict[str, Any]:
        record = self._endpoint(name)
        return self.credentials.endpoint_credentials(name, record.auth_mode, record.sealed_keys,
                                                     self.settings.token_ttl_seconds,
                                                     (record.uid, record.key_generation))

    def check_access(self, name: str, presented: str | None) -> BatchEndpointRecord:
        """The endpoint, if the credential opens it. An unknown one answers as a bad credential would (401),
        so names cannot be enumerated; only the admin key learns it does not exist."""
        record = self.store.endpoint(name)
        if record is None:
            if self.credentials.is_admin(presented):
                return self._endpoint(name)  # 404, naming the known ones
            raise Unauthorized(f"batch endpoint {name!r} needs 'Authorization: Bearer <key or token>'"
                               if presented is None else f"the credential is not valid for batch endpoint {name!r}")
        check_endpoint_access(self.credentials, name, record.auth_mode, tuple(record.key_hashes), presented,
                              (record.uid, record.key_generation))
        return record

    # --- deployments ---
    async def create_or_update_deployment(self, endpoint: str, name: str, archive: bytes,
                                          set_default: bool) -> dict[str, Any]:
        with scratch.temporary("upload") as tmp:
            spec, package = unpack_deployment_archive(archive, Path(tmp), BatchDeploymentSpec, endpoint, name)
            if package.spec.kind is not ScoringKind.batch:
                raise BadInput(f"the deployment for {endpoint}/{name} is not a batch deployment: a batch "
                               "deployment YAML has 'settings:' (or '$schema: ...batchDeployment.schema.json')")
            if self.lock.locked():
                raise Conflict("the gateway is busy with another batch deployment change; try again when it is done")
            async with self.lock:
                return await self._deploy(spec, package, set_default)

    async def _deploy(self, spec: BatchDeploymentSpec, package: Any, set_default: bool) -> dict[str, Any]:
        endpoint = self._endpoint(spec.endpoint_name)
        previous = self.store.deployment(spec.endpoint_name, spec.name)
        generation = previous.generation + 1 if previous else 1
        entry = batch_deployment_entry(spec.endpoint_name, spec.name, generation)
        settings = package.spec.batch
        options = pipeline.EnvironmentOptions(self.settings.environments_root,
                                              self.settings.environment_build_timeout_seconds)
        try:
            ingested = await asyncio.to_thread(
                pipeline.ingest, package, self.registry, self.settings.deployments_repository, lambda _: entry,
                name=batch_deployment_model(spec.endpoint_name, spec.name), environment=options)
        except (pipeline.InspectionFailed, DeploymentFailed) as exc:
            what = f"the script did not load: {exc.message}" if isinstance(exc, pipeline.InspectionFailed) \
                else exc.message
            raise DeploymentFailed(f"batch deployment {spec.name!r} failed: {what}"
                                   + (f"; generation {previous.generation} stays" if previous else ""),
                                   details=exc.details or None) from None
        registered = ingested.record
        record = BatchDeploymentRecord(
            endpoint=spec.endpoint_name, name=spec.name, model_name=registered.name,
            model_version=registered.version, content_hash=registered.content_hash, entry=entry,
            generation=generation, instance_type=spec.instance_type, instance_count=spec.instance_count,
            concurrency=settings.max_concurrency_per_instance, description=spec.description, tags=spec.tags,
            ignored_keys=spec.ignored_keys, settings=settings.model_dump(mode="json"), compute=spec.compute,
            created=previous.created if previous else datetime.now(UTC))
        placement = await self.deployments.place(record)
        if not placement.ready:
            log_tail = self.control.fleet.node_log(entry, placement.nodes, 30)
            reason = placement.reason
            await self.deployments.discard(placement)
            self.deployments.entries.discard(placement.name)
            raise DeploymentFailed(f"batch deployment {spec.name!r} failed: {reason}",
                                   details={"log_tail": log_tail} if log_tail else None)
        record.nodes = [n.name for n in placement.nodes]
        record.state, record.reason = placement.state.value, placement.reason
        old = self.deployments.entry_of(previous) if previous is not None else None
        with self.store.transaction() as db:
            self.store.put_deployment(db, record)
            if set_default:
                endpoint.default_deployment = record.name
                self.store.put_endpoint(db, endpoint)
        if old is not None and old.name != entry:
            await self.deployments.retire(old)
        view = self.deployment_view(record)
        if endpoint.default_deployment is None:
            view["note"] = (f"batch endpoint {endpoint.name!r} has no default deployment: invoke it with "
                            f"--deployment-name {record.name}, or make this one the default (--set-default)")
        return view

    async def delete_deployment(self, endpoint: str, name: str) -> None:
        async with self.lock:
            record = self._deployment(endpoint, name)
            self._refuse_if_busy(endpoint, name)
            endpoint_record = self._endpoint(endpoint)
            with self.store.transaction() as db:
                self.store.delete_deployment(db, endpoint, name)
                if endpoint_record.default_deployment == name:
                    endpoint_record.default_deployment = None
                    self.store.put_endpoint(db, endpoint_record)
            await self.deployments.retire(self.deployments.entry_of(record))

    def logs(self, endpoint: str, name: str, lines: int) -> str:
        return self.control.fleet.node_log(self._deployment(endpoint, name).entry,
                                           self._nodes_of(endpoint, name), lines)

    def _nodes_of(self, endpoint: str, name: str) -> tuple[Any, ...]:
        placement = self.deployments.entry_of(self._deployment(endpoint, name))
        return placement.nodes if placement else ()

    # --- jobs ---
    def _job_settings(self, deployment: BatchDeploymentRecord, spec: JobSpec) -> tuple[BatchSettings, bool]:
        merged: dict[str, Any] = copy.deepcopy(deployment.settings)
        overwrite = False
        for key, value in spec.set.items():
            key = key.removeprefix("settings.")
            if key in _JOB_ONLY_KEYS:
                overwrite = str(value).lower() in ("true", "1", "yes")
                continue
            *parents, last = key.split(".")
            node = merged
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise BadInput(f"--set {key}: {part} is not a section")
            node[last] = value
        if spec.mini_batch_size is not None:
            merged["mini_batch_size"] = spec.mini_batch_size
        try:
            settings = BatchSettings.model_validate(merged)
        except ValidationError as exc:
            raise BadInput(format_validation(exc, Path("--set"))) from None
        deployed = BatchSettings.model_validate(deployment.settings)
        if settings.environment_variables != deployed.environment_variables:
            raise BadInput("environment_variables belong to the deployment (its processes are running): change "
                           "them with 'gateway batch-deployment update', not per job")
        if settings.max_concurrency_per_instance > deployed.max_concurrency_per_instance:
            raise BadInput(f"max_concurrency_per_instance {settings.max_concurrency_per_instance} is more than the "
                           f"deployment's {deployed.max_concurrency_per_instance} model instances per instance: a job "
                           "may ask for fewer, more needs 'gateway batch-deployment update'")
        return settings, overwrite

    def _check_paths(self, paths: list[str], what: str, admin: bool) -> None:
        """No job reads or writes the state folder; an endpoint credential stays under the input roots.
        Plain string prefixes of resolved paths: a 10,000-file input is checked in milliseconds."""
        state = str(self.settings.state_dir.resolve())
        roots = [str(r.resolve()) for r in self.settings.batch_input_roots]

        def under(path: str, root: str) -> bool:
            return path == root or path.startswith(root.rstrip(os.sep) + os.sep)

        for path in paths:
            if under(path, state):
                raise Forbidden(f"the {what} {path} is inside the gateway's state folder, which jobs may not read "
                                "or write")
            if not admin and not any(under(path, r) for r in roots):
                allowed = ", ".join(roots) or "none are set (the gateway's --batch-input-roots)"
                raise Forbidden(f"the {what} {path} is outside the folders an endpoint credential may use: {allowed}")

    def _prepare(self, spec: JobSpec, admin: bool, output_dir: Path, settings_dump: dict[str, Any], endpoint: str,
                 deployment: str, instance_count: int) -> tuple[str, list[str], str]:
        """Off the event loop (a large input takes a while to list and stat): the files, checked, and the
        submission's fingerprint."""
        resolved, files = list_input(spec.input, spec.input_type)
        self._check_paths(files, "input", admin)
        if spec.output_path:
            self._check_paths([str(output_dir)], "output path", admin)
        return resolved, files, fingerprint(endpoint, deployment, files, settings_dump, str(output_dir), instance_count)

    async def invoke(self, endpoint: str, spec: JobSpec, admin: bool) -> tuple[dict[str, Any], bool]:
        """Submit a job; returns its view and whether it was created (an idempotent repeat returns the first)."""
        record = self._endpoint(endpoint)
        deployment_name = spec.deployment_name or record.default_deployment
        if not deployment_name:
            known = ", ".join(d.name for d in self.store.deployments(endpoint)) or "none yet"
            raise BadInput(f"batch endpoint {endpoint!r} has no default deployment and none was named: give "
                           f"--deployment-name (deployments: {known}), or set a default with 'gateway batch-endpoint "
                           f"update -n {endpoint} --set defaults.deployment_name=NAME'")
        deployment = self._deployment(endpoint, deployment_name)
        placement = self.deployments.entry_of(deployment)
        if placement is None or placement.state is EntryState.failed:
            raise NotReady(f"batch deployment {deployment_name!r} is failed: "
                           f"{placement.reason if placement else deployment.reason}", retry_after=None)
        settings, overwrite = self._job_settings(deployment, spec)
        job_name = spec.job_name or f"batchjob-{uuid.uuid4()}"
        job_dir = (self.settings.jobs_dir / job_name).resolve()
        output_dir = Path(spec.output_path).expanduser().resolve() if spec.output_path else job_dir / "named-outputs" / "score"
        instance_count = spec.instance_count or deployment.instance_count
        settings_dump = settings.model_dump(mode="json")
        resolved, files, marker = await asyncio.to_thread(self._prepare, spec, admin, output_dir, settings_dump,
                                                          endpoint, deployment_name, instance_count)
        async with self.lock:
            existing = self.store.job(job_name)
            if existing is not None:
                if existing.fingerprint == marker:
                    return self.job_view(existing), False
                raise Conflict(f"job {job_name!r} exists with other inputs or settings (status {existing.status}); "
                               "choose another job name")
            output_file = output_dir / settings.output_file_name
            if settings.output_action == "append_row" and output_file.exists() and not overwrite:
                raise Conflict(f"{output_file} exists already: choose another --output-path or output_file_name, "
                               "or --set overwrite=true to replace it")
            job = JobRecord(name=job_name, endpoint=endpoint, deployment=deployment_name, input=resolved,
                            input_type=spec.input_type or ("uri_file" if Path(resolved).is_file() else "uri_folder"),
                            files=len(files), mini_batches=0, settings=settings_dump, instance_count=instance_count,
                            output_dir=str(output_dir), job_dir=str(job_dir), fingerprint=marker)
            batches = cut(files, settings.mini_batch_size)
            job.mini_batches = len(batches)
            await asyncio.to_thread(self._insert, job, batches)
        job_files(job).create()
        self.runner.start(job_name)
        return self.job_view(job), True

    def _insert(self, job: JobRecord, batches: list[list[str]]) -> None:
        with self.store.transaction() as db:
            self.store.put_job(db, job)
            self.store.add_mini_batches(db, job.name, batches)

    async def cancel_job(self, name: str) -> dict[str, Any]:
        record = self._job(name)
        if record.status in FINISHED:
            return self.job_view(record)
        record.cancel_requested = True
        with self.store.transaction() as db:
            self.store.put_job(db, record)
        self.runner.cancel(name)
        return self.job_view(record)

    def job_logs(self, name: str) -> str:
        """The job's log, then every failed file with its error, then what the script printed."""
        record = self._job(name)
        files = job_files(record)
        sections = []
        job_log = files.logs / "job.log"
        if job_log.is_file():
            sections.append(f"==> job.log <==\n{job_log.read_text(encoding='utf-8', errors='replace')}")
        failures = self.store.mini_batches(name, (MB_FAILED,))
        if failures:
            sections.append("==> failed files <==\n" + "\n".join(
                f"file: {b.files[0]}\nerror: {b.error}\n{b.traceback.rstrip()}\n" for b in failures))
        user = sorted((files.logs / "user").glob("*.txt")) if (files.logs / "user").is_dir() else []
        for path in user:
            sections.append(f"==> mini-batch {path.stem} <==\n{path.read_text(encoding='utf-8', errors='replace')}")
        return "\n".join(sections) or f"job {name!r} has no logs yet (status {record.status})"

    def job_archive(self, name: str) -> bytes:
        """The job's outputs and logs, laid out as ``az ml job download`` writes them."""
        files = job_files(self._job(name))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            if files.output_dir.is_dir():
                for path in sorted(files.output_dir.iterdir()):
                    if path.is_file() and not path.name.startswith("."):
                        tar.add(path, arcname=f"named-outputs/score/{path.name}")
            if files.logs.is_dir():
                tar.add(files.logs, arcname="logs")
        return buffer.getvalue()


__all__ = ["BatchControl", "format_validation"]

"""The control plane, free of any transport: endpoints, deployments, traffic, mirror, keys, logs.

Each change is validated first, then applied in one state transaction, then made visible by swapping the
routing table. A deployment is loaded and ready before any traffic can point at it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from gateway.auth import AUTH_MODES, Credentials, hash_key, new_key
from gateway.deployments import Deployments
from gateway.entries import EntryState
from gateway.fleet import Fleet
from gateway.schemas import DeploymentSpec, EndpointSpec, EndpointUpdate, PackageHeader
from gateway.settings import GatewaySettings
from gateway.state import DeploymentRecord, EndpointRecord, StateStore
from packager import pipeline, scratch
from packager.build import TRITON_VERSION
from packager.environments import BUILD_LOG
from packager.naming import deployment_entry, deployment_model
from packager.openapi import build_document
from packager.package import StagedPackage
from packager.registry import Registry
from packager.sources import safe_extract
from packager.spec import PackageSpec
from turnout.errors import BadInput, Conflict, DeploymentFailed, NotFound, PackageError
from turnout.manifest import ENVIRONMENT_DIR, MANIFEST_FILE, Manifest

log = logging.getLogger("turnout.gateway.control")
MAX_MIRROR_PERCENT = 50
CHANGE_WAIT_SECONDS = 2.0
# Azure's provisioning states for a deployment, from its entry's state.
_PROVISIONING = {EntryState.ready.value: "Succeeded", EntryState.failed.value: "Failed"}
CREATING = "creating"  # a first deployment's record while it is being made
SpecT = TypeVar("SpecT", bound=BaseModel)


def unpack_deployment_archive(archive: bytes, root: Path, spec_type: type[SpecT], endpoint: str,
                              deployment: str) -> tuple[SpecT, StagedPackage]:
    """An uploaded deployment archive (the CLI makes it): its ``deployment.json`` and the staged package."""
    (root / "upload.tar.gz").write_bytes(archive)
    safe_extract(root / "upload.tar.gz", root / "package")
    package_root = root / "package"
    try:
        spec = spec_type.model_validate_json((package_root / "deployment.json").read_text(encoding="utf-8"))
        header = PackageHeader.model_validate_json((package_root / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"the upload is not a deployment archive: {exc}") from None
    named = (getattr(spec, "endpoint_name", None), getattr(spec, "name", None))
    if named != (endpoint, deployment):
        raise BadInput(f"the archive is for {named[0]}/{named[1]}, not {endpoint}/{deployment}")
    (package_root / "deployment.json").unlink()
    return spec, StagedPackage(package_root, header.name, PackageSpec.model_validate(header.spec),
                               header.model_name, header.source, owned=True)


class ControlPlane:
    def __init__(self, state: StateStore, credentials: Credentials, registry: Registry, deployments: Deployments,
                 fleet: Fleet, settings: GatewaySettings, base_url: str = "") -> None:
        self.state, self.credentials, self.registry = state, credentials, registry
        self.deployments, self.fleet, self.settings = deployments, fleet, settings
        self.base_url = base_url
        self.lock = asyncio.Lock()  # one control-plane change at a time
        self._busy = ("", 0.0)  # what the change under way is doing, and since when
        self._provisioning: dict[tuple[str, str], str] = {}  # Azure's Creating / Updating, while under way
        self._building: dict[tuple[str, str], list[str]] = {}  # its environment's build, line by line

    @asynccontextmanager
    async def _change(self, doing: str = "another change") -> AsyncIterator[None]:
        """One change at a time; a change that would wait long is refused at once, saying what it waits for
        (a deployment takes as long as its model takes to load)."""
        try:
            await asyncio.wait_for(self.lock.acquire(), CHANGE_WAIT_SECONDS)
        except TimeoutError:
            what, since = self._busy
            raise Conflict(f"the gateway is busy with another change: {what} (for {time.monotonic() - since:.0f} s); "
                           "try again when it is done") from None
        self._busy = (doing, time.monotonic())
        try:
            yield
        finally:
            self._busy = ("", 0.0)
            self.lock.release()

    # --- views ---
    def _endpoint(self, name: str) -> EndpointRecord:
        record = self.state.endpoint(name)
        if record is None:
            raise NotFound(f"no endpoint named {name!r}")
        return record

    def _deployment(self, endpoint: str, name: str) -> DeploymentRecord:
        self._endpoint(endpoint)
        record = self.state.deployment(endpoint, name)
        if record is None:
            known = ", ".join(d.name for d in self.state.deployments(endpoint)) or "none"
            raise NotFound(f"endpoint {endpoint!r} has no deployment {name!r} (deployments: {known})")
        return record

    def endpoint_view(self, record: EndpointRecord) -> dict[str, Any]:
        return {
            "name": record.name,
            "auth_mode": record.auth_mode,
            "description": record.description,
            "tags": record.tags,
            "traffic": record.traffic,
            "mirror_traffic": record.mirror_traffic,
            "scoring_uri": f"{self.base_url}/endpoints/{record.name}/score",
            "openapi_uri": f"{self.base_url}/endpoints/{record.name}/swagger.json",
            "provisioning_state": "Succeeded",
            "deployments": [d.name for d in self.state.deployments(record.name)],
            "created": record.created.isoformat(),
            "updated": record.updated.isoformat(),
        }

    def deployment_view(self, record: DeploymentRecord) -> dict[str, Any]:
        placement = self.deployments.entry_of(record)
        state = placement.state.value if placement else record.state
        return {
            "name": record.name,
            "endpoint_name": record.endpoint,
            "model": f"{record.model_name}:{record.model_version}",
            "content_hash": record.content_hash,
            "entry": record.entry,
            "generation": record.generation,
            "instance_type": record.instance_type,
            "instance_count": record.instance_count,
            "pool": record.pool,
            "nodes": [n.name for n in placement.nodes] if placement else record.nodes,
            "state": state,
            "provisioning_state": self._provisioning.get((record.endpoint, record.name))
            or _PROVISIONING.get(state, "Creating" if record.state == CREATING else "Updating"),
            "reason": placement.reason if placement else record.reason,
            **({"build_progress": list(self._building[(record.endpoint, record.name)])}
               if (record.endpoint, record.name) in self._building else {}),
            "environment": self._environment_of(record),
            "description": record.description,
            "tags": record.tags,
            "ignored_keys": record.ignored_keys,
            "created": record.created.isoformat(),
            "updated": record.updated.isoformat(),
        }

    def _environment_of(self, record: DeploymentRecord) -> str | None:
        manifest = self.settings.deployments_repository / record.entry / TRITON_VERSION / MANIFEST_FILE
        try:
            return Manifest.read(manifest.parent).environment if manifest.is_file() else None
        except PackageError:
            return None

    def list_endpoints(self) -> list[dict[str, Any]]:
        return [self.endpoint_view(r) for r in self.state.endpoints()]

    def get_endpoint(self, name: str) -> dict[str, Any]:
        return self.endpoint_view(self._endpoint(name))

    def list_deployments(self, endpoint: str) -> list[dict[str, Any]]:
        self._endpoint(endpoint)
        return [self.deployment_view(r) for r in self.state.deployments(endpoint)]

    def get_deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        return self.deployment_view(self._deployment(endpoint, name))

    def history(self, endpoint: str) -> list[dict[str, Any]]:
        self._endpoint(endpoint)
        return self.state.history(endpoint)

    # --- endpoints ---
    def _check_auth_mode(self, mode: str) -> None:
        if mode not in AUTH_MODES:
            raise BadInput(f"auth_mode {mode!r} is not supported; use one of {', '.join(AUTH_MODES)}")
        if mode == "none" and not self.settings.allow_anonymous:
            raise BadInput("auth_mode none is for local development: start the gateway with --allow-anonymous")

    async def create_endpoint(self, spec: EndpointSpec) -> dict[str, Any]:
        self._check_auth_mode(spec.auth_mode)
        if spec.traffic and any(spec.traffic.values()) or any(spec.mirror_traffic.values()):
            raise BadInput("a new endpoint has no deployments yet: leave traffic out, or set it to 0")
        async with self._change():
            if self.state.endpoint(spec.name) is not None:
                raise Conflict(f"endpoint {spec.name!r} already exists (use 'gateway endpoint update')")
            keys = [new_key(), new_key()]
            record = EndpointRecord(
                name=spec.name, auth_mode=spec.auth_mode, description=spec.description, tags=spec.tags,
                key_hashes=[hash_key(k) for k in keys], uid=secrets.token_hex(8),
                sealed_keys=[self.credentials.seal(k) for k in keys],
            )
            with self.state.transaction() as db:
                self.state.put_endpoint(db, record)
                self.state.record_history(db, spec.name, "create", {"auth_mode": spec.auth_mode})
        return self.endpoint_view(record)

    async def update_endpoint(self, name: str, update: EndpointUpdate) -> dict[str, Any]:
        async with self._change():
            record = self._endpoint(name)
            traffic = record.traffic if update.traffic is None else dict(update.traffic)
            mirror = record.mirror_traffic if update.mirror_traffic is None else dict(update.mirror_traffic)
            if update.traffic is not None:
                # Azure replaces the whole map: deployments left out take no traffic.
                traffic = {d.name: traffic.get(d.name, 0) for d in self.state.deployments(name)} | traffic
            self.validate_traffic(name, traffic, mirror)
            record.traffic = {d: w for d, w in traffic.items()}
            record.mirror_traffic = {d: w for d, w in mirror.items() if w > 0}
            if update.description is not None:
                record.description = update.description
            if update.tags is not None:
                record.tags = update.tags
            with self.state.transaction() as db:
                self.state.put_endpoint(db, record)
                self.state.record_history(db, name, "update", {"traffic": record.traffic,
                                                               "mirror_traffic": record.mirror_traffic})
        return self.endpoint_view(record)

    def validate_traffic(self, endpoint: str, traffic: dict[str, int], mirror: dict[str, int]) -> None:
        deployments = {d.name: d for d in self.state.deployments(endpoint)}
        known = ", ".join(sorted(deployments)) or "none"
        for label, weights in (("traffic", traffic), ("mirror traffic", mirror)):
            for deployment, weight in weights.items():
                if deployment not in deployments:
                    raise BadInput(f"unknown deployment {deployment!r} in {label} (deployments: {known})")
                if not 0 <= weight <= 100:
                    raise BadInput(f"{label} for {deployment!r} must be between 0 and 100, got {weight}")
        total = sum(traffic.values())
        if total not in (0, 100):
            shown = " ".join(f"{d}={w}" for d, w in sorted(traffic.items()))
            raise BadInput(f"traffic weights must sum to 100 (or 0 to stop all traffic), got {total}: {shown}")
        for deployment, weight in traffic.items():
            self._require_ready(endpoint, deployment, weight, "traffic")
        live_mirrors = {d: p for d, p in mirror.items() if p > 0}
        if len(live_mirrors) > 1:
            raise BadInput(f"mirror traffic goes to one deployment at a time, got {', '.join(sorted(live_mirrors))}")
        for deployment, percent in live_mirrors.items():
            if percent > MAX_MIRROR_PERCENT:
                raise BadInput(f"mirror traffic is at most {MAX_MIRROR_PERCENT}%, got {deployment}={percent}")
            if traffic.get(deployment, 0) > 0:
                raise BadInput(f"{deployment!r} takes live traffic ({traffic[deployment]}%); "
                               "a mirror target must take none")
            self._require_ready(endpoint, deployment, percent, "mirror traffic")

    def _require_ready(self, endpoint: str, deployment: str, weight: int, label: str) -> None:
        record = self.state.deployment(endpoint, deployment)
        placement = self.deployments.entry_of(record) if record else None
        if weight > 0 and (placement is None or not placement.ready):
            state = placement.state.value if placement else "not placed"
            reason = f": {placement.reason}" if placement and placement.reason else ""
            raise Conflict(f"deployment {deployment!r} is {state}{reason}; it cannot take {label}")

    async def delete_endpoint(self, name: str) -> None:
        async with self._change():
            self._endpoint(name)
            deployments = self.state.deployments(name)
            with self.state.transaction() as db:
                self.state.delete_endpoint(db, name)
                self.state.record_history(db, name, "delete", {})
            for record in deployments:
                await self.deployments.retire(self.deployments.entry_of(record))

    # --- keys and tokens ---
    def get_credentials(self, name: str) -> dict[str, Any]:
        record = self._endpoint(name)
        return self.credentials.endpoint_credentials(name, record.auth_mode, record.sealed_keys,
                                                     self.settings.token_ttl_seconds,
                                                     (record.uid, record.key_generation))

    def token(self, name: str) -> dict[str, Any]:
        record = self._endpoint(name)
        return self.credentials.endpoint_credentials(name, "aml_token", [], self.settings.token_ttl_seconds,
                                                     (record.uid, record.key_generation))

    async def regenerate_key(self, name: str, key_type: str) -> dict[str, Any]:
        async with self._change():
            record = self._endpoint(name)
            index = 0 if key_type == "primary" else 1
            key = new_key()
            record.key_hashes[index] = hash_key(key)
            record.key_generation += 1  # the tokens issued before are revoked
            record.sealed_keys[index] = self.credentials.seal(key)
            with self.state.transaction() as db:
                self.state.put_endpoint(db, record)
                self.state.record_history(db, name, "regenerate-keys", {"key_type": key_type})
        return {"regenerated": key_type}

    # --- deployments ---
    async def create_or_update_deployment(
        self, endpoint: str, deployment: str, archive: bytes, all_traffic: bool
    ) -> dict[str, Any]:
        with scratch.temporary("upload") as tmp:
            spec, package = unpack_deployment_archive(archive, Path(tmp), DeploymentSpec, endpoint, deployment)
            doing = "updated" if self.state.deployment(endpoint, deployment) else "created"
            async with self._change(f"deployment {spec.name!r} of endpoint {spec.endpoint_name!r} is being {doing}"):
                return await self._deploy(spec, package, all_traffic)

    async def _deploy(self, spec: DeploymentSpec, package: StagedPackage, all_traffic: bool) -> dict[str, Any]:
        endpoint = self._endpoint(spec.endpoint_name)
        previous = self.state.deployment(spec.endpoint_name, spec.name)
        generation = previous.generation + 1 if previous else 1
        entry = deployment_entry(spec.endpoint_name, spec.name, generation)
        key = (spec.endpoint_name, spec.name)
        self._provisioning[key] = "Updating" if previous else "Creating"
        try:
            record = await self._make(spec, package, all_traffic, endpoint, previous, generation, entry)
        finally:
            self._provisioning.pop(key, None)
            lines = self._building.pop(key, [])
        view = self.deployment_view(record)  # after the change is done: Succeeded, not Creating
        return {**view, "build_progress": lines} if lines else view

    async def _make(self, spec: DeploymentSpec, package: StagedPackage, all_traffic: bool, endpoint: EndpointRecord,
                    previous: DeploymentRecord | None, generation: int, entry: str) -> DeploymentRecord:
        if previous is None:  # visible while it is made: listed, shown as Creating, pinned requests told so
            placeholder = self._record(spec, None, generation, entry, "", 0, "", {})
            placeholder.state, placeholder.reason = CREATING, "being created: inspecting, registering, loading"
            with self.state.transaction() as db:
                self.state.put_deployment(db, placeholder)
        lines = self._building.setdefault((spec.endpoint_name, spec.name), [])
        options = pipeline.EnvironmentOptions(self.settings.environments_root,
                                              self.settings.environment_build_timeout_seconds, lines.append)
        try:
            ingested = await asyncio.to_thread(
                pipeline.ingest, package, self.registry, self.settings.deployments_repository, lambda _: entry,
                name=deployment_model(spec.endpoint_name, spec.name), environment=options,
            )
        except (pipeline.InspectionFailed, DeploymentFailed) as exc:
            log_tail = str(exc.details.get("log_tail", ""))
            failed = self._record(spec, previous, generation, entry, package.name, 0, package.content_hash(), {})
            failed.state = EntryState.failed.value
            failed.reason = f"the script did not load: {exc.message}" if isinstance(exc, pipeline.InspectionFailed) \
                else exc.message
            failed.load_log = log_tail
            if previous is None:
                self.deployments.mark_failed(failed)
            self._failed(failed, previous)
            raise self._failure(failed, previous, log_tail) from None
        registered = ingested.record
        if ingested.inspection.schemas.get("error"):
            log.warning("deployment %s/%s: run()'s inference-schema could not be read: %s", spec.endpoint_name,
                        spec.name, ingested.inspection.schemas["error"])
        record = self._record(spec, previous, generation, entry, registered.name, registered.version,
                              registered.content_hash, ingested.inspection.schemas)
        placement = await self.deployments.place(record)
        record.nodes = [n.name for n in placement.nodes]
        record.state, record.reason = placement.state.value, placement.reason
        if not placement.ready:
            log_tail = self.fleet.node_log(record.entry, placement.nodes, 30)
            await self.deployments.discard(placement)
            if previous is not None:  # nothing refers to the failed generation: the previous one keeps serving
                self.deployments.entries.discard(placement.name)
            self._failed(record, previous)
            raise self._failure(record, previous, log_tail)
        old = self.deployments.entry_of(previous) if previous is not None else None
        with self.state.transaction() as db:
            self.state.put_deployment(db, record)
            if all_traffic:
                endpoint.traffic = {d.name: 0 for d in self.state.deployments(endpoint.name)} | {record.name: 100}
                endpoint.mirror_traffic.pop(record.name, None)
                self.state.put_endpoint(db, endpoint)
            self.state.record_history(db, record.endpoint, "deploy", {
                "deployment": record.name, "model": f"{record.model_name}:{record.model_version}",
                "generation": generation, "all_traffic": all_traffic,
            })
        if old is not None and old.name != record.entry:
            await self.deployments.retire(old)
        return record

    def _record(self, spec: DeploymentSpec, previous: DeploymentRecord | None, generation: int, entry: str,
                model_name: str, model_version: int, content_hash: str, schemas: dict[str, Any]) -> DeploymentRecord:
        settings = spec.request_settings
        return DeploymentRecord(
            endpoint=spec.endpoint_name, name=spec.name,
            model_name=model_name, model_version=model_version, content_hash=content_hash,
            entry=entry, generation=generation,
            instance_type=spec.instance_type, instance_count=spec.instance_count,
            description=spec.description, tags=spec.tags, ignored_keys=spec.ignored_keys,
            max_concurrent_requests=settings.max_concurrent_requests_per_instance if settings else None,
            request_timeout_seconds=(settings.request_timeout_ms / 1000
                                     if settings and settings.request_timeout_ms else None),
            schemas=schemas,
            created=previous.created if previous else datetime.now(UTC),
        )

    def _failed(self, record: DeploymentRecord, previous: DeploymentRecord | None) -> None:
        """A first deployment that failed stays visible, with why; a failed update leaves no trace but history."""
        with self.state.transaction() as db:
            if previous is None:
                self.state.put_deployment(db, record)
            self.state.record_history(db, record.endpoint, "deployment-failed",
                                      {"deployment": record.name, "reason": record.reason})

    @staticmethod
    def _failure(record: DeploymentRecord, previous: DeploymentRecord | None, log_tail: str) -> DeploymentFailed:
        return DeploymentFailed(
            f"deployment {record.name!r} failed: {record.reason}"
            + ("" if previous is None else f"; generation {previous.generation} keeps serving"),
            details={"log_tail": log_tail} if log_tail else None,
        )

    async def delete_deployment(self, endpoint: str, name: str) -> None:
        async with self._change():
            self._deployment(endpoint, name)  # 404 names the known deployments
            endpoint_record = self._endpoint(endpoint)
            if endpoint_record.traffic.get(name, 0) > 0:
                raise Conflict(f"deployment {name!r} takes {endpoint_record.traffic[name]}% of traffic; "
                               "shift its traffic to 0 before deleting it")
            if endpoint_record.mirror_traffic.get(name, 0) > 0:
                raise Conflict(f"deployment {name!r} receives mirror traffic; set it to 0 before deleting it")
            placement = self.deployments.entry_of(self._deployment(endpoint, name))
            with self.state.transaction() as db:
                endpoint_record.traffic.pop(name, None)
                self.state.put_endpoint(db, endpoint_record)
                self.state.delete_deployment(db, endpoint, name)
                self.state.record_history(db, endpoint, "delete-deployment", {"deployment": name})
            await self.deployments.retire(placement)

    def _build_log(self, record: DeploymentRecord, lines: int) -> str:
        """Its environment's build log: kept with the entry, or (a build that failed) with the record."""
        kept = self.settings.deployments_repository / record.entry / TRITON_VERSION / ENVIRONMENT_DIR / BUILD_LOG
        if kept.is_file():
            return "\n".join(kept.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        if record.load_log and "could not be built" in record.reason:
            return record.load_log
        return (f"deployment {record.name!r} has no environment build: it runs in the serving environment"
                if record.state != EntryState.failed.value else
                f"deployment {record.name!r} built no environment; see get-logs for why it failed")

    def openapi(self, endpoint: str, deployment: str | None) -> dict[str, Any]:
        """The scoring URL's OpenAPI document, from the deployment taking the most traffic (or the one named)."""
        record = self._endpoint(endpoint)
        deployments = {d.name: d for d in self.state.deployments(endpoint)}
        if not deployments:
            raise NotFound(f"endpoint {endpoint!r} has no deployments yet")
        name = deployment or max(deployments, key=lambda d: (record.traffic.get(d, 0), d))
        chosen = deployments.get(name) or self._deployment(endpoint, name)
        version_dir = self.settings.deployments_repository / chosen.entry / TRITON_VERSION
        if not version_dir.is_dir():
            raise NotFound(f"deployment {name!r} has no built entry (state {chosen.state})")
        return build_document(f"{endpoint} ({name})", f"/endpoints/{endpoint}/score", version_dir, chosen.schemas)

    def logs(self, endpoint: str, name: str, lines: int, build: bool = False) -> str:
        record = self._deployment(endpoint, name)
        if build:
            return self._build_log(record, lines)
        placement = self.deployments.entry_of(record)
        node_log = self.fleet.node_log(record.entry, placement.nodes if placement else (), lines)
        if record.load_log:  # the script failed in the inspection, before any node loaded it
            node_log = "\n".join(filter(None, [node_log, f"==> inspection <==\n{record.load_log}"]))
        return node_log

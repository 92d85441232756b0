"""The drop zone: what lands in the model repository goes live; what leaves it is unloaded.

Each top-level item of the repository is one drop:
  * a built Triton entry (a folder with ``config.pbtxt``, ours or any plain Triton model): loaded as is;
  * a package folder (score.py, model files, optional model.yaml), or a folder holding one Azure
    deployment YAML with its files, or a ``.tar.gz``/``.tgz``/``.zip`` package, or an Azure deployment
    YAML file: validated (the backend's loader, in a subprocess), registered (same content, same version),
    built into ``<state>/built/drop.<name>.v<version>`` and loaded.

When a drop is complete (see docs/dropzone.md):
  * names starting with ``.`` or ending in ``.tmp``, ``.part``, ``.partial``, ``.crdownload`` are never
    acted on: copy under such a name, then rename (an atomic rename is acted on at once);
  * a folder holding a file named ``.turnout-pending`` waits until that file is deleted;
  * otherwise a drop is acted on once nothing in it changed for ``drop_quiet_seconds``.

A new version of a model serves only once it is ready; then the previous one is drained and unloaded.
A bad drop is reported (``GET /models``: failed, reason, log tail) and the previous version keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from watchfiles import awatch

from gateway.catalog import EntryInfo, read_entry
from packager.build import build_entry
from packager.sources import StagedPackage, resolve_source
from packager.spec import looks_like_azure_deployment
from packager.validate import validate_package
from turnout.errors import PackageError, TurnoutError

if TYPE_CHECKING:
    from gateway.core import Gateway, ModelStatus

log = logging.getLogger("turnout.gateway.dropzone")
PENDING_MARKER = ".turnout-pending"
_PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")
_ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")


def is_candidate(path: Path) -> bool:
    name = path.name
    if name.startswith(".") or name.lower().endswith(_PARTIAL_SUFFIXES):
        return False
    if path.is_dir():
        return True
    lowered = name.lower()
    return lowered.endswith(_ARCHIVES) or (lowered.endswith((".yml", ".yaml")) and looks_like_azure_deployment(path))


def drop_entry(name: str, version: int) -> str:
    """Entries built from drops live in their own namespace: a packager-built ``<name>-v<version>`` in
    the repository must not collide (Triton refuses a model found in two repositories)."""
    return f"drop.{name}.v{version}"


def fingerprint(path: Path) -> str:
    """Sizes and modification times of everything in a drop: equal fingerprints, nothing changed."""
    try:
        if path.is_file():
            stat = path.stat()
            return f"{stat.st_size}:{stat.st_mtime_ns}"
        parts = []
        for item in sorted(path.rglob("*")):
            if item.is_file():
                stat = item.stat()
                parts.append(f"{item.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}")
        return "|".join(parts)
    except OSError:
        return f"unreadable:{time.monotonic()}"


def _source_for(path: Path) -> str:
    """A folder with one Azure deployment YAML (and no model.yaml) is that deployment."""
    if path.is_dir() and not (path / "model.yaml").exists() and not (path / "score.py").exists():
        yamls = [f for f in sorted(path.iterdir()) if f.suffix in (".yml", ".yaml") and looks_like_azure_deployment(f)]
        if len(yamls) == 1:
            return str(yamls[0])
    return str(path)


def _newest_change(path: Path) -> float:
    try:
        if path.is_file():
            return path.stat().st_mtime
        return max((p.stat().st_mtime for p in path.rglob("*")), default=path.stat().st_mtime)
    except OSError:
        return time.time()


class DropZone:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        # Absolute: watchfiles reports absolute paths, which a relative repository never matches.
        self.repository = gateway.settings.repository.resolve()
        self.quiet = gateway.settings.drop_quiet_seconds
        self.seen: dict[str, str] = {}  # item -> fingerprint it was last acted on with
        self.pending: dict[str, float] = {}  # item -> monotonic time of its last change
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()

    async def stop(self) -> None:
        self._stop.set()

    # --- finding work ---
    async def initial_scan(self, settle_timeout: float = 30.0) -> None:
        items = sorted(p.name for p in self.repository.iterdir()) if self.repository.is_dir() else []
        for name in items:
            if await self._quiet(self.repository / name, settle_timeout):
                await self.process(name)
            else:
                self.pending[name] = time.monotonic()  # still being written: the watcher decides
        await self._restore_kept_versions()
        await asyncio.to_thread(self._remove_orphan_builds)

    async def _restore_kept_versions(self) -> None:
        """With ``--keep-versions N``, the N-1 versions before a dropped model's newest were serving
        before the restart, but the repository holds only the newest: load their built entries again."""
        keep = self.gateway.settings.keep_versions
        built_root = self.gateway.settings.built_repository
        if keep <= 1 or not built_root.is_dir():
            return
        newest = {s.info.name: s for s in self.gateway.models.values() if s.drop and s.state == "ready"}
        older: dict[str, list[EntryInfo]] = {}
        for path in sorted(built_root.iterdir()):
            if path.name in self.gateway.models:
                continue
            info = await asyncio.to_thread(read_entry, path)
            if info is None or info.problem or info.name not in newest or info.version >= newest[info.name].info.version:
                continue
            older.setdefault(info.name, []).append(info)
        for name, infos in older.items():
            for info in sorted(infos, key=lambda i: i.version, reverse=True)[: keep - 1]:
                status = await self.gateway.load_model(info, drop=newest[name].drop)
                log.info("restored %s:%d (--keep-versions %d): %s", name, info.version, keep, status.state)
            await self.gateway.settle_versions(name)

    async def _quiet(self, path: Path, timeout: float) -> bool:
        """Wait (bounded) until nothing in ``path`` changed for the quiet period."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            idle = time.time() - _newest_change(path)
            if idle >= self.quiet:
                return True
            await asyncio.sleep(self.quiet - idle + 0.05)
        return False

    async def watch(self) -> None:
        settle = asyncio.create_task(self._settle_loop(), name="turnout-drop-settle")
        try:
            async for changes in awatch(self.repository, stop_event=self._stop, debounce=100, step=50,
                                        recursive=True, ignore_permission_denied=True):
                now = time.monotonic()
                for _, changed in changes:
                    try:
                        top = Path(changed).relative_to(self.repository).parts[0]
                    except (ValueError, IndexError):
                        continue
                    self.pending[top] = now
        except Exception:
            log.exception("the repository watcher stopped; restart the gateway to watch again")
        finally:
            settle.cancel()

    async def _settle_loop(self) -> None:
        while True:
            await asyncio.sleep(min(0.2, self.quiet / 2 or 0.05))
            now = time.monotonic()
            for name, changed in list(self.pending.items()):
                if now - changed >= self.quiet:
                    self.pending.pop(name, None)
                    try:
                        await self.process(name)
                    except Exception:  # a bad drop must never stop the zone
                        log.exception("drop %s could not be processed", name)

    # --- acting on one item ---
    async def process(self, name: str) -> None:
        async with self._lock:
            path = self.repository / name
            if not path.exists():
                await self._removed(name)
                return
            if not is_candidate(path) or (path.is_dir() and (path / PENDING_MARKER).exists()):
                return
            mark = await asyncio.to_thread(fingerprint, path)
            if self.seen.get(name) == mark:
                return
            self.seen[name] = mark
            started = time.monotonic()
            try:
                status = await self._load(name, path)
            except TurnoutError as exc:
                self._report_failure(name, exc.message, exc.details.get("model"), exc.details.get("log_tail", ""))
                return
            if status is None:
                return
            if status.state == "ready":
                self.gateway.models.pop(f"drop:{name}", None)
                await self.gateway.settle_versions(status.info.name)
                log.info("drop %s is live as %s:%d in %.2f s", name, status.info.name, status.info.version,
                         time.monotonic() - started)
            else:
                log.warning("drop %s failed: %s", name, status.reason)
            self.gateway.rebuild_routes()

    async def _load(self, name: str, path: Path) -> ModelStatus | None:
        if (path / "config.pbtxt").is_file():
            info = await asyncio.to_thread(read_entry, path)
        else:
            info = await asyncio.to_thread(self._build_package, name, path)
        if info is None:
            return None
        current = self.gateway.models.get(info.entry)
        if (current is not None and current.state == "ready" and info.manifest is not None
                and current.info.manifest == info.manifest):
            return current  # the same content again (a restart, a touch): nothing to do
        return await self.gateway.load_model(info, drop=name)

    def _build_package(self, name: str, path: Path) -> EntryInfo | None:
        staged: StagedPackage = resolve_source(_source_for(path), self.gateway.registry)
        with staged:
            result = validate_package(staged)
            if not result.ok:
                tail = "\n".join(result.log.splitlines()[-20:])
                raise PackageError(f"{name}: {result.message}", details={"model": staged.name, "log_tail": tail})
            record, _ = self.gateway.registry.register(staged)
            built = build_entry(staged, self.gateway.settings.built_repository,
                                entry=drop_entry(record.name, record.version), version=record.version,
                                content_hash=record.content_hash)
        return read_entry(built.path)

    def _report_failure(self, name: str, reason: str, model: str | None, log_tail: str) -> None:
        from gateway.core import ModelStatus

        key = f"drop:{name}"
        info = EntryInfo(entry=key, name=model or Path(name).stem, version=0, kind="package", problem=reason)
        self.gateway.models[key] = ModelStatus(entry=key, info=info, drop=name, state="failed", reason=reason,
                                               log_tail=log_tail)
        self.gateway.rebuild_routes()
        log.warning("drop %s failed: %s", name, reason)

    async def _removed(self, name: str) -> None:
        self.seen.pop(name, None)
        statuses = [s for s in self.gateway.models.values() if s.drop == name]
        names = {s.info.name for s in statuses}
        for status in statuses:
            built = (self.gateway.settings.built_repository / status.entry).is_dir()
            if status.nodes:
                await self.gateway.retire(status, "removed", f"its package {name!r} left the repository", built)
            self.gateway.models.pop(status.entry, None)
        for model in names:
            if not any(s.info.name == model for s in self.gateway.models.values()):
                self.gateway.removed[model] = f"its package {name!r} was deleted from the repository"
        if statuses:
            log.info("drop %s removed: %s unloaded", name, ", ".join(sorted(names)))
        self.gateway.rebuild_routes()

    def _remove_orphan_builds(self) -> None:
        """Built entries no loaded model refers to (a killed gateway's leftovers, removed drops)."""
        live = {entry for entry, status in self.gateway.models.items() if status.state != "unloaded"}
        for entry in self.gateway.settings.built_repository.iterdir():
            if entry.is_dir() and entry.name not in live:
                shutil.rmtree(entry, ignore_errors=True)

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import awatch

from gateway.catalog import EntryInfo, read_entry
from gateway.entries import EntryState
from gateway.models import ModelEntry, RepositoryModels
from gateway.settings import GatewaySettings
from packager import pipeline
from packager.naming import drop_entry
from packager.registry import Registry
from packager.spec import looks_like_azure_deployment
from turnout.errors import PackageError, TurnoutError

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


def _age(path: Path) -> tuple[float, str]:
    try:
        return path.lstat().st_mtime, path.name
    except OSError:
        return time.time(), path.name


@dataclass(frozen=True)
class Built:
    info: EntryInfo
    mode: str = ""


class DropZone:
    def __init__(self, models: RepositoryModels, registry: Registry, settings: GatewaySettings) -> None:
        self.models, self.registry, self.settings = models, registry, settings
        # Absolute: watchfiles reports absolute paths, which a relative repository never matches.
        self.repository = settings.repository.resolve()
        self.quiet = settings.drop_quiet_seconds
        self.seen: dict[str, str] = {}  # item -> fingerprint it was last acted on with
        self.pending: dict[str, float] = {}  # item -> monotonic time of its last change
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()

    async def stop(self) -> None:
        self._stop.set()

    # --- finding work ---
    async def initial_scan(self, settle_timeout: float = 30.0) -> None:
        # Oldest first: of two drops claiming one model name, the one that was there first keeps it.
        items = [p.name for p in sorted(self.repository.iterdir(), key=_age)] if self.repository.is_dir() else []
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
        keep = self.settings.keep_versions
        built_root = self.settings.built_repository
        if keep <= 1 or not built_root.is_dir():
            return
        newest = {m.info.name: m for m in self.models.all() if m.drop and m.ready}
        older: dict[str, list[EntryInfo]] = {}
        for path in sorted(built_root.iterdir()):
            if self.models.get(path.name) is not None:
                continue
            info = await asyncio.to_thread(read_entry, path)
            if info is None or info.problem or info.name not in newest or info.version >= newest[info.name].info.version:
                continue
            older.setdefault(info.name, []).append(info)
        for name, infos in older.items():
            for info in sorted(infos, key=lambda i: i.version, reverse=True)[: keep - 1]:
                model = await self.models.load(info, drop=newest[name].drop)
                log.info("restored %s:%d (--keep-versions %d): %s", name, info.version, keep, model.state)
            await self.models.settle(name)

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
                model = await self._load(name, path)
                if model is None or model.ready:
                    self.models.clear_failure(name)  # and its "building" line
            except TurnoutError as exc:
                self.models.report_failure(name, f"{name}: {exc.message}", exc.details.get("model"),
                                           exc.details.get("log_tail", ""))
                return
            except Exception as exc:  # an unreadable drop (a link loop, permissions) is reported like any other
                log.exception("drop %s could not be read", name)
                self.models.report_failure(name, f"{name}: could not be read ({type(exc).__name__}: {exc})", None, "")
                return
            if model is None:
                return
            if model.ready:
                await self.models.settle(model.info.name)
                log.info("drop %s is live as %s:%d in %.2f s", name, model.info.name, model.info.version,
                         time.monotonic() - started)
            else:
                log.warning("drop %s failed: %s", name, model.reason)

    async def _load(self, name: str, path: Path) -> ModelEntry | None:
        if (path / "config.pbtxt").is_file():
            info = await asyncio.to_thread(read_entry, path)
            built = Built(info) if info is not None else None
        else:
            claimed: dict[str, str | None] = {m.info.name: m.drop for m in self.models.all()
                       if m.drop not in (None, name) and m.state not in (EntryState.unloaded, EntryState.removed)
                       and m.info.kind != "package"}
            loop = asyncio.get_running_loop()

            def building(model: str, line: str) -> None:  # from the build's thread
                loop.call_soon_threadsafe(self.models.report_building, name, model, line)

            built = await asyncio.to_thread(self._build_package, path, name, claimed, building)
        if built is None:
            return None
        info = built.info
        current = self.models.get(info.entry)
        if current is not None and current.ready and info.manifest is not None and current.info.manifest == info.manifest:
            return current  # the same content again (a restart, a touch): nothing to do
        return await self.models.load(info, drop=name, mode=built.mode)

    def _build_package(self, path: Path, name: str, claimed: dict[str, str | None],
                       building: Callable[[str, str], None]) -> Built | None:
        with pipeline.stage(_source_for(path), self.registry) as staged:
            owner = claimed.get(staged.name)
            if owner is not None:
                # Two drops whose names sanitise alike ("coll a", "coll-a") would replace each other's versions,
                # and deleting either would take the model away.
                raise PackageError(f"it would serve as model {staged.name!r}, which the drop {owner!r} serves "
                                   f"already; rename it, or set another name: in its model.yaml", details={})
            options = pipeline.EnvironmentOptions(
                self.settings.environments_root, self.settings.environment_build_timeout_seconds,
                lambda line: building(staged.name, line))
            ingested = pipeline.ingest(staged, self.registry, self.settings.built_repository,
                                       lambda record: drop_entry(record.name, record.version), environment=options)
        info = read_entry(ingested.built.path)
        return Built(info, ingested.inspection.mode or "") if info is not None else None

    async def _removed(self, name: str) -> None:
        self.seen.pop(name, None)
        names = await self.models.remove_drop(name)
        if names:
            log.info("drop %s removed: %s unloaded", name, ", ".join(sorted(names)))

    def _remove_orphan_builds(self) -> None:
        """Built entries no loaded model refers to (a killed gateway's leftovers, removed drops)."""
        live = {m.name for m in self.models.all() if m.state is not EntryState.unloaded}
        for entry in self.settings.built_repository.iterdir():
            if entry.is_dir() and entry.name not in live:
                shutil.rmtree(entry, ignore_errors=True)

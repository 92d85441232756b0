"""Turn whatever was handed over (a folder, an archive, an Azure deployment YAML, a registered
``name:version``) into one normalised package layout, staged in a temporary folder:

    code/                    the code folder, scoring script inside
    azureml-models/<model>   the model folder or file, under its own name (AZUREML_MODEL_DIR's layout)
    environment/             requirements.txt / conda.yaml: its own Python environment (packager/environments.py)

That layout is also a built entry's version folder, so every later step (hashing, registering, building,
validating) works on one shape.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager import scratch
from packager.environment_assets import EnvironmentAssets, is_curated
from packager.environments import IMAGE_FILE
from packager.package import (
    SPEC_FILE,
    StagedPackage,
    parse_reference,
)
from packager.registry import Registry, default_registry_root
from packager.spec import (
    AzureDeployment,
    PackageSpec,
    check_name,
    kind_for_instance_type,
    load_azure_deployment,
    load_package_spec,
    looks_like_azure_deployment,
    read_yaml,
)
from turnout.errors import PackageError
from turnout.manifest import CODE_DIR, ENVIRONMENT_DIR, MODELS_DIR, ScoringKind

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", ".ipynb_checkpoints", ".DS_Store", ".turnout-*")


def _new_stage() -> tuple[Path, tempfile.TemporaryDirectory[str]]:
    tmp = scratch.temporary("package")
    return Path(tmp.name), tmp


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def check_links(tree: Path, roots: Iterable[Path]) -> None:
    """Refuse a symbolic link in ``tree`` that leads outside ``roots`` (its content would be copied into the
    package: a drop could carry any readable file of the server), that loops, or that leads nowhere."""
    allowed = [root.resolve() for root in roots]
    if not tree.is_dir():
        return
    for folder, dirs, files in os.walk(tree, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink():
                continue
            shown = path.relative_to(tree) if path.is_relative_to(tree) else path
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):
                raise PackageError(f"{tree}: the symbolic link {str(shown)!r} loops or leads nowhere; "
                                   "replace it with the file it should be") from None
            if not any(target == root or target.is_relative_to(root) for root in allowed):
                raise PackageError(f"{tree}: the symbolic link {str(shown)!r} leads outside the package (to {target}); "
                                   "copy the file into the package instead")


def _copy_model(model: Path, stage: Path) -> str:
    if not model.exists():
        raise PackageError(f"model path {model} does not exist")
    target = stage / MODELS_DIR / model.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if model.is_dir():
        shutil.copytree(model, target, ignore=_IGNORED)
    else:
        shutil.copy2(model, target)
    return model.name


def _copy_code(code_dir: Path, stage: Path, skip: list[Path]) -> None:
    if not code_dir.is_dir():
        raise PackageError(f"code folder {code_dir} does not exist")
    skipped = {p.resolve() for p in skip}

    def ignore(folder: str, names: list[str]) -> set[str]:
        ignored = set(_IGNORED(folder, names))
        return ignored | {n for n in names if (Path(folder) / n).resolve() in skipped}

    shutil.copytree(code_dir, stage / CODE_DIR, ignore=ignore)


def _check_script(stage: Path, spec: PackageSpec, code_dir: Path) -> None:
    if (stage / CODE_DIR / spec.scoring_script).is_file():
        return
    deployments = sorted(p.name for p in code_dir.glob("*.y*ml") if looks_like_azure_deployment(p))
    if deployments:  # a folder of Azure deployment files, as Azure's examples ship them
        raise PackageError(f"{code_dir} has no {spec.scoring_script}; it holds Azure deployment YAML files "
                           f"({', '.join(deployments)}): give one of them, e.g. {code_dir / deployments[0]}")
    raise PackageError(f"scoring script {spec.scoring_script!r} not found in {code_dir}")


def _record_environment(stage: Path, files: list[Path]) -> None:
    for file in files:
        if file.is_file():
            (stage / ENVIRONMENT_DIR).mkdir(exist_ok=True)
            shutil.copy2(file, stage / ENVIRONMENT_DIR / file.name)


def _environment_of_folder(folder: Path, spec: PackageSpec, stage: Path) -> None:
    """model.yaml's ``environment:`` (a requirements or conda file, or a list of requirements), else the
    folder's requirements.txt / conda.yaml."""
    if isinstance(spec.environment, list):
        (stage / ENVIRONMENT_DIR).mkdir(exist_ok=True)
        (stage / ENVIRONMENT_DIR / "requirements.txt").write_text("".join(f"{line}\n" for line in spec.environment),
                                                                  encoding="utf-8")
        return
    if spec.environment:
        path = folder / spec.environment
        if not path.is_file():
            raise PackageError(f"model.yaml: environment {spec.environment!r} not found in {folder} (a requirements.txt "
                               "or conda.yaml file, or a list of requirements)")
        _record_environment(stage, [path])
        return
    _record_environment(stage, [folder / name for name in ("requirements.txt", "conda.yaml", "conda.yml")])


MLMODEL = "MLmodel"
_MLFLOW_SCRIPT = Path(__file__).resolve().parent / "builtin" / "mlflow_score.py"
_MLFLOW_BATCH_SCRIPT = Path(__file__).resolve().parent / "builtin" / "mlflow_batch_score.py"


def mlflow_model_in(folder: Path) -> Path | None:
    """The MLflow model a package without a scoring script brings: the folder itself, or its model/."""
    for candidate in (folder, folder / "model"):
        if (candidate / MLMODEL).is_file():
            return candidate
    return None


def _stage_mlflow(model_dir: Path, stage: Path, spec: PackageSpec) -> str:
    """An MLflow model with no scoring script (Azure's no-code deployment): Turnout's own script serves it
    with mlflow.pyfunc, in the environment the model declares."""
    (stage / CODE_DIR).mkdir(parents=True)
    script = _MLFLOW_BATCH_SCRIPT if spec.kind is ScoringKind.batch else _MLFLOW_SCRIPT
    shutil.copy2(script, stage / CODE_DIR / spec.scoring_script)
    name = _copy_model(model_dir, stage)
    environment = stage / ENVIRONMENT_DIR
    environment.mkdir(exist_ok=True)
    requirements = model_dir / "requirements.txt"
    if requirements.is_file():
        lines = requirements.read_text(encoding="utf-8").splitlines()
    elif (model_dir / "conda.yaml").is_file():
        shutil.copy2(model_dir / "conda.yaml", environment / "conda.yaml")
        lines = []
    else:
        lines = []
    text = "\n".join(lines)
    if not re.search(r"^\s*mlflow", text, flags=re.MULTILINE | re.IGNORECASE) and not (environment / "conda.yaml").is_file():
        lines.append("mlflow-skinny")
    if lines:
        (environment / "requirements.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return name


def from_folder(folder: Path, source: str | None = None) -> StagedPackage:
    folder = folder.resolve()
    spec_file = folder / SPEC_FILE
    spec = load_package_spec(spec_file) if spec_file.is_file() else PackageSpec()
    mlflow_dir = mlflow_model_in(folder)
    if mlflow_dir is not None and not ((folder / spec.code).resolve() / spec.scoring_script).is_file():
        stage, tmp = _new_stage()
        try:
            served = _stage_mlflow(mlflow_dir, stage, spec)
        except BaseException:
            tmp.cleanup()
            raise
        name = spec.name or check_name(re.sub(r"[^A-Za-z0-9_.-]", "-", folder.name).strip("-.") or "model")
        return StagedPackage(stage, name, spec, served, source or str(folder),
                             ["an MLflow model with no scoring script: served by Turnout's mlflow.pyfunc script"],
                             _tmp=tmp)
    name = spec.name or check_name(re.sub(r"[^A-Za-z0-9_.-]", "-", folder.name).strip("-.") or "model")
    code_dir = (folder / spec.code).resolve()
    model_path = folder / spec.model_path if spec.model_path else folder / "model"
    has_model = model_path.exists() or spec.model_path is not None
    for tree in (code_dir, model_path):
        check_links(tree, (folder, code_dir, model_path))
    stage, tmp = _new_stage()
    try:
        _copy_code(code_dir, stage, skip=[model_path, spec_file])
        _check_script(stage, spec, code_dir)
        model_name = _copy_model(model_path, stage) if has_model else None
        _environment_of_folder(folder, spec, stage)
    except BaseException:
        tmp.cleanup()
        raise
    return StagedPackage(stage, name, spec, model_name, source or str(folder), _tmp=tmp)


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what one package archive may expand to, checked before anything is written. Each is set by
    an environment variable (the packager and the gateway read the same ones)."""

    max_bytes: int = 8 * 1024**3  # TURNOUT_ARCHIVE_MAX_BYTES: all members together, uncompressed
    max_ratio: float = 200.0  # TURNOUT_ARCHIVE_MAX_RATIO: uncompressed size / archive size
    max_members: int = 20_000  # TURNOUT_ARCHIVE_MAX_MEMBERS

    @classmethod
    def from_environment(cls) -> ArchiveLimits:
        defaults = cls()
        try:
            return cls(int(os.environ.get("TURNOUT_ARCHIVE_MAX_BYTES", defaults.max_bytes)),
                       float(os.environ.get("TURNOUT_ARCHIVE_MAX_RATIO", defaults.max_ratio)),
                       int(os.environ.get("TURNOUT_ARCHIVE_MAX_MEMBERS", defaults.max_members)))
        except ValueError as exc:
            raise PackageError(f"TURNOUT_ARCHIVE_MAX_*: {exc}") from None

    def check(self, archive: Path, sizes: Iterable[int]) -> None:
        """Raises as soon as the members seen so far pass a bound (a tar.gz bomb is not read to its end)."""
        total, count, packed = 0, 0, max(archive.stat().st_size, 1)
        for size in sizes:
            total, count = total + size, count + 1
            self._check(archive, total, count, packed)

    def _check(self, archive: Path, total: int, count: int, packed: int) -> None:
        if count > self.max_members:
            raise PackageError(f"{archive}: more than {self.max_members} members "
                               "(raise TURNOUT_ARCHIVE_MAX_MEMBERS if this is meant)")
        if total > self.max_bytes:
            raise PackageError(f"{archive}: expands to more than {self.max_bytes} bytes "
                               "(raise TURNOUT_ARCHIVE_MAX_BYTES if this is meant)")
        if total > 1024**2 and total / packed > self.max_ratio:
            raise PackageError(f"{archive}: expands more than {total / packed:.0f} times (to {total}+ bytes), over "
                               f"{self.max_ratio:g} times: an archive bomb? (raise TURNOUT_ARCHIVE_MAX_RATIO if this "
                               "is meant)")


def safe_extract(archive: Path, target: Path, limits: ArchiveLimits | None = None) -> None:
    """Extract without letting a member escape ``target`` (absolute paths, '..', links outside), and within
    ``limits`` (the sizes members declare are the sizes written: zipfile and tarfile stop at them)."""
    limits = limits or ArchiveLimits.from_environment()
    is_zip = archive.name.lower().endswith(".zip")
    try:
        if is_zip:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for member in infos:
                    if not _inside(target / member.filename, target):
                        raise PackageError(f"{archive}: member {member.filename!r} would be written outside the package")
                limits.check(archive, [m.file_size for m in infos])
                zf.extractall(target)
        else:
            with tarfile.open(archive) as tf:
                members: list[tarfile.TarInfo] = []

                def sizes() -> Iterator[int]:
                    for member in tf:
                        members.append(member)
                        yield member.size if member.isfile() else 0

                limits.check(archive, sizes())
                tf.extractall(target, members=members, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        kind = "zip" if is_zip else "tar"
        raise PackageError(f"{archive}: cannot be extracted as a {kind} archive (incomplete or damaged?): {exc}") from None


def bare_model(model: Path, name: str, source: str) -> StagedPackage:
    """A model with no code (Azure's ``az ml model create``): staged as ``azureml-models/<its name>``."""
    stage, tmp = _new_stage()
    try:
        model_name = _copy_model(model, stage)
    except BaseException:
        tmp.cleanup()
        raise
    return StagedPackage(stage, name, PackageSpec(name=name), model_name, source, _tmp=tmp)


def from_archive(archive: Path) -> StagedPackage:
    with scratch.temporary("archive") as tmp:
        target = Path(tmp)
        safe_extract(archive, target)
        entries = [p for p in target.iterdir() if not p.name.startswith(".")]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else target
        if root is target:
            # Name the package after the archive, not the temporary folder.
            named = target / re.sub(r"(\.tar\.gz|\.tgz|\.tar|\.zip)$", "", archive.name)
            named.mkdir()
            for entry in entries:
                entry.rename(named / entry.name)
            root = named
        return from_folder(root, source=str(archive.resolve()))


def from_azure_yaml(path: Path, registry: Registry | None = None,
                    overrides: dict[str, Any] | None = None) -> StagedPackage:
    deployment, ignored = load_azure_deployment(path, overrides)
    base = path.parent.resolve()
    if deployment.code_configuration is None:
        return _azure_mlflow(deployment, base, path, registry, ignored)
    code = deployment.code_configuration
    spec = _spec_from_azure(deployment, code.scoring_script)
    code_dir = (base / code.code).resolve()
    stage, tmp = _new_stage()
    try:
        _copy_code(code_dir, stage, skip=[])
        _check_script(stage, spec, code_dir)
        model_name = _azure_model(deployment, base, stage, registry, path)
        warnings = [f"ignored Azure keys (not used by Turnout): {', '.join(ignored)}"] if ignored else []
        warnings += _azure_environment(deployment, base, stage, registry, path)
    except BaseException:
        tmp.cleanup()
        raise
    name = _azure_package_name(deployment)
    return StagedPackage(stage, name, spec, model_name, str(path.resolve()), warnings, _tmp=tmp)


def _azure_mlflow(deployment: AzureDeployment, base: Path, path: Path, registry: Registry | None,
                  ignored: list[str]) -> StagedPackage:
    """Azure's no-code deployment: an MLflow model (``type: mlflow_model``) and no code_configuration."""
    spec = _spec_from_azure(deployment, "score.py")
    stage, tmp = _new_stage()
    try:
        staged_models = stage / ".models"
        model_name = _azure_model(deployment, base, staged_models, registry, path)
        found = mlflow_model_in(staged_models / MODELS_DIR / model_name) if model_name else None
        if found is None:
            raise PackageError(f"{path}: code_configuration (code + scoring_script) is required, unless the model "
                               "is an MLflow model (a folder with an MLmodel file), which Turnout serves itself")
        model_name = _stage_mlflow(found, stage, spec)
        shutil.rmtree(staged_models)
        warnings = [f"ignored Azure keys (not used by Turnout): {', '.join(ignored)}"] if ignored else []
        warnings.append("an MLflow model with no scoring script: served by Turnout's mlflow.pyfunc script")
        if deployment.environment is not None:
            warnings += _azure_environment(deployment, base, stage, registry, path)
    except BaseException:
        tmp.cleanup()
        raise
    return StagedPackage(stage, _azure_package_name(deployment), spec, model_name, str(path.resolve()), warnings,
                         _tmp=tmp)


def _azure_environment(deployment: AzureDeployment, base: Path, stage: Path, registry: Registry | None,
                       path: Path) -> list[str]:
    """The deployment's environment into the stage's environment/ folder; returns what to warn about."""
    environment = deployment.environment
    if environment is None:
        return []
    if isinstance(environment, str):
        if is_curated(environment):
            return [f"environment {environment!r} is an Azure curated environment: the model runs in the serving "
                    "environment (give a conda_file to build its own)"]
        assets = EnvironmentAssets(registry.root if registry is not None else default_registry_root())
        assets.copy_into(assets.resolve(environment), stage / ENVIRONMENT_DIR)
        return []
    if environment.conda_file:
        conda = base / environment.conda_file
        if not conda.is_file():
            raise PackageError(f"{path}: environment.conda_file {environment.conda_file!r} not found at {conda}")
        _record_environment(stage, [conda])
    if environment.image:
        (stage / ENVIRONMENT_DIR).mkdir(exist_ok=True)
        (stage / ENVIRONMENT_DIR / IMAGE_FILE).write_text(environment.image + "\n", encoding="utf-8")
        return [f"environment.image {environment.image} is recorded, not used: models run on the Triton node's image"
                + (", in an environment built from the conda_file" if environment.conda_file else
                   ", in the serving environment (no conda_file)")]
    return []


def _azure_package_name(deployment: AzureDeployment) -> str:
    if not isinstance(deployment.model, str) and deployment.model is not None and deployment.model.name:
        return check_name(deployment.model.name)
    if deployment.endpoint_name:
        return check_name(f"{deployment.endpoint_name}-{deployment.name}")
    return check_name(deployment.name)


def _spec_from_azure(deployment: AzureDeployment, scoring_script: str) -> PackageSpec:
    spec = PackageSpec(
        scoring_script=scoring_script,
        description=deployment.description or "",
        tags=deployment.tags,
        kind=ScoringKind.batch if deployment.is_batch else ScoringKind.online,
        environment_variables={**deployment.environment_variables,
                               **(deployment.settings.environment_variables if deployment.settings else {})},
        instance_type=deployment.instance_type,
        batch_settings=deployment.settings.model_dump(mode="json", exclude_unset=True) if deployment.settings else {},
        memory_limit=deployment.memory_limit,
    )
    spec.instance.count = deployment.instance_count
    if deployment.instance_type:
        spec.instance.kind = kind_for_instance_type(deployment.instance_type)
    settings = deployment.request_settings
    if settings and settings.request_timeout_ms:
        spec.timeout_seconds = settings.request_timeout_ms / 1000
    if deployment.settings is not None:  # a batch deployment: each run(mini_batch) is bounded by its timeout
        spec.timeout_seconds = deployment.settings.retry_settings.timeout
    return spec


def _azure_model(
    deployment: AzureDeployment, base: Path, stage: Path, registry: Registry | None, path: Path
) -> str | None:
    model = deployment.model
    if model is None:
        return None
    if isinstance(model, str):
        if not model.startswith("azureml:") and (base / model).exists():
            return _copy_model(base / model, stage)
        return _copy_registered_model(model, stage, registry, path)
    if model.path is None:
        if model.name:
            return _copy_registered_model(f"{model.name}:{model.version or 'latest'}", stage, registry, path)
        raise PackageError(f"{path}: model needs a path, or a registered name")
    return _copy_model((base / model.path).resolve(), stage)


def _copy_registered_model(reference: str, stage: Path, registry: Registry | None, path: Path) -> str | None:
    if registry is None:
        raise PackageError(f"{path}: model {reference!r} refers to a registry, and no registry was given")
    record = registry.resolve(reference)
    models = registry.path_of(record) / MODELS_DIR
    if not models.is_dir():
        return None
    shutil.copytree(models, stage / MODELS_DIR)
    entries = list(models.iterdir())
    return entries[0].name if len(entries) == 1 else None


def resolve_source(source: str, registry: Registry | None = None,
                   overrides: dict[str, Any] | None = None) -> StagedPackage:
    """Stage SOURCE; the caller owns the result (use it as a context manager). ``overrides`` (an Azure
    YAML's keys, from -n/-e/--set) apply before anything reads the file."""
    path = Path(source).expanduser()
    if path.is_dir():
        return from_folder(path)
    if path.is_file():
        lower = path.name.lower()
        if lower.endswith((".tar.gz", ".tgz", ".tar", ".zip")):
            return from_archive(path)
        if looks_like_azure_deployment(path):
            return from_azure_yaml(path, registry, overrides)
        if path.name == SPEC_FILE:
            return from_folder(path.parent)
        if lower.endswith((".yml", ".yaml")):
            read_yaml(path)  # an unfilled {{template}} or a typo: its own YAML error, with the line
            raise PackageError(f"{source}: not an Azure deployment YAML (it has none of code_configuration, "
                               "endpoint_name, model), nor a package's model.yaml")
        raise PackageError(f"{source}: not a package folder, archive or Azure deployment YAML")
    if registry is not None and parse_reference(source) and os.sep not in source:
        return registry.stage(source)
    raise PackageError(f"{source}: no such file or folder, and not a registered model")

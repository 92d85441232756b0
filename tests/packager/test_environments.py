"""What a package declares as its environment, read without building anything: requirements files, conda
files as Azure's samples write them, refusals with their reasons, and how a resolved lock is layered over
the serving environment."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from packager.environment_assets import EnvironmentAssets, is_curated
from packager.environments import EnvironmentSpec, _failure, _layered, _Log, classify, read_lock
from packager.sources import resolve_source
from turnout.errors import NotFound, PackageError


def env_folder(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "environment"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1) if name.startswith("conda_") else folder / name).write_text(
            textwrap.dedent(text))
    return folder


def test_no_environment_files_means_the_serving_environment(tmp_path: Path) -> None:
    assert EnvironmentSpec.of(tmp_path / "environment") is None
    assert EnvironmentSpec.of(env_folder(tmp_path)) is None


def test_requirements_are_normalised_and_sorted(tmp_path: Path) -> None:
    spec = EnvironmentSpec.of(env_folder(tmp_path, **{"requirements.txt": """
        # a comment
        tabulate==0.9.0   # why
        Requests >= 2.0

        """}))
    assert spec is not None
    assert spec.requirements == ("Requests>=2.0", "tabulate==0.9.0")
    assert spec.sources == ("requirements.txt",)


def test_an_azure_conda_file_maps_conda_names_and_versions_to_pypi(tmp_path: Path) -> None:
    spec = EnvironmentSpec.of(env_folder(tmp_path, conda_yaml="""
        name: model-env
        channels: [conda-forge, pytorch]
        dependencies:
          - python=3.8
          - numpy=1.21
          - scikit-learn=1.0.2=py38h1234
          - conda-forge::pandas>=1.1
          - pytorch
          - py-xgboost
          - pip
          - pip:
            - azureml-defaults
            - inference-schema[numpy-support]==1.3.0
        """))
    assert spec is not None
    assert spec.requirements == ("inference-schema[numpy-support]==1.3.0", "numpy==1.21.*", "pandas>=1.1",
                                 "scikit-learn==1.0.2", "torch", "xgboost")
    assert spec.python == "3.8"
    assert any("conda channels (conda-forge, pytorch) are not used" in note for note in spec.notes)
    # Azure's HTTP server is what Turnout replaces: said, not installed.
    assert any(note.startswith("azureml-defaults (Azure's inference HTTP server) is not installed") for note in spec.notes)


def test_azures_batch_runtime_is_not_installed(tmp_path: Path) -> None:
    spec = EnvironmentSpec.of(env_folder(tmp_path, **{"requirements.txt": "pandas\nazureml-dataset-runtime[fuse]\n"}))
    assert spec is not None and spec.requirements == ("pandas",)
    assert any(note.startswith("azureml-dataset-runtime (Azure's batch runtime) is not installed") for note in spec.notes)


@pytest.mark.parametrize("package", ["cudatoolkit=11.3", "mkl", "libgcc-ng", "cuda-nvcc"])
def test_a_conda_only_package_is_refused_by_name(tmp_path: Path, package: str) -> None:
    folder = env_folder(tmp_path, conda_yaml=f"dependencies:\n  - python=3.11\n  - {package}\n")
    with pytest.raises(PackageError, match=rf"conda.yaml: '{package}' is a conda-only package \(PyPI has no "):
        EnvironmentSpec.of(folder)


@pytest.mark.parametrize("line", ["numpy>=2", "numpy==2.1.0", "numpy~=2.0", "numpy==2.*", "numpy>2"])
def test_numpy_2_is_refused_with_the_reason(tmp_path: Path, line: str) -> None:
    spec = EnvironmentSpec.of(env_folder(tmp_path, **{"requirements.txt": line}))
    assert spec is not None
    with pytest.raises(PackageError, match=r"Triton's Python stub speaks numpy 1's ABI.*numpy<2"):
        spec.check()


@pytest.mark.parametrize("line", ["numpy", "numpy<2", "numpy>=1.21,<2", "numpy==1.26.4", "numpy==1.21.2", "numpy==1.21.*",
                                  "numpy>1.9"])
def test_numpy_1_is_accepted(tmp_path: Path, line: str) -> None:
    spec = EnvironmentSpec.of(env_folder(tmp_path, **{"requirements.txt": line}))
    assert spec is not None
    spec.check()


def test_pip_options_and_bad_lines_are_refused_naming_the_line(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"requirements.txt: '--extra-index-url x': pip options are not supported"):
        EnvironmentSpec.of(env_folder(tmp_path, **{"requirements.txt": "--extra-index-url x\ntabulate\n"}))
    with pytest.raises(PackageError, match=r"'tabulate===' is not a requirement"):
        EnvironmentSpec.of(env_folder(tmp_path, **{"requirements.txt": "tabulate===\n"}))


def test_model_yaml_environment_as_a_list_or_a_file(tmp_path: Path) -> None:
    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (listed / "model.yaml").write_text("environment:\n  - tabulate==0.9.0\n")
    with resolve_source(str(listed)) as package:
        spec = EnvironmentSpec.of(package.root / "environment")
        assert spec is not None and spec.requirements == ("tabulate==0.9.0",)
    (listed / "model.yaml").write_text("environment: deps/conda-env.yml\n")
    with pytest.raises(PackageError, match=r"environment 'deps/conda-env.yml' not found in .*a list of requirements"):
        resolve_source(str(listed))
    (listed / "deps").mkdir()
    (listed / "deps" / "conda-env.yml").write_text("dependencies:\n  - pip:\n    - tabulate\n")
    with resolve_source(str(listed)) as package:
        spec = EnvironmentSpec.of(package.root / "environment")
        assert spec is not None and spec.requirements == ("tabulate",)


LOCK = """\
jinja2==3.1.6
    # via torch
markupsafe==3.0.4
    # via jinja2
numpy==1.26.4
    # via
    #   -c constraints.txt
    #   scikit-learn
nvidia-cublas==13.1.1.3
    # via
    #   cuda-toolkit
    #   torch
cuda-toolkit==13.0.3.0
    # via torch
scikit-learn==1.5.2
    # via -r requirements.in
tabulate==0.9.0
    # via -r requirements.in
torch==2.13.0
    # via -r requirements.in
"""


def test_what_the_serving_environment_has_and_what_only_it_needs_is_layered() -> None:
    pinned, parents = read_lock(LOCK)
    assert pinned["torch"] == "2.13.0" and parents["nvidia-cublas"] == {"cuda-toolkit", "torch"}
    assert parents["tabulate"] == {"<direct>"} and parents["numpy"] == {"scikit-learn"}
    serving = {"torch": "2.13.0", "numpy": "1.26.4", "scikit-learn": "1.9.1", "jinja2": "3.1.6"}
    layered = _layered(pinned, parents, serving, {"torch", "scikit-learn", "tabulate"})
    # torch's CUDA libraries go with the serving CPU torch; another scikit-learn and tabulate are installed.
    assert layered == {"torch", "numpy", "jinja2", "markupsafe", "cuda-toolkit", "nvidia-cublas"}


@pytest.mark.parametrize(("output", "kind", "first"), [
    ("error: No solution found when resolving dependencies:\n  cause: Because no-such-pkg was not found in the "
     "package registry and you require no-such-pkg, we can conclude that your requirements are unsatisfiable.",
     "no matching distribution", "Because no-such-pkg was not found in the package registry"),
    ("error: No solution found\n  cause: Because there is no version of tabulate==99.0 and you require it",
     "no matching distribution", "Because there is no version of tabulate==99.0"),
    ("error: No solution found when resolving dependencies:\n  cause: Because you require tabulate==0.8.10 and "
     "tabulate==0.9.0, we can conclude that your requirements are unsatisfiable.",
     "resolution conflict", "No solution found when resolving dependencies:"),
    ("error: Failed to fetch: `https://pypi.org/simple/tabulate/`\n  Caused by: dns error: failed to lookup",
     "network", "Failed to fetch: `https://pypi.org/simple/tabulate/`"),
    ("error: Failed to build `scikit-learn==0.24.2`\n  cause: The build backend returned an error\n  Traceback (most "
     "recent call last):\n  ModuleNotFoundError: No module named 'pkg_resources'", "source build failed",
     "Failed to build `scikit-learn==0.24.2`"),
    ("Traceback (most recent call last):\nModuleNotFoundError: No module named 'orjson'", "import error",
     "ModuleNotFoundError: No module named 'orjson'"),
])
def test_a_failed_build_is_classified_and_leads_with_its_telling_line(output: str, kind: str, first: str) -> None:
    found_kind, found_first = classify(output)
    assert found_kind == kind
    assert found_first.startswith(first)


def test_a_python_pin_that_cannot_be_bridged_says_so(tmp_path: Path) -> None:
    log = _Log(tmp_path / "build.log", lambda _: None)
    failure = _failure(EnvironmentSpec(("numpy==1.19.5",), python="3.8"), "no matching distribution",
                       "Because there is no version of numpy==1.19.5", log)
    assert failure.status == 424
    assert "the spec pins python=3.8, but environments are built for the stub's Python 3.11" in failure.message


AZURE_ENV = """\
$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json
name: tabulate-env
image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04
conda_file: conda.yaml
description: a registered environment
"""


def test_registered_environments_are_versioned_and_immutable(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text(AZURE_ENV)
    (tmp_path / "conda.yaml").write_text("dependencies:\n  - pip:\n    - tabulate==0.9.0\n")
    assets = EnvironmentAssets(tmp_path / "registry")
    first, created = assets.create(tmp_path / "env.yml")
    assert (first.ref, created) == ("azureml:tabulate-env:1", True)
    assert assets.create(tmp_path / "env.yml") == (first, False)  # same content, same version
    (tmp_path / "conda.yaml").write_text("dependencies:\n  - pip:\n    - tabulate==0.8.10\n")
    second, created = assets.create(tmp_path / "env.yml")
    assert (second.ref, created) == ("azureml:tabulate-env:2", True)
    assert assets.resolve("azureml:tabulate-env@latest") == second
    assert assets.resolve("azureml:tabulate-env:1") == first
    with pytest.raises(NotFound, match=r"has no version 7 \(registered: 1, 2\)"):
        assets.resolve("azureml:tabulate-env:7")
    with pytest.raises(NotFound, match=r"not registered here: register it with `packager environment create -f"):
        assets.resolve("azureml:other:1")
    assert is_curated("azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu:1")
    assert is_curated("azureml://registries/azureml/environments/sklearn-1.5/labels/latest")
    assert not is_curated("azureml:tabulate-env:1")


def test_a_deployment_naming_a_registered_environment_gets_its_files(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text(AZURE_ENV)
    (tmp_path / "conda.yaml").write_text("dependencies:\n  - pip:\n    - tabulate==0.9.0\n")
    registry = tmp_path / "registry"
    EnvironmentAssets(registry).create(tmp_path / "env.yml")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (tmp_path / "blue.yml").write_text(textwrap.dedent("""\
        name: blue
        endpoint_name: shop
        code_configuration: {code: ./code, scoring_script: score.py}
        environment: azureml:tabulate-env:1
        """))
    from packager.registry import Registry

    with resolve_source(str(tmp_path / "blue.yml"), Registry(registry)) as package:
        spec = EnvironmentSpec.of(package.root / "environment")
    assert spec is not None and spec.requirements == ("tabulate==0.9.0",)
    assert spec.image == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"
    assert any("is recorded, not used" in note for note in spec.notes)


def test_a_torch_pin_the_node_does_not_serve_says_what_to_change(tmp_path: Path) -> None:
    from packager import environments

    served = environments.serving_packages()["torch"]
    spec = EnvironmentSpec.of(env_folder(tmp_path, **{"requirements.txt": "torch==1.13.0\npandas\n"}))
    assert spec is not None
    failure = environments._failure(spec, "resolution conflict", "No solution found", environments._Log(
        tmp_path / "build.log", lambda _: None))
    assert failure.details["kind"] == "heavy package"
    assert f"torch==1.13.0 (this node serves torch {served})" in failure.message
    assert "leave their versions open or pin the served one" in failure.message

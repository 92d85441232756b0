import re
from pathlib import Path

import pytest

from packager.spec import PackageSpec, kind_for_instance_type, load_azure_deployment, load_package_spec
from turnout.errors import PackageError
from turnout.manifest import InstanceKind


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_model_yaml_defaults_and_values(tmp_path: Path) -> None:
    spec = load_package_spec(write(tmp_path, "model.yaml", "name: m\ninstance: {kind: gpu, count: 2}\ntimeout_seconds: 5\n"))
    assert (spec.name, spec.instance.kind, spec.instance.count, spec.timeout_seconds) == ("m", InstanceKind.gpu, 2, 5)
    assert spec.scoring_script == "score.py" and spec.batching.max_batch_size == 64
    assert load_package_spec(write(tmp_path, "empty.yaml", "")).name is None


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="unknown key 'scoring_scirpt'"):
        load_package_spec(write(tmp_path, "model.yaml", "scoring_scirpt: s.py\n"))
    with pytest.raises(PackageError, match="unknown key 'batching.max_batch'"):
        load_package_spec(write(tmp_path, "model.yaml", "batching: {max_batch: 3}\n"))


def test_bad_values_say_what_was_given(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"'instance.count'.*got 0"):
        load_package_spec(write(tmp_path, "model.yaml", "instance: {count: 0}\n"))
    with pytest.raises(PackageError, match="invalid name"):
        load_package_spec(write(tmp_path, "model.yaml", "name: 'no spaces please'\n"))
    with pytest.raises(PackageError, match="expected a mapping"):
        load_package_spec(write(tmp_path, "model.yaml", "- a\n- b\n"))


def test_instance_type_sets_the_kind(tmp_path: Path) -> None:
    assert load_package_spec(write(tmp_path, "m.yaml", "instance_type: Standard_NC6s_v3\n")).instance.kind == "gpu"
    assert kind_for_instance_type("Standard_DS3_v2") is InstanceKind.cpu
    assert kind_for_instance_type("Standard_ND96asr_v4") is InstanceKind.gpu


AZURE_ONLINE = """\
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: blue
endpoint_name: my-endpoint
model:
  path: ./model/
code_configuration:
  code: ./onlinescoring/
  scoring_script: score.py
environment:
  conda_file: ./environment/conda.yaml
  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest
instance_type: Standard_DS3_v2
instance_count: 2
request_settings:
  request_timeout_ms: 3000
app_insights_enabled: true
liveness_probe:
  initial_delay: 10
"""


def test_azure_online_deployment(tmp_path: Path) -> None:
    deployment, ignored = load_azure_deployment(write(tmp_path, "blue.yml", AZURE_ONLINE))
    assert (deployment.name, deployment.endpoint_name, deployment.instance_count) == ("blue", "my-endpoint", 2)
    assert deployment.code_configuration is not None and deployment.code_configuration.scoring_script == "score.py"
    assert deployment.request_settings is not None and deployment.request_settings.request_timeout_ms == 3000
    assert ignored == ["app_insights_enabled", "liveness_probe"]  # environment.image: recorded (sources.py)
    assert not deployment.is_batch


def test_azure_unknown_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="unknown key 'instance_cuont'"):
        load_azure_deployment(write(tmp_path, "d.yml", AZURE_ONLINE + "instance_cuont: 3\n"))
    with pytest.raises(PackageError, match="unknown key 'code_configuration.entry'"):
        load_azure_deployment(write(tmp_path, "d.yml", AZURE_ONLINE.replace("scoring_script", "entry")))


def test_azure_batch_deployment_settings(tmp_path: Path) -> None:
    text = """\
$schema: https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json
name: nightly
endpoint_name: batch-ep
type: model
model: azureml:scorer:1
code_configuration: {code: ., scoring_script: batch_driver.py}
compute: azureml:cpu-cluster
resources: {instance_count: 2}
settings:
  mini_batch_size: 10
  output_action: append_row
  output_file_name: predictions.csv
  retry_settings: {max_retries: 3, timeout: 30}
  error_threshold: -1
  max_concurrency_per_instance: 2
"""
    deployment, ignored = load_azure_deployment(write(tmp_path, "batch.yml", text))
    assert deployment.is_batch
    assert deployment.settings is not None and deployment.settings.mini_batch_size == 10
    assert deployment.settings.max_concurrency_per_instance == 2
    assert deployment.instance_count == 2
    assert ignored == ["compute", "resources", "type"]


BATCH_MINIMAL = """\
$schema: https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json
name: nightly
endpoint_name: batch-ep
code_configuration: {code: ., scoring_script: batch_driver.py}
settings: {}
"""


def test_batch_settings_take_azures_defaults(tmp_path: Path) -> None:
    deployment, _ = load_azure_deployment(write(tmp_path, "batch.yml", BATCH_MINIMAL))
    settings = deployment.settings
    assert settings is not None
    assert (settings.max_concurrency_per_instance, settings.mini_batch_size, settings.output_action,
            settings.output_file_name, settings.retry_settings.max_retries, settings.retry_settings.timeout,
            settings.error_threshold, settings.logging_level) == (1, 10, "append_row", "predictions.csv", 3, 30, -1, "info")


def test_older_top_level_batch_keys_and_the_sdks_spelling_are_read(tmp_path: Path) -> None:
    text = BATCH_MINIMAL.replace("settings: {}\n", "mini_batch_size: 5\noutput_action: SummaryOnly\nlogging_level: WARNING\n")
    deployment, ignored = load_azure_deployment(write(tmp_path, "batch.yml", text))
    assert deployment.settings is not None
    assert (deployment.settings.mini_batch_size, deployment.settings.output_action,
            deployment.settings.logging_level) == (5, "summary_only", "warning")
    assert "logging_level" not in ignored


@pytest.mark.parametrize(("settings", "message"), [
    ("{mini_batch_size: 0}", "settings.mini_batch_size"),
    ("{output_action: append_rows}", "output_action must be append_row or summary_only, got 'append_rows'"),
    ("{retry_settings: {max_retries: 3, timeout_s: 30}}", "settings.retry_settings.timeout_s"),
    ("{error_threshold: -2}", "settings.error_threshold"),
    ("{output_file_name: ../out.csv}", "output_file_name must be a file name, not a path"),
    ("{mini_batchsize: 10}", "settings.mini_batchsize"),
])
def test_batch_settings_azure_lacks_or_cannot_take_are_refused_naming_them(tmp_path: Path, settings: str,
                                                                            message: str) -> None:
    with pytest.raises(PackageError, match=re.escape(message)):
        load_azure_deployment(write(tmp_path, "batch.yml", BATCH_MINIMAL.replace("{}", settings)))


LAUGHS = """
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
description: *h
"""


def test_yaml_aliases_are_refused_in_every_file_we_read(tmp_path: Path) -> None:
    """A 400-byte 'billion laughs' model.yaml expanded to hundreds of MB; aliases are refused instead."""
    from gateway.nodes import load_nodes_file
    from packager.spec import looks_like_azure_deployment, read_yaml

    for name in ("model.yaml", "deployment.yml", "nodes.yaml"):
        (tmp_path / name).write_text(LAUGHS)
        with pytest.raises(PackageError, match=r"aliases \(\*name\) are not accepted.*line 3"):
            read_yaml(tmp_path / name)
    with pytest.raises(PackageError, match="aliases"):
        load_package_spec(tmp_path / "model.yaml")
    with pytest.raises(PackageError, match="aliases"):
        load_nodes_file(tmp_path / "nodes.yaml")
    assert not looks_like_azure_deployment(tmp_path / "deployment.yml")
    (tmp_path / "anchors.yaml").write_text("name: m\ntags: &t {team: fraud}\n")  # an anchor alone is harmless
    assert read_yaml(tmp_path / "anchors.yaml")["tags"] == {"team": "fraud"}


def test_environment_variables_given_as_yaml_numbers_or_booleans_are_text() -> None:
    spec = PackageSpec.model_validate({"environment_variables": {"WORKERS": 2, "DEBUG": True, "RATE": 0.5}})
    assert spec.environment_variables == {"WORKERS": "2", "DEBUG": "true", "RATE": "0.5"}

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from turnout.manifest import InstanceKind
from turnout.triton.config import EntryConfig, build_model_config, render


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def test_cpu_entry_has_our_backend_tensors_and_batcher() -> None:
    config = parse(render(build_model_config(EntryConfig(name="m-v1", instance_count=2, max_batch_size=32))))
    assert config.backend == "python_scoring"
    assert config.max_batch_size == 32
    assert [(t.name, t.data_type, list(t.dims), t.optional) for t in config.input] == [
        ("BODY", mc.TYPE_STRING, [1], False),
        ("META", mc.TYPE_STRING, [1], True),
    ]
    assert [t.name for t in config.output] == ["BODY", "META"]
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 0


def test_gpu_entry_asks_for_gpu_instances() -> None:
    config = parse(render(build_model_config(EntryConfig(name="g", instance_kind=InstanceKind.gpu, instance_count=3))))
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 3)]


def test_batching_can_be_turned_off() -> None:
    config = build_model_config(EntryConfig(name="n", dynamic_batching=False, max_queue_delay_microseconds=500))
    assert not config.HasField("dynamic_batching")

"""Build a tiny ONNX logistic-regression graph (MatMul, Add, Softmax) with fixed weights into model/."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main() -> None:
    rng = np.random.default_rng(42)
    weights = rng.normal(size=(4, 3)).astype(np.float32)
    bias = np.array([0.1, -0.2, 0.05], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "iris_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = Path(__file__).parent / "model"
    out.mkdir(exist_ok=True)
    onnx.save(model, out / "classifier.onnx")
    print(f"wrote {out / 'classifier.onnx'}")


if __name__ == "__main__":
    main()

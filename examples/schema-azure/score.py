# An Azure ML scoring script with inference-schema decorators: the server passes the JSON body's keys as
# keyword arguments and the decorators turn them into a numpy array and a plain Python value.
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    global coefficients
    coefficients = np.array([1.5, -0.5, 2.0])


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0]])))
@input_schema("scale", StandardPythonParameterType(1.0))
@output_schema(StandardPythonParameterType({"predictions": [4.5]}))
def run(data, scale=1.0):
    predictions = (data @ coefficients) * scale
    return {"predictions": predictions.tolist()}

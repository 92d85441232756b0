"""Start azureml-inference-server-http bound to 127.0.0.1 (its host is hard-coded to 0.0.0.0).

Runs inside benchmarks/.venv-azml with azmlinfsrv's own arguments."""

import sys

from azureml_inference_server_http import amlserver

amlserver.DEFAULT_HOST = "127.0.0.1"

if __name__ == "__main__":
    sys.exit(amlserver.run())

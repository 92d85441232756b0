#!/usr/bin/env bash
# Turnout's developer entry point. On a fresh clone:
#   scripts/dev.sh serve   set up, build the examples, start the gateway with an embedded Triton
#   scripts/dev.sh test    set up, run the whole test suite (what CI runs)
#   scripts/dev.sh setup   only create/refresh .venv and the examples' model files
#   scripts/dev.sh bench   run benchmarks/run.py (Turnout vs Triton direct vs azureml-inference-server-http)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${TURNOUT_VENV:-.venv}
STAMP="$VENV/.turnout-setup"

setup() {
  local want
  want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "==> creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
  fi
  if [[ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
    echo "==> installing Turnout and its dependencies into $VENV (numpy<2, CPU torch: constraints.txt)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # Every install goes through constraints.txt: a stray numpy 2 silently breaks Triton's Python stub.
    "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[examples,test]"
    "$VENV/bin/python" -m pip check
    echo "$want" > "$STAMP"
  fi
  echo "==> preparing example models (trained locally, nothing downloaded)"
  "$VENV/bin/python" examples/prepare.py
}

build_examples() {
  local repo=${TURNOUT_REPOSITORY:-model_repository}
  for source in examples/sklearn-azure/blue-deployment.yml examples/torch-mlp examples/onnx-classifier \
                examples/keras-regressor examples/schema-azure; do
    "$VENV/bin/packager" build "$source" --repository "$repo"
  done
}

case "${1:-}" in
  setup)
    setup ;;
  serve)
    setup
    build_examples
    shift
    echo "==> starting the gateway (dev mode: model URLs need no key) on http://127.0.0.1:${TURNOUT_PORT:-8080}"
    echo "    try: curl -s -X POST http://127.0.0.1:${TURNOUT_PORT:-8080}/models/torch-mlp/score \\"
    echo "           -H 'Content-Type: application/json' -d @examples/torch-mlp/sample-request.json"
    exec "$VENV/bin/gateway" serve --repository "${TURNOUT_REPOSITORY:-model_repository}" \
      --state "${TURNOUT_STATE_DIR:-.turnout/gateway}" --port "${TURNOUT_PORT:-8080}" --grpc-port "${TURNOUT_GRPC_PORT:-8081}" \
      --allow-anonymous "$@" ;;
  test)
    setup
    shift
    echo "==> ruff check"
    "$VENV/bin/ruff" check .
    echo "==> mypy --strict"
    "$VENV/bin/mypy"
    exec "$VENV/bin/python" -m pytest "$@" ;;
  bench)
    setup
    shift
    exec "$VENV/bin/python" benchmarks/run.py "$@" ;;
  *)
    echo "usage: scripts/dev.sh serve|test|setup|bench [args]" >&2
    exit 2 ;;
esac

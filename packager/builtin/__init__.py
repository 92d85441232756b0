"""Scoring scripts Turnout supplies itself, for models that come without one (MLflow "no-code" models)."""

"""Every Triton entry name and registry name Turnout makes, in one place.

Three namespaces share the nodes' repositories: models built by ``packager build`` (``<name>-v<version>``),
packages dropped into the gateway's repository (``drop.<name>.v<version>``), and deployment generations
(``<endpoint>.<deployment>.g<generation>``). Triton refuses a model found in two repositories, so the
namespaces never overlap, and each name is made injective: endpoint and deployment names follow Azure's
rule (no dots, packager/spec.py), so ``<endpoint>.<deployment>`` can be read back one way only.
"""

from __future__ import annotations


def model_entry(name: str, version: int) -> str:
    return f"{name}-v{version}"


def drop_entry(name: str, version: int) -> str:
    return f"drop.{name}.v{version}"


def deployment_entry(endpoint: str, deployment: str, generation: int) -> str:
    return f"{endpoint}.{deployment}.g{generation}"


def batch_deployment_entry(endpoint: str, deployment: str, generation: int) -> str:
    """A batch deployment's entry: four parts, so it never meets an online deployment's three."""
    return f"batch.{endpoint}.{deployment}.g{generation}"


def batch_deployment_model(endpoint: str, deployment: str) -> str:
    return f"batch.{endpoint}.{deployment}"


def deployment_model(endpoint: str, deployment: str) -> str:
    """The name a deployment's packages are registered under, in the gateway's deployment registry (its
    own, so no dropped package's name can meet it). Endpoint and deployment names never hold a dot."""
    return f"{endpoint}.{deployment}"

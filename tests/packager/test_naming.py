"""Entry and registry names are injective: endpoint and deployment names follow Azure's rule (no dots),
so no two (endpoint, deployment, generation) ever share an entry or a registry name."""

from __future__ import annotations

import itertools

import pytest

from gateway.schemas import DeploymentSpec, EndpointSpec
from packager.naming import deployment_entry, deployment_model
from packager.spec import check_azure_name
from turnout.errors import PackageError


@pytest.mark.parametrize("name", ["a.b", "ab", "x" * 33, "1abc", "abc-", "a_bc", "dé-ploy", "a b c"])
def test_names_azure_rejects_are_rejected_with_the_rule(name: str) -> None:
    with pytest.raises(PackageError, match="3-32 characters, starting with a letter"):
        check_azure_name(name, "endpoint name")
    with pytest.raises(PackageError, match="invalid endpoint name .*Azure's rule"):
        EndpointSpec(name=name)
    with pytest.raises(PackageError, match="invalid deployment name .*Azure's rule"):
        DeploymentSpec(name=name, endpoint_name="good-endpoint")


@pytest.mark.parametrize("name", ["abc", "my-endpoint", "Blue2", "x" * 32])
def test_names_azure_accepts_are_accepted(name: str) -> None:
    assert check_azure_name(name, "deployment name") == name


def test_entry_and_registry_names_never_collide() -> None:
    parts = ["abc", "abc-def", "def", "abc-def-ghi", "ghi", "def-ghi"]
    pairs = [(e, d) for e, d in itertools.product(parts, parts)]
    assert len({deployment_model(e, d) for e, d in pairs}) == len(pairs)
    assert len({deployment_entry(e, d, g) for (e, d), g in itertools.product(pairs, (1, 2, 12))}) == len(pairs) * 3

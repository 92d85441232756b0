"""Placement, pure: which pool and nodes serve an entry, and the config each node loads it with.

Nothing here talks to a node or reads a file: the per-node config comes from the entry's manifest (the
packager's one source of its config.pbtxt), never from re-reading config.pbtxt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from gateway.coalesce import Coalescing
from gateway.nodes import TritonNode
from packager.spec import kind_for_instance_type
from turnout.errors import NotReady
from turnout.manifest import Manifest
from turnout.triton.config import EntryConfig, build_model_config


def pool_for_instance_type(instance_type: str | None, overrides: Mapping[str, str], default: str) -> str:
    if not instance_type:
        return default
    if instance_type in overrides:
        return overrides[instance_type]
    # Azure VM sizes: the N-series carry GPUs, everything else is CPU.
    return kind_for_instance_type(instance_type).value


def choose_nodes(pool_name: str, pool: Sequence[TritonNode], placed: Mapping[str, int], count: int,
                 pools: Sequence[str] = (), instance_type: str | None = None) -> list[TritonNode]:
    """Up to ``count`` nodes of the pool, least loaded first (``placed``: entries per node), nodes at
    their capacity last."""
    if not pool:
        raise NotReady(f"no node in pool {pool_name!r} for instance_type {instance_type!r} "
                       f"(pools: {', '.join(pools) or 'none'})", retry_after=60)
    ordered = sorted(pool, key=lambda n: (placed.get(n.name, 0) >= n.spec.capacity, placed.get(n.name, 0), n.name))
    return ordered[: min(count, len(ordered))]


@dataclass(frozen=True)
class Plan:
    """Where an entry goes and how: one load-time config per node (Triton's JSON form)."""

    nodes: tuple[TritonNode, ...]
    configs: dict[str, dict[str, Any]]
    coalescing: Coalescing


def plan(manifest: Manifest, entry: str, nodes: Sequence[TritonNode], instance_count: int) -> Plan:
    """Each node's instance kind; the deployment's instances spread over its nodes."""
    per_node = math.ceil(instance_count / max(1, len(nodes)))
    configs = {
        node.name: build_model_config(EntryConfig.from_manifest(
            manifest, entry, instance_kind=node.spec.instance_kind, instance_count=per_node))
        for node in nodes
    }
    shapes = [Coalescing.of(c) for c in configs.values()] or [Coalescing()]
    return Plan(
        nodes=tuple(nodes),
        configs={name: json_format.MessageToDict(c, preserving_proto_field_name=True) for name, c in configs.items()},
        coalescing=Coalescing(min(s.max_batch for s in shapes), max(s.instances for s in shapes)),
    )


def coalescing_of(manifest: Manifest, entry: str) -> Coalescing:
    """How a repository entry (loaded with its own config.pbtxt, made from this manifest) coalesces."""
    return Coalescing.of(build_model_config(EntryConfig.from_manifest(manifest, entry)))

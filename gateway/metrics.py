"""Prometheus metrics, in a registry of the app's own (tests build many apps; none share counters).

Triton counts a request that failed inside our backend as a success, so the gateway keeps its own."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "turnout_requests", "Scoring requests answered, by target and status code.",
            ["kind", "target", "deployment", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "turnout_request_duration_seconds", "Time from request received to answer, by target.",
            ["kind", "target", "deployment"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.mirror = Counter(
            "turnout_mirror_requests", "Mirrored copies of live requests, by outcome.",
            ["endpoint", "deployment", "outcome"], registry=self.registry,
        )
        self.node_up = Gauge("turnout_node_up", "1 when the Triton node answers its health check.",
                             ["node", "pool"], registry=self.registry)
        self.coalesced = Histogram(
            "turnout_upstream_batch_size", "Scoring requests carried by each Triton request (coalescing).",
            ["node", "entry"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )
        self.memory = Gauge("turnout_entry_memory_bytes",
                            "Memory of an entry's instances on a node (proportional set size of its stubs).",
                            ["entry", "node"], registry=self.registry)
        self.restarts = Counter("turnout_entry_restarts", "Entries restarted after their process crashed.",
                                ["entry"], registry=self.registry)

        self.batch_jobs = Gauge("turnout_batch_jobs", "Batch jobs by state.", ["state"], registry=self.registry)
        self.batch_files = Counter("turnout_batch_files", "Files of batch jobs processed, by outcome.",
                                   ["endpoint", "deployment", "outcome"], registry=self.registry)
        self.batch_mini_batches = Counter(
            "turnout_batch_mini_batches", "Mini-batches of batch jobs, by outcome (succeeded, failed, retried).",
            ["endpoint", "deployment", "outcome"], registry=self.registry)
        self.batch_latency = Histogram(
            "turnout_batch_mini_batch_duration_seconds", "Time of one call of run(mini_batch), as the gateway sees it.",
            ["endpoint", "deployment"], buckets=_LATENCY_BUCKETS, registry=self.registry)

        # Labelled children, looked up once: labels() takes a lock and builds keys on every call, and
        # observe() runs on every request.
        self._counted: dict[tuple[str, str, str, int], Any] = {}
        self._timed: dict[tuple[str, str, str], Any] = {}
        self._batches: dict[tuple[str, str], Any] = {}

    def observe(self, kind: str, target: str, deployment: str, code: int, seconds: float) -> None:
        key = (kind, target, deployment)
        counted = self._counted.get((*key, code))
        if counted is None:
            counted = self._counted[(*key, code)] = self.requests.labels(kind, target, deployment, str(code))
        timed = self._timed.get(key)
        if timed is None:
            timed = self._timed[key] = self.latency.labels(kind, target, deployment)
        counted.inc()
        timed.observe(seconds)

    def observe_batch(self, node: str, entry: str, size: int) -> None:
        child = self._batches.get((node, entry))
        if child is None:
            child = self._batches[(node, entry)] = self.coalesced.labels(node, entry)
        child.observe(size)

    def set_job_states(self, counts: dict[str, int]) -> None:
        for state, count in counts.items():
            self.batch_jobs.labels(state).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)

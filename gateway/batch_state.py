"""Batch endpoints, batch deployments, jobs and their mini-batches, durable in the gateway's state database.

A job's mini-batches are rows: what files each holds, its state, its attempts, its error, the part file that
holds its rows. The runner moves a row from ``pending`` to ``succeeded`` (its rows are in that part file by
then) or ``failed`` in one transaction, so a gateway killed at any moment resumes with exactly the work that is not done.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from gateway.state import DeploymentRecord, StateStore, now

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_endpoints (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_deployments (
    endpoint TEXT NOT NULL,
    name TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (endpoint, name)
);
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mini_batches (
    job TEXT NOT NULL REFERENCES jobs(name) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    part INTEGER NOT NULL,
    files TEXT NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    traceback TEXT NOT NULL DEFAULT '',
    part_file TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job, idx, part)
);
CREATE INDEX IF NOT EXISTS mini_batches_state ON mini_batches(job, state);
"""

# Job states, as Azure names them.
QUEUED, RUNNING, COMPLETED, FAILED, CANCELED = "Queued", "Running", "Completed", "Failed", "Canceled"
FINISHED = (COMPLETED, FAILED, CANCELED)
# Mini-batch states. ``split``: it failed as a whole, its files are retried one by one (parts 0..n-1).
PENDING, SUCCEEDED, MB_FAILED, SPLIT = "pending", "succeeded", "failed", "split"
WHOLE = -1  # the part number of a mini-batch as it was cut


class BatchEndpointRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    auth_mode: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    default_deployment: str | None = None
    key_hashes: list[str] = Field(default_factory=list)
    sealed_keys: list[str] = Field(default_factory=list)
    uid: str = ""
    key_generation: int = 0
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)


class BatchDeploymentRecord(DeploymentRecord):
    """A deployment record (its entry is placed like an online one's) with the batch settings in force."""

    settings: dict[str, Any] = Field(default_factory=dict, description="BatchSettings, as dumped")
    compute: str | None = Field(default=None, description="Azure's compute target: recorded, not used")


class JobRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    endpoint: str
    deployment: str
    input: str = Field(description="the path (folder, file or glob) as resolved at submit")
    input_type: str
    files: int
    mini_batches: int
    settings: dict[str, Any] = Field(description="BatchSettings for this job, overrides applied")
    instance_count: int
    output_dir: str = Field(description="where output_file_name is written")
    job_dir: str = Field(description="parts, logs")
    fingerprint: str = Field(description="inputs + settings: the same name with another fingerprint is a 409")
    status: str = QUEUED
    error: str = Field(default="", description="the first root error, or why the job ended as it did")
    cancel_requested: bool = False
    created: datetime = Field(default_factory=now)
    started: datetime | None = None
    ended: datetime | None = None


@dataclass(frozen=True)
class MiniBatch:
    job: str
    idx: int
    part: int
    files: list[str]
    state: str
    attempts: int
    seconds: float = 0.0
    error: str = ""
    traceback: str = ""
    part_file: str = ""  # the part file holding its rows, once it succeeded

    @property
    def key(self) -> str:
        return f"{self.idx:06d}" if self.part == WHOLE else f"{self.idx:06d}-{self.part:04d}"


@dataclass(frozen=True)
class Counts:
    files_succeeded: int
    files_failed: int
    files_pending: int
    mini_batches_done: int
    mini_batches_failed: int
    mini_batches_retried: int


def _mini_batch(row: tuple[Any, ...]) -> MiniBatch:
    job, idx, part, files, state, attempts, seconds, error, trace, part_file = row
    return MiniBatch(job, idx, part, orjson.loads(files), state, attempts, seconds, error, trace, part_file)


_MB_COLUMNS = "job, idx, part, files, state, attempts, seconds, error, traceback, part_file"
_MB_INSERT = "INSERT OR IGNORE INTO mini_batches(job, idx, part, files, size, state) VALUES(?, ?, ?, ?, ?, ?)"


class BatchStore:
    """The batch tables, on the gateway's one state database (its connection, lock and transactions)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        state.add_schema(_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Batch state is read by no route table: its changes republish nothing."""
        with self.state.transaction(notify=False) as db:
            yield db

    # --- endpoints ---
    def endpoint(self, name: str) -> BatchEndpointRecord | None:
        rows = self.state.rows("SELECT record FROM batch_endpoints WHERE name = ?", name)
        return BatchEndpointRecord.model_validate_json(rows[0][0]) if rows else None

    def endpoints(self) -> list[BatchEndpointRecord]:
        return [BatchEndpointRecord.model_validate_json(r[0])
                for r in self.state.rows("SELECT record FROM batch_endpoints ORDER BY name")]

    @staticmethod
    def put_endpoint(db: sqlite3.Connection, record: BatchEndpointRecord) -> None:
        record.updated = now()
        db.execute("INSERT INTO batch_endpoints(name, record) VALUES(?, ?) "
                   "ON CONFLICT(name) DO UPDATE SET record = excluded.record", (record.name, record.model_dump_json()))

    @staticmethod
    def delete_endpoint(db: sqlite3.Connection, name: str) -> None:
        db.execute("DELETE FROM batch_deployments WHERE endpoint = ?", (name,))
        db.execute("DELETE FROM batch_endpoints WHERE name = ?", (name,))

    # --- deployments ---
    def deployment(self, endpoint: str, name: str) -> BatchDeploymentRecord | None:
        rows = self.state.rows("SELECT record FROM batch_deployments WHERE endpoint = ? AND name = ?", endpoint, name)
        return BatchDeploymentRecord.model_validate_json(rows[0][0]) if rows else None

    def deployments(self, endpoint: str | None = None) -> list[BatchDeploymentRecord]:
        rows = (self.state.rows("SELECT record FROM batch_deployments ORDER BY endpoint, name") if endpoint is None
                else self.state.rows("SELECT record FROM batch_deployments WHERE endpoint = ? ORDER BY name", endpoint))
        return [BatchDeploymentRecord.model_validate_json(r[0]) for r in rows]

    @staticmethod
    def put_deployment(db: sqlite3.Connection, record: BatchDeploymentRecord) -> None:
        record.updated = now()
        db.execute("INSERT INTO batch_deployments(endpoint, name, record) VALUES(?, ?, ?) "
                   "ON CONFLICT(endpoint, name) DO UPDATE SET record = excluded.record",
                   (record.endpoint, record.name, record.model_dump_json()))

    @staticmethod
    def delete_deployment(db: sqlite3.Connection, endpoint: str, name: str) -> None:
        db.execute("DELETE FROM batch_deployments WHERE endpoint = ? AND name = ?", (endpoint, name))

    # --- jobs ---
    def job(self, name: str) -> JobRecord | None:
        rows = self.state.rows("SELECT record FROM jobs WHERE name = ?", name)
        return JobRecord.model_validate_json(rows[0][0]) if rows else None

    def jobs(self, endpoint: str | None = None, statuses: tuple[str, ...] = ()) -> list[JobRecord]:
        rows = self.state.rows("SELECT record, endpoint, status FROM jobs ORDER BY created, name")
        return [JobRecord.model_validate_json(r[0]) for r in rows
                if (endpoint is None or r[1] == endpoint) and (not statuses or r[2] in statuses)]

    @staticmethod
    def put_job(db: sqlite3.Connection, record: JobRecord) -> None:
        db.execute("INSERT INTO jobs(name, endpoint, status, created, record) VALUES(?, ?, ?, ?, ?) "
                   "ON CONFLICT(name) DO UPDATE SET status = excluded.status, record = excluded.record",
                   (record.name, record.endpoint, record.status, record.created.isoformat(), record.model_dump_json()))

    def status_counts(self) -> dict[str, int]:
        counted = dict(self.state.rows("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
        return {status: int(counted.get(status, 0)) for status in (QUEUED, RUNNING, *FINISHED)}

    @staticmethod
    def add_mini_batches(db: sqlite3.Connection, job: str, batches: list[list[str]]) -> None:
        db.executemany(_MB_INSERT, [(job, i, WHOLE, orjson.dumps(files).decode(), len(files), PENDING)
                                    for i, files in enumerate(batches)])

    def mini_batches(self, job: str, states: tuple[str, ...] = ()) -> list[MiniBatch]:
        rows = self.state.rows(f"SELECT {_MB_COLUMNS} FROM mini_batches WHERE job = ? ORDER BY idx, part", job)
        return [m for m in map(_mini_batch, rows) if not states or m.state in states]

    def finish_many(self, ended: list[tuple[MiniBatch, str, int, str, str, str]]) -> None:
        """(mini-batch, state, attempts, error, traceback, part file) for each, in one transaction."""
        with self.transaction() as db:
            db.executemany("UPDATE mini_batches SET state = ?, attempts = ?, error = ?, traceback = ?, part_file = ? "
                           "WHERE job = ? AND idx = ? AND part = ?",
                           [(state, attempts, error, trace, part_file, b.job, b.idx, b.part)
                            for b, state, attempts, error, trace, part_file in ended])

    def split(self, batch: MiniBatch, attempts: int, error: str, trace: str) -> list[MiniBatch]:
        """A mini-batch that failed as a whole: its files, one per part, each retried alone."""
        parts = [MiniBatch(batch.job, batch.idx, i, [f], PENDING, 0) for i, f in enumerate(batch.files)]
        with self.transaction() as db:
            db.execute("UPDATE mini_batches SET state = ?, attempts = ?, error = ?, traceback = ? "
                       "WHERE job = ? AND idx = ? AND part = ?",
                       (SPLIT, attempts, error, trace, batch.job, batch.idx, batch.part))
            db.executemany(_MB_INSERT, [(p.job, p.idx, p.part, orjson.dumps(p.files).decode(), 1, PENDING)
                                        for p in parts])
        return parts

    def counts(self, job: str) -> Counts:
        rows = self.state.rows("SELECT state, SUM(size), COUNT(*), SUM(attempts > 1 OR state = ?) FROM mini_batches "
                               "WHERE job = ? GROUP BY state", SPLIT, job)
        by_state = {state: (int(files or 0), int(count), int(retried or 0)) for state, files, count, retried in rows}
        none = (0, 0, 0)
        return Counts(files_succeeded=by_state.get(SUCCEEDED, none)[0], files_failed=by_state.get(MB_FAILED, none)[0],
                      files_pending=by_state.get(PENDING, none)[0], mini_batches_done=by_state.get(SUCCEEDED, none)[1],
                      mini_batches_failed=by_state.get(MB_FAILED, none)[1],
                      mini_batches_retried=sum(r for _, _, r in by_state.values()))

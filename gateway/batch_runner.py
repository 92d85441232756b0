"""Runs batch jobs: each mini-batch one call of the deployment's ``run(mini_batch)`` on one of its nodes.

At most ``instance_count x max_concurrency_per_instance`` calls are in flight per job, each bounded by
``retry_settings.timeout`` and retried up to ``max_retries``. A mini-batch that still fails is cut into its
files, each retried alone, so one bad file costs only itself (Azure fails the whole mini-batch). Failed files
count against ``error_threshold``. Jobs of one deployment run one after the other, in submit order.
Everything a job has done is in the state database (gateway/batch_state.py): a restarted gateway goes on
from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.batch_files import JobFiles
from gateway.batch_state import (
    CANCELED,
    COMPLETED,
    FAILED,
    MB_FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    SPLIT,
    SUCCEEDED,
    BatchDeploymentRecord,
    BatchStore,
    JobRecord,
    MiniBatch,
)
from gateway.deployments import DeploymentEntry, Deployments
from gateway.entries import Entries, EntryState
from gateway.metrics import Metrics
from gateway.nodes import TritonNode
from packager.spec import BatchSettings
from turnout.errors import NotReady, ScoringTimeout, TurnoutError
from turnout.wire import encode_request_meta

log = logging.getLogger("turnout.gateway.batch")
# The gateway's own bound on a call, past the script's (the stub enforces that one): a hung node.
CALL_GRACE_SECONDS = 10.0
NOT_READY_WAIT_SECONDS = 1.0
NOT_READY_POLL_SECONDS = 0.2
ENTRY_TTL_SECONDS = 0.5
# A call carries mini-batches worth about this long (gateway/batch_runner.py _Pace), at most MAX_CHUNK.
CHUNK_SECONDS = 0.05
MAX_CHUNK = 32
_META = encode_request_meta("POST", "", {}, inline_errors=True, path="/jobs")


def job_files(record: JobRecord) -> JobFiles:
    return JobFiles(Path(record.job_dir), Path(record.output_dir), BatchSettings.model_validate(
        record.settings).output_file_name)


class Outcome:
    """One call's result: its rows, or its error (with the script's traceback when it raised)."""

    def __init__(self, rows: str = "", count: int = 0, log_text: str = "", error: str = "", trace: str = "") -> None:
        self.rows, self.count, self.log, self.error, self.trace = rows, count, log_text, error, trace

    @property
    def ok(self) -> bool:
        return not self.error


class BatchRunner:
    def __init__(self, store: BatchStore, deployments: Deployments, entries: Entries, metrics: Metrics) -> None:
        self.store, self.deployments, self.entries, self.metrics = store, deployments, entries, metrics
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._lanes: dict[tuple[str, str], asyncio.Lock] = {}  # one job at a time per deployment
        self._cancel: dict[str, asyncio.Event] = {}
        self._busy: dict[str, int] = {}  # this runner's calls in flight per node
        self._records: dict[tuple[str, str], tuple[BatchDeploymentRecord | None, float]] = {}

    def start(self, job: str) -> None:
        if job in self._tasks and not self._tasks[job].done():
            return
        self._cancel.setdefault(job, asyncio.Event())
        self._tasks[job] = asyncio.create_task(self._guarded(job), name=f"turnout-job-{job}")

    def resume(self) -> None:
        """Jobs a stopped gateway left queued or running go on (their done mini-batches stay done)."""
        for record in self.store.jobs(statuses=(QUEUED, RUNNING)):
            log.info("resuming job %s (%s)", record.name, record.status)
            self.start(record.name)

    def cancel(self, job: str) -> None:
        self._cancel.setdefault(job, asyncio.Event()).set()

    async def wait(self, job: str) -> None:
        task = self._tasks.get(job)
        if task is not None:
            await asyncio.shield(task)

    async def stop(self) -> None:
        """The gateway stops: calls in flight are abandoned, their mini-batches stay pending for the next."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _guarded(self, job: str) -> None:
        try:
            await self._run(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must end the job visibly, never leave it Running forever
            log.exception("job %s failed in the runner", job)
            record = self.store.job(job)
            if record is not None:
                self._end(record, FAILED, f"the job runner failed: {type(exc).__name__}: {exc}")

    async def _run(self, job: str) -> None:
        record = self.store.job(job)
        if record is None or record.status not in (QUEUED, RUNNING):
            return
        lane = self._lanes.setdefault((record.endpoint, record.deployment), asyncio.Lock())
        async with lane:
            record = self.store.job(job)
            if record is None:
                return
            if record.cancel_requested:  # asked before a restart
                self._cancel[job].set()
            if record.status == QUEUED and self._cancel[job].is_set():
                self._end(record, CANCELED, "canceled before it started")
                return
            if record.status == QUEUED:
                record.status, record.started = RUNNING, datetime.now(UTC)
                self._save(record)
            await self._execute(record)

    async def _execute(self, record: JobRecord) -> None:
        settings = BatchSettings.model_validate(record.settings)
        files = job_files(record)
        files.create()
        files.log(f"{_stamp()} running: {record.files} files in {record.mini_batches} mini-batches")
        queue = deque(self.store.mini_batches(record.name, (PENDING,)))
        width = max(1, record.instance_count * settings.max_concurrency_per_instance)
        in_flight: dict[asyncio.Task[list[Outcome]], list[tuple[MiniBatch, int]]] = {}
        attempts: dict[tuple[int, int], int] = {}
        cancel = self._cancel[record.name]
        aborted = ""
        failed = self.store.counts(record.name).files_failed  # then counted here: no query per mini-batch
        pace = _Pace()

        def launch() -> None:
            while queue and len(in_flight) < width and not cancel.is_set() and not aborted:
                chunk = []
                for _ in range(pace.chunk(len(queue), width, self._most_per_call(record))):
                    batch = queue.popleft()
                    attempt = attempts.get((batch.idx, batch.part), batch.attempts) + 1
                    attempts[(batch.idx, batch.part)] = attempt
                    chunk.append((batch, attempt))
                task = asyncio.create_task(self._call(record, [b for b, _ in chunk], settings, pace))
                in_flight[task] = chunk

        while queue or in_flight:
            launch()
            if not in_flight:
                break
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            finished = [(in_flight.pop(task), task.result()) for task in done]
            launch()
            await asyncio.sleep(0)  # the freed instances get their next calls before these rows are written
            for chunk, outcomes in finished:
                retry, lost = self._settle(record, files, settings, chunk, outcomes)
                failed += lost
                for again in reversed(retry):  # retried at once: output order never waits on them long
                    queue.appendleft(again)
            threshold = settings.error_threshold
            if threshold >= 0 and failed > threshold and not aborted:
                aborted = f"error_threshold {threshold} exceeded: {failed} files failed"
                files.log(f"{_stamp()} {aborted}; no new mini-batches, waiting for those in flight")
        record = self.store.job(record.name) or record
        if aborted:
            status, reason = FAILED, aborted
        elif cancel.is_set() or record.cancel_requested:
            status, reason = CANCELED, "canceled: the mini-batches in flight finished, no new ones started"
        else:
            status, reason = COMPLETED, ""
        self._finalise(record, files, settings, status, reason)

    async def _call(self, record: JobRecord, batches: list[MiniBatch], settings: BatchSettings,
                    pace: _Pace) -> list[Outcome]:
        """One Triton request carrying ``batches``: the instance calls run() once for each, one after the
        other, each bounded by the timeout; each comes back with its own rows or error."""
        timeout = settings.retry_settings.timeout
        entry = await self._ready_entry(record, timeout)
        if entry is None or not entry.ready:
            state = entry.state.value if entry else "gone"
            reason = f" ({entry.reason})" if entry is not None and entry.reason else ""
            return [Outcome(error=NotReady(f"deployment {record.deployment!r} is {state}{reason}").message)
                    ] * len(batches)
        node = self._least_busy(entry.serving_nodes)
        job = {"output_action": settings.output_action, "logging_level": settings.logging_level,
               "timeout": settings.retry_settings.timeout}  # this job's bound, which may not be the deployment's
        items = [(orjson.dumps({"mini_batch": b.files, "job": job}), _META) for b in batches]
        generation = self.entries.generation(entry.name)
        self.entries.acquire(entry.name)
        self._busy[node.name] = self._busy.get(node.name, 0) + 1
        started = time.perf_counter()
        try:
            answers = await asyncio.wait_for(node.score_many(entry.name, items),
                                             timeout * len(batches) + CALL_GRACE_SECONDS)
        except TimeoutError:
            error = ScoringTimeout(f"the mini-batch did not finish within {timeout:g} s").message
            return [Outcome(error=error)] * len(batches)
        except TurnoutError as exc:
            details = exc.details or {}
            if details.get("crashed"):  # healed as an online request's crash is; the mini-batches are retried
                self.entries.report_crash(entry.name, "a batch job's call found its process gone", seen=generation)
            return [Outcome(log_text=str(details.get("log", "")), error=exc.message,
                            trace=str(details.get("traceback", "")))] * len(batches)
        finally:
            self.entries.release(entry.name)
            self._busy[node.name] -= 1
        seconds = time.perf_counter() - started
        pace.observe(seconds / len(batches))
        latency = self.metrics.batch_latency.labels(record.endpoint, record.deployment)
        outcomes = []
        for answer in answers:
            latency.observe(seconds / len(batches))
            if isinstance(answer, TurnoutError):
                details = answer.details or {}
                outcomes.append(Outcome(log_text=str(details.get("log", "")), error=answer.message,
                                        trace=str(details.get("traceback", ""))))
            else:
                body: dict[str, Any] = orjson.loads(answer.body)
                outcomes.append(Outcome(rows=str(body.get("rows", "")), count=int(body.get("count", 0)),
                                        log_text=str(body.get("log", ""))))
        return outcomes

    def _entry(self, record: JobRecord) -> DeploymentEntry | None:
        """The deployment's current entry; its record is read at most every ``ENTRY_TTL_SECONDS`` (an update
        is seen that late; the old generation drains its calls before it is unloaded)."""
        key = (record.endpoint, record.deployment)
        cached = self._records.get(key)
        if cached is None or time.monotonic() - cached[1] > ENTRY_TTL_SECONDS:
            cached = self._records[key] = (self.store.deployment(*key), time.monotonic())
        return self.deployments.entry_of(cached[0]) if cached[0] else None

    async def _ready_entry(self, record: JobRecord, bound: float) -> DeploymentEntry | None:
        """The deployment's entry once it serves: a restarting or loading one is waited for (up to ``bound``)
        rather than spending the mini-batch's attempts on it."""
        deadline = time.monotonic() + bound
        while True:
            entry = self._entry(record)
            if entry is not None and entry.ready:
                return entry
            if time.monotonic() >= deadline or (entry is not None and entry.state is EntryState.failed):
                await asyncio.sleep(NOT_READY_WAIT_SECONDS)  # then a retry, not a spin
                return entry
            await asyncio.sleep(NOT_READY_POLL_SECONDS)

    def _most_per_call(self, record: JobRecord) -> int:
        """What one Triton request to the entry may carry (its max_batch_size, when batching is on)."""
        entry = self._entry(record)
        return entry.coalescing.max_batch if entry is not None else 1

    def _least_busy(self, nodes: tuple[TritonNode, ...]) -> TritonNode:
        healthy = [n for n in nodes if n.healthy] or list(nodes)
        return min(healthy, key=lambda n: (self._busy.get(n.name, 0), n.name))

    def _settle(self, record: JobRecord, files: JobFiles, settings: BatchSettings,
                chunk: list[tuple[MiniBatch, int]], outcomes: list[Outcome]) -> tuple[list[MiniBatch], int]:
        """Record one call's outcomes (one transaction for all that ended); returns what to run again (the
        same mini-batch, or its files) and how many files were lost for good."""
        labels = (record.endpoint, record.deployment)
        retry: list[MiniBatch] = []
        ended: list[tuple[MiniBatch, str, int, str, str, str]] = []
        lost = 0
        first_error = ""
        succeeded = {batch.key: outcome.rows for (batch, _), outcome in zip(chunk, outcomes, strict=True) if outcome.ok}
        part_file = files.write_part(succeeded) if succeeded else ""  # before they are marked done
        for (batch, attempt), outcome in zip(chunk, outcomes, strict=True):
            files.write_user_log(batch.key, outcome.log, attempt)
            if outcome.ok:
                ended.append((batch, SUCCEEDED, attempt, "", "", part_file))
                self.metrics.batch_files.labels(*labels, "succeeded").inc(len(batch.files))
                self.metrics.batch_mini_batches.labels(*labels, "succeeded").inc()
                continue
            files.log(f"{_stamp()} mini-batch {batch.key} attempt {attempt} failed: {outcome.error}")
            if attempt <= settings.retry_settings.max_retries:
                self.metrics.batch_mini_batches.labels(*labels, "retried").inc()
                retry.append(batch)
            elif len(batch.files) > 1:
                files.log(f"{_stamp()} mini-batch {batch.key} failed {attempt} times: its files are tried one by one")
                retry += self.store.split(batch, attempt, outcome.error, outcome.trace)
            else:
                ended.append((batch, MB_FAILED, attempt, outcome.error, outcome.trace, ""))
                self.metrics.batch_files.labels(*labels, "failed").inc(len(batch.files))
                self.metrics.batch_mini_batches.labels(*labels, "failed").inc()
                lost += len(batch.files)
                first_error = first_error or f"{batch.files[0]}: {outcome.error}"
        if ended:
            self.store.finish_many(ended)
        if first_error:
            current = self.store.job(record.name) or record
            if not current.error:  # the first root error, shown by job show
                current.error = first_error
                self._save(current)
        return retry, lost

    def _finalise(self, record: JobRecord, files: JobFiles, settings: BatchSettings, status: str,
                  reason: str) -> None:
        batches = self.store.mini_batches(record.name)
        done = [(b.key, b.part_file) for b in batches if b.state == SUCCEEDED]
        if settings.output_action == "append_row" and (done or status == COMPLETED):
            rows = files.assemble(done)
            files.log(f"{_stamp()} {files.output_file}: {rows} rows from {len(done)} mini-batches")
        failures = [(b.files[0], b.error, b.traceback) for b in batches if b.state == MB_FAILED]
        files.write_errors(failures)
        if failures and not reason:
            reason = f"{len(failures)} files failed (under error_threshold {settings.error_threshold})"
        if status == COMPLETED and not failures:
            reason = ""
        self._end(record, status, reason, keep_first_error=True)
        files.log(f"{_stamp()} {status}" + (f": {reason}" if reason else ""))

    def _end(self, record: JobRecord, status: str, reason: str, keep_first_error: bool = False) -> None:
        record.status, record.ended = status, datetime.now(UTC)
        if reason and status != COMPLETED:
            record.error = reason if not (keep_first_error and record.error) else f"{reason}; first: {record.error}"
        self._save(record)
        log.info("job %s %s%s", record.name, status, f": {record.error}" if record.error else "")

    def _save(self, record: JobRecord) -> None:
        with self.store.transaction() as db:
            self.store.put_job(db, record)
        self.metrics.set_job_states(self.store.status_counts())


class _Pace:
    """How many mini-batches one call carries: one while a mini-batch takes long enough to make the call's
    own cost small; more (up to ``MAX_CHUNK``) when mini-batches are so quick that the call would dominate.
    run() is still called once per mini-batch, and never more at once than the deployment has instances."""

    def __init__(self) -> None:
        self.seconds: float | None = None  # per mini-batch, smoothed

    def observe(self, seconds: float) -> None:
        self.seconds = seconds if self.seconds is None else 0.8 * self.seconds + 0.2 * seconds

    def chunk(self, queued: int, width: int, most: int) -> int:
        if self.seconds is None:
            return 1
        wanted = int(CHUNK_SECONDS / max(self.seconds, 1e-6))
        return max(1, min(MAX_CHUNK, most, wanted, -(-queued // width)))


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


__all__ = ["SPLIT", "BatchRunner", "job_files"]

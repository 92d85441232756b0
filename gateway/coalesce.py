"""Coalescing: concurrent scoring requests for one entry on one node travel as one Triton request.

Triton's dynamic batcher forms the batches a model wants, but every request still costs a full HTTP
exchange in the gateway, in Triton's frontend and in the stub (profiled: ~0.25 ms of gateway CPU each,
on the cores the model needs). A :class:`Coalescer` keeps at most ``depth`` Triton requests in flight
per entry and node; what arrives meanwhile waits and leaves as one request of up to ``max_batch``
elements when a slot frees. Under light load nothing waits (a lone request goes out at once), so
coalescing adds no latency there; under heavy load the upstream cost is shared by the batch. Each
element is answered on its own (the backend's inline errors), so one bad request fails alone.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from turnout.errors import TurnoutError
from turnout.wire import Answer, ScoringResult, only


@dataclass(frozen=True)
class Coalescing:
    """How an entry may be coalesced: at most ``max_batch`` callers per Triton request (1: never), and
    ``instances`` model instances per node to keep busy."""

    max_batch: int = 1
    instances: int = 1

    @classmethod
    def of(cls, config: mc.ModelConfig) -> Coalescing:
        """What its dynamic batcher would put in one batch anyway; nothing when the package turned
        batching off."""
        batching = config.HasField("dynamic_batching") and config.max_batch_size > 1
        instances = sum(group.count or 1 for group in config.instance_group) or 1
        return cls(config.max_batch_size if batching else 1, instances)

    def depth(self, configured: int) -> int:
        """Triton requests in flight before callers wait: the gateway's setting, but never fewer than
        two per instance, or a run() script's instances would idle while one works through a batch."""
        return max(configured, 2 * self.instances)


SendMany = Callable[[Sequence[tuple[bytes, bytes]]], Awaitable[list[Answer]]]
_Waiting = tuple[bytes, bytes, "asyncio.Future[ScoringResult]"]


class Coalescer:
    def __init__(self, send_many: SendMany, shape: Coalescing, depth: int) -> None:
        self._send_many = send_many
        self.shape = shape
        self.max_batch = max(1, shape.max_batch)
        self.depth = max(1, shape.depth(depth))
        self._waiting: list[_Waiting] = []
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def score(self, body: bytes, meta: bytes) -> ScoringResult:
        if self._inflight < self.depth and not self._waiting:
            # A free slot and nobody queued: go out at once, on the caller's own task.
            self._inflight += 1
            try:
                return only(await self._send_many(((body, meta),)))
            finally:
                self._inflight -= 1
                self._dispatch()
        future: asyncio.Future[ScoringResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((body, meta, future))
        return await future

    def _dispatch(self) -> None:
        while self._waiting and self._inflight < self.depth:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            batch = [item for item in batch if not item[2].done()]  # callers that timed out meanwhile
            if not batch:
                continue
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            answers = await self._send_many([(body, meta) for body, meta, _ in batch])
        except BaseException as exc:  # the whole Triton request failed: every element shares its fate
            for _, _, future in batch:
                if not future.done():
                    if isinstance(exc, Exception):
                        future.set_exception(_copy(exc))
                    else:  # cancelled (the coalescer closed): so are its callers
                        future.cancel()
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, _, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, TurnoutError):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
        finally:
            self._inflight -= 1
            self._dispatch()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for _, _, future in self._waiting:
            future.cancel()
        self._waiting.clear()


def _copy(exc: Exception) -> Exception:
    """One exception object per waiting caller: a raised exception collects its raiser's traceback."""
    return copy.copy(exc).with_traceback(None)

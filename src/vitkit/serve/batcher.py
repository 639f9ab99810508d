"""Dynamic batching: images of concurrent requests are grouped into one forward pass.

One worker task takes the oldest waiting image and waits until ``max_batch_size`` images are there or the oldest has
waited ``max_wait_ms``, then runs the model on the batch in a dedicated thread, so the event loop keeps accepting and
answering requests meanwhile. Each image carries its own future. Images are decoded and checked before they are
submitted, so a bad upload is refused on its own and never reaches (or fails) a batch. The queue is bounded: a
request whose images do not fit is refused at once (:class:`QueueFull`, answered 503 with Retry-After) instead of
waiting longer and longer.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch


class QueueFull(Exception):
    """The images of a request would not fit in the queue."""


class ShuttingDown(Exception):
    """The server stopped taking new work."""


@dataclass
class _Item:
    x: torch.Tensor
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """``await batcher.submit([x1, x2])`` -> their logits rows; ``run`` is called with (B, C, H, W) in one thread.

    ``on_batch(size, seconds)`` is told of every forward pass (metrics); ``start`` / ``stop`` run on the event loop.
    """

    def __init__(
        self,
        run: Callable[[torch.Tensor], torch.Tensor],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        executor: ThreadPoolExecutor | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitkit-model")
        self.on_batch = on_batch
        self._items: deque[_Item] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._closed = False
        self._draining = False

    @property
    def depth(self) -> int:
        """Images waiting for a forward pass (not counting the batch that is running)."""
        return len(self._items)

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="vitkit-batcher")

    async def submit(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self._closed or self._worker is None:
            raise ShuttingDown
        if len(self._items) + len(xs) > self.max_queue:
            raise QueueFull
        loop = asyncio.get_running_loop()
        items = [_Item(x, loop.create_future()) for x in xs]
        self._items.extend(items)  # no await since the check above: nothing else can take the room
        assert self._arrived is not None
        self._arrived.set()
        return list(await asyncio.gather(*(i.future for i in items)))

    async def _next_batch(self) -> list[_Item]:
        assert self._arrived is not None
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._items[0].arrived + self.max_wait
        while len(self._items) < self.max_batch_size and not self._draining:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return [self._items.popleft() for _ in range(min(len(self._items), self.max_batch_size))]

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [i for i in await self._next_batch() if not i.future.done()]
            if not batch:
                continue
            x = torch.stack([i.x for i in batch])
            start = time.perf_counter()
            try:
                logits = await loop.run_in_executor(self.executor, self.run, x)
            except asyncio.CancelledError:
                for i in batch:
                    if not i.future.done():
                        i.future.set_exception(ShuttingDown())
                raise
            except Exception as e:  # the model failed: every image of this batch gets the error, the next batch runs
                for i in batch:
                    if not i.future.done():
                        i.future.set_exception(e)
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - start)
            for i, row in zip(batch, logits, strict=True):
                if not i.future.done():
                    i.future.set_result(row)

    def drain(self) -> None:
        """Stop waiting for batches to fill: what is queued runs at once (the server is shutting down)."""
        self._draining = True
        if self._arrived is not None:
            self._arrived.set()

    async def in_model_thread(self, fn: Callable, *args):
        """Run ``fn(*args)`` in the model thread, between batches (warm-up, explanations)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def stop(self) -> None:
        """Refuse new work, fail what is still waiting (nothing, after a drain) and end the worker."""
        self._closed = True
        while self._items:
            item = self._items.popleft()
            if not item.future.done():
                item.future.set_exception(ShuttingDown())
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self.executor.shutdown(wait=False, cancel_futures=True)

"""Dynamic batching, deterministically: sizes of the forward passes are counted, never timed."""

import asyncio
import threading

import pytest
import torch

from vitkit.serve.batcher import Batcher, QueueFull, ShuttingDown

HOUR_MS = 3_600_000.0  # a wait that never ends in a test: batches close because they are full


class Recorder:
    """A model stand-in: records each batch size; row i of the output is the sum of input i (so rows can be traced)."""

    def __init__(self, gate: threading.Event | None = None, fail_on: int | None = None) -> None:
        self.sizes: list[int] = []
        self.gate, self.fail_on = gate, fail_on

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            self.gate.wait(timeout=30)
        self.sizes.append(x.shape[0])
        if self.fail_on is not None and len(self.sizes) == self.fail_on:
            raise RuntimeError("model failed")
        return x.flatten(1).sum(dim=1, keepdim=True)


def run(coro):
    return asyncio.run(coro)


def inputs(n: int) -> list[torch.Tensor]:
    return [torch.full((1, 2, 2), float(i)) for i in range(n)]


async def submit_each(batcher: Batcher, xs: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    return await asyncio.gather(*(batcher.submit([x]) for x in xs))


def test_concurrent_requests_share_one_forward_pass():
    async def main():
        model = Recorder()
        b = Batcher(model, max_batch_size=8, max_wait_ms=HOUR_MS, max_queue=64)
        b.start()
        out = await submit_each(b, inputs(8))
        await b.stop()
        return model.sizes, out

    sizes, out = run(main())
    assert sizes == [8]
    assert [float(rows[0]) for rows in out] == [4.0 * i for i in range(8)]  # each request got its own row


def test_batches_are_capped_at_max_batch_size():
    async def main():
        model = Recorder()
        b = Batcher(model, max_batch_size=4, max_wait_ms=HOUR_MS, max_queue=64)
        b.start()
        out = await b.submit(inputs(12))  # one request of 12 images
        await b.stop()
        return model.sizes, out

    sizes, out = run(main())
    assert sizes == [4, 4, 4]
    assert [float(r) for r in out] == [4.0 * i for i in range(12)]


def test_batch_size_one_turns_batching_off():
    async def main():
        model = Recorder()
        b = Batcher(model, max_batch_size=1, max_wait_ms=HOUR_MS, max_queue=64)
        b.start()
        await submit_each(b, inputs(5))
        await b.stop()
        return model.sizes

    assert run(main()) == [1, 1, 1, 1, 1]


def test_zero_wait_runs_what_is_there():
    async def main():
        model = Recorder()
        b = Batcher(model, max_batch_size=64, max_wait_ms=0, max_queue=64)
        b.start()
        await b.submit(inputs(3))  # all three arrive together: one pass, without waiting for more
        await b.stop()
        return model.sizes

    assert run(main()) == [3]


def test_a_full_queue_refuses_at_once_and_recovers():
    async def main():
        gate = threading.Event()
        model = Recorder(gate)
        b = Batcher(model, max_batch_size=1, max_wait_ms=0, max_queue=3)
        b.start()
        first = asyncio.ensure_future(b.submit(inputs(1)))
        while b.depth:  # the worker has taken it and is blocked in the model thread
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(b.submit([x])) for x in inputs(3)]
        await asyncio.sleep(0)
        assert b.depth == 3
        with pytest.raises(QueueFull):
            await b.submit(inputs(1))
        with pytest.raises(QueueFull):  # a request is refused whole, not in part
            await b.submit(inputs(2))
        assert b.depth == 3
        gate.set()
        await asyncio.gather(first, *waiting)
        again = await b.submit(inputs(2))  # room again
        await b.stop()
        return model.sizes, again

    sizes, again = run(main())
    assert sizes == [1, 1, 1, 1, 1, 1]
    assert len(again) == 2


def test_a_failing_batch_fails_its_requests_only():
    async def main():
        model = Recorder(fail_on=1)
        b = Batcher(model, max_batch_size=2, max_wait_ms=HOUR_MS, max_queue=8)
        b.start()
        first = await asyncio.gather(*(b.submit([x]) for x in inputs(2)), return_exceptions=True)
        second = await submit_each(b, inputs(2))
        await b.stop()
        return first, second

    first, second = run(main())
    assert all(isinstance(r, RuntimeError) for r in first)
    assert [float(r[0]) for r in second] == [0.0, 4.0]


def test_on_batch_reports_each_forward_pass():
    seen = []

    async def main():
        b = Batcher(
            Recorder(), max_batch_size=3, max_wait_ms=HOUR_MS, max_queue=8, on_batch=lambda n, s: seen.append(n)
        )
        b.start()
        await submit_each(b, inputs(6))
        await b.stop()

    run(main())
    assert seen == [3, 3]


def test_stop_refuses_new_work():
    async def main():
        b = Batcher(Recorder(), max_batch_size=2, max_wait_ms=0, max_queue=8)
        b.start()
        await b.stop()
        with pytest.raises(ShuttingDown):
            await b.submit(inputs(1))

    run(main())


def test_drain_runs_what_is_queued_without_waiting():
    async def main():
        model = Recorder()
        b = Batcher(model, max_batch_size=8, max_wait_ms=HOUR_MS, max_queue=64)
        b.start()
        pending = asyncio.ensure_future(submit_each(b, inputs(3)))
        while b.depth < 3:
            await asyncio.sleep(0)
        b.drain()  # SIGTERM: the hour-long wait for a full batch ends now
        out = await pending
        await b.stop()
        return model.sizes, out

    sizes, out = run(main())
    assert sizes == [3] and len(out) == 3

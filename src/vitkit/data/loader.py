"""Batches for training and evaluation, with a data order that is a pure function of (seed, epoch).

``Loader.batches(epoch, start=k)`` yields the same batches an uninterrupted epoch yields from batch k
on, which is what makes a resumed run bitwise identical. Sharding for DistributedDataParallel is
built in: training pads the permutation to a multiple of the world size and rank r takes every
world_size-th index (like ``DistributedSampler``); evaluation splits without padding so metrics summed
over ranks count every sample exactly once.

In-memory uint8 data sets (IDX, CIFAR) are transformed a whole batch at a time on tensors in the
main process; image files go through a ``torch.utils.data.DataLoader`` with worker processes.
"""

import random
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from vitkit.data.transforms import DataSpec, PILTransform, tensor_eval_transform, tensor_train_transform, uint8_to_float
from vitkit.errors import VitkitError


class Batch(NamedTuple):
    x: torch.Tensor  # (B, C, H, W) normalised
    y: torch.Tensor  # (B,) int64
    skipped: int  # unreadable images dropped from this batch (skip_bad_images)


def _mix(*ints: int) -> int:
    """A 63-bit seed from several integers (deterministic across processes, unlike hash())."""
    h = 0x9E3779B97F4A7C15
    for i in ints:
        h = ((h ^ (i & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class _Items(torch.utils.data.Dataset):
    """Decode + transform one (index, seed) item; a bad image becomes None when skipping."""

    def __init__(self, dataset, transform: PILTransform, skip_bad_images: bool) -> None:
        self.dataset, self.transform, self.skip = dataset, transform, skip_bad_images

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        try:
            img, label = self.dataset[index]
        except VitkitError:
            if self.skip:
                return None
            raise
        return self.transform(img, random.Random(seed)), label


def _collate(items) -> Batch:
    good = [it for it in items if it is not None]
    skipped = len(items) - len(good)
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), skipped)
    return Batch(torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.long), skipped)


class Loader:
    def __init__(
        self,
        dataset,
        spec: DataSpec,
        *,
        batch_size: int,
        train: bool,
        aug: str = "none",
        random_resized_crop: bool = False,
        crop_padding: int = 0,
        random_erasing: float = 0.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        skip_bad_images: bool = False,
        pin_memory: bool = False,
    ) -> None:
        if len(dataset) == 0:
            raise VitkitError(f"{getattr(dataset, 'source', 'data set')}: no samples")
        self.dataset, self.spec, self.batch_size, self.train = dataset, spec, batch_size, train
        self.aug, self.rrc, self.seed = aug, random_resized_crop, seed
        self.crop_padding, self.random_erasing = crop_padding, random_erasing
        self.rank, self.world_size = rank, world_size
        self.num_workers, self.skip_bad_images, self.pin_memory = num_workers, skip_bad_images, pin_memory
        self.in_memory = getattr(dataset, "in_memory", False)
        if self.in_memory:
            self._images = torch.from_numpy(np.ascontiguousarray(dataset.images))
            self._targets = torch.from_numpy(np.asarray(dataset.targets, dtype=np.int64))
        else:
            transform = PILTransform(spec, train, aug, random_resized_crop, crop_padding, random_erasing)
            self._items = _Items(dataset, transform, skip_bad_images)

    def set_crop_padding(self, pixels: int) -> None:
        """Turn the random crop on or off between epochs (a recipe that crops only in long runs decides late)."""
        self.crop_padding = pixels
        if not self.in_memory:
            self._items.transform.crop_padding = pixels

    # --- order ---------------------------------------------------------------------------------------
    def indices(self, epoch: int) -> np.ndarray:
        """This rank's sample indices for ``epoch``, in order."""
        n = len(self.dataset)
        if not self.train:
            return np.arange(n)[self.rank :: self.world_size]
        order = np.random.default_rng(_mix(self.seed, epoch)).permutation(n)
        pad = (-n) % self.world_size
        if pad:
            order = np.concatenate([order, order[:pad]])
        return order[self.rank :: self.world_size]

    def _chunks(self, epoch: int) -> list[np.ndarray]:
        idx = self.indices(epoch)
        chunks = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.train and len(chunks) > 1 and len(chunks[-1]) < self.batch_size:
            chunks.pop()  # equal batch sizes in training (like drop_last=True)
        return chunks

    def __len__(self) -> int:
        return len(self._chunks(0))

    # --- batches -------------------------------------------------------------------------------------
    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        chunks = self._chunks(epoch)[start:]
        if self.in_memory:
            yield from self._array_batches(chunks, epoch, start)
        else:
            yield from self._file_batches(chunks, epoch)

    def __iter__(self) -> Iterator[Batch]:
        return self.batches(0)

    def _array_batches(self, chunks, epoch: int, start: int) -> Iterator[Batch]:
        for i, idx in enumerate(chunks, start=start):
            t = torch.from_numpy(idx)
            x = uint8_to_float(self._images[t], self.spec.in_chans)
            if self.train:
                g = torch.Generator().manual_seed(_mix(self.seed, epoch, i, self.rank))
                x = tensor_train_transform(x, self.spec, self.aug, self.rrc, g, self.crop_padding, self.random_erasing)
            else:
                x = tensor_eval_transform(x, self.spec)
            yield Batch(x, self._targets[t], 0)

    def _file_batches(self, chunks, epoch: int) -> Iterator[Batch]:
        plan = [[(int(j), _mix(self.seed, epoch, int(j))) for j in idx] for idx in chunks]
        loader = DataLoader(
            self._items,
            batch_sampler=plan,
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.pin_memory,
        )
        try:
            yield from loader
        except VitkitError as e:  # a worker's error arrives wrapped with its traceback: keep the message
            lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
            msg = lines[-1].removeprefix("vitkit.errors.VitkitError: ") if lines else str(e)
            raise VitkitError(msg) from None

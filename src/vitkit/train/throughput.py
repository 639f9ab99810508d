"""Is the loader or the model the bottleneck?  ``python -m vitkit.train.throughput --model vit_tiny_patch4_28``

Measures, on the same data and batch size:
  * loader img/s, in-memory tensor path (IDX/CIFAR: whole batches augmented as tensors, main process),
  * loader img/s, PIL path with N worker processes (how image folders are read), for comparison,
  * model img/s for one training step (forward + backward + AdamW) at the model's input size.
Prints a table and, with ``--json FILE``, writes the numbers.
"""

import argparse
import time

import torch

from vitkit.data import DataSpec, Loader, build_dataset
from vitkit.factory import create_model
from vitkit.models.registry import parse_overrides
from vitkit.train.optim import adamw


class _AsFiles:
    """Present an in-memory data set as if it were files, to time the PIL + worker path on it."""

    in_memory = False

    def __init__(self, ds) -> None:
        self.ds, self.classes, self.channels = ds, ds.classes, ds.channels

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


def _rate(loader: Loader, max_batches: int) -> float:
    it = loader.batches(0)
    next(it)  # start-up (worker processes) is not throughput
    n, t0 = 0, time.perf_counter()
    for i, b in enumerate(it):
        n += len(b.y)
        if i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t0)


def measure(model_name: str, data: str, batch_size: int, aug: str, batches: int, workers: int, model_args: dict):
    ds = build_dataset(data, "train")
    model = create_model(model_name, num_classes=len(ds.classes), in_chans=ds.channels, **model_args)
    spec = DataSpec.from_model(model, ds.channels)
    out = {"model": model_name, "batch_size": batch_size, "aug": aug, "threads": torch.get_num_threads()}
    tensor_loader = Loader(ds, spec, batch_size=batch_size, train=True, aug=aug)
    out["loader_tensor_img_s"] = _rate(tensor_loader, batches)
    if workers >= 0:
        pil_loader = Loader(_AsFiles(ds), spec, batch_size=batch_size, train=True, aug=aug, num_workers=workers)
        out["loader_pil_img_s"] = _rate(pil_loader, batches)
        out["pil_workers"] = workers
    opt = adamw(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, *spec_shape(spec))
    y = torch.randint(0, len(ds.classes), (batch_size,))
    model.train()
    for i in range(batches + 2):
        if i == 2:
            t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    out["model_train_img_s"] = batch_size * batches / (time.perf_counter() - t0)
    out["loader_over_model"] = out["loader_tensor_img_s"] / out["model_train_img_s"]
    return out


def spec_shape(spec: DataSpec) -> tuple[int, int, int]:
    return (spec.in_chans, *spec.img_size)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit_tiny_patch4_28")
    p.add_argument("--model-args", default="", help="config overrides, e.g. depth=6,embed_dim=128")
    p.add_argument("--data", default="sample")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--aug", default="trivialaugment", choices=["none", "flip", "randaugment", "trivialaugment"])
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--workers", type=int, default=2, help="PIL-path workers (-1: skip the PIL measurement)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    p.add_argument("--json", help="also write the numbers to this file")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    r = measure(a.model, a.data, a.batch_size, a.aug, a.batches, a.workers, parse_overrides(a.model_args))
    width = max(len(k) for k in r)
    for k, v in r.items():
        print(f"{k:<{width}}  {v:.1f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if a.json:
        from vitkit.utils.io import atomic_write_json

        atomic_write_json(a.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Data sets, transforms and loaders without torchvision.

    ds = build_dataset("fashion-mnist:/data/fm", "train")     # .classes, .targets, ds[i] -> (PIL image, label)
    spec = DataSpec.from_model(model)                          # size, channels, mean/std from model.data_config
    loader = Loader(ds, spec, batch_size=128, train=True, aug="trivialaugment")
    for x, y, skipped in loader.batches(epoch): ...

Sources: ``sample`` (bundled Fashion-MNIST subset), ``fashion-mnist:DIR``, ``mnist:DIR``, ``cifar10:DIR``,
``cifar100:DIR``, ``folder:DIR`` (one sub-folder per class, optional train/val/test level), ``csv:FILE``
(rows ``path,label``).
"""

from vitkit.data.datasets import (
    FASHION_MNIST_CLASSES,
    SAMPLE_DIR,
    ArrayDataset,
    FileDataset,
    build_dataset,
    load_cifar,
    load_csv,
    load_idx,
    parse_source,
    read_idx,
    safe_unpickle,
    write_idx,
)
from vitkit.data.images import IMAGE_EXTENSIONS, open_image, to_channels
from vitkit.data.loader import Batch, Loader
from vitkit.data.transforms import DataSpec, PILTransform, mixup_cutmix, smooth_one_hot

__all__ = [
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "SAMPLE_DIR",
    "ArrayDataset",
    "Batch",
    "DataSpec",
    "FileDataset",
    "Loader",
    "PILTransform",
    "build_dataset",
    "load_cifar",
    "load_csv",
    "load_idx",
    "mixup_cutmix",
    "open_image",
    "parse_source",
    "read_idx",
    "safe_unpickle",
    "smooth_one_hot",
    "to_channels",
    "write_idx",
]

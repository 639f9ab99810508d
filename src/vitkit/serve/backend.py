"""The model behind the API: PyTorch (the inference-optimised model) or onnxruntime, and its description.

A backend is called from the one model thread with a ready batch (B, C, H, W) on the CPU and returns float32 logits
on the CPU; the PyTorch model stays at hand in both cases for the description and for explanations.
"""

import tempfile
from typing import Any

import torch

from vitkit.data.transforms import DataSpec
from vitkit.errors import VitkitError
from vitkit.predict import class_name

BACKENDS = ("torch", "onnx")


class Backend:
    """``backend(x) -> logits``; ``model`` is the PyTorch model (names, data config, explanations)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str = "cpu") -> None:
        num_classes = getattr(getattr(model, "config", None), "num_classes", 0)
        if not num_classes:
            raise VitkitError("this model has no classifier head (num_classes=0); serve a classifier checkpoint")
        self.model = model
        self.device = torch.device(device)
        self.spec = DataSpec.from_model(model)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend holds outside the process (temporary files)."""

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers: enough for a client to prepare its own inputs and read the outputs."""
        model, spec = self.model, self.spec
        n = model.config.num_classes
        return {
            "name": getattr(model, "model_name", None) or model.family,
            "family": model.family,
            "num_classes": n,
            "classes": [class_name(model, i) for i in range(n)],
            "input_size": [spec.in_chans, *spec.img_size],
            "mean": list(spec.mean),
            "std": list(spec.std),
            "interpolation": spec.interpolation,
            "crop_pct": spec.crop_pct,
            "parameters": sum(p.numel() for p in model.parameters()),
            "backend": self.name,
            "device": str(self.device),
        }


class TorchBackend(Backend):
    """The model itself (``vitkit serve`` passes the :func:`vitkit.optimize` copy) on ``device``."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu") -> None:
        super().__init__(model, device)
        self.model = model.to(self.device).eval()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x.to(self.device)).float().cpu()


class OnnxBackend(Backend):
    """The model exported to ONNX in a private temporary folder (removed on close) and run by onnxruntime."""

    name = "onnx"

    def __init__(self, model: torch.nn.Module, threads: int | None = None) -> None:
        from vitkit.export import onnx_session

        super().__init__(model, "cpu")
        self._folder = tempfile.TemporaryDirectory(prefix="vitkit-serve-")
        try:
            self.runner = onnx_session(model, threads=threads or None, directory=self._folder.name)
        except BaseException:
            self._folder.cleanup()
            raise

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x).float()

    def close(self) -> None:
        self._folder.cleanup()


def make_backend(model: torch.nn.Module, kind: str = "torch", *, device: str = "cpu", threads: int = 0) -> Backend:
    if kind == "torch":
        return TorchBackend(model, device)
    if kind == "onnx":
        if device != "cpu":
            raise VitkitError(f"--backend onnx runs on the CPU; drop --device {device} or use --backend torch")
        return OnnxBackend(model, threads)
    raise VitkitError(f"--backend must be one of {', '.join(BACKENDS)}, got {kind!r}")

"""ONNX export (dynamic batch, and dynamic image size where the family allows it), int8 quantisation of the exported
graph with onnxruntime's quantiser, and an onnxruntime runner.

ViT resamples its position embedding to the input grid and CvT is fully convolutional in space, so both
export with a dynamic height/width. Swin's window partition and its attention mask depend on the
feature-map size at trace time, so Swin is exported with a fixed size (``dynamic_size=None`` picks that
per family). Export uses the TorchScript-based exporter (``dynamo=False``): it needs no extra packages and
keeps the graph close to the module structure.
"""

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vitkit.errors import VitkitError
from vitkit.utils.io import atomic_write

# families whose forward is valid at any input size the patching allows
DYNAMIC_SIZE_FAMILIES = {"vit", "cvt"}
OPSET = 18  # Resize with antialias (ViT's position-embedding resampling) needs opset 18


def _bicubic_aa_symbolic(g, input, output_size, align_corners, scale_factors):
    """``aten::_upsample_bicubic2d_aa`` as an ONNX Resize; PyTorch's antialiased bicubic is PIL's (a = -0.5,
    weights renormalised at the border, i.e. exclude_outside), which is what ORT's antialias Resize computes."""
    shape = g.op("Shape", input)
    start, end = (g.op("Constant", value_t=torch.tensor([i])) for i in (0, 2))
    sizes = g.op("Concat", g.op("Slice", shape, start, end), output_size, axis_i=0)
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    return g.op(
        "Resize",
        input,
        empty,
        empty,
        sizes,
        mode_s="cubic",
        antialias_i=1,
        exclude_outside_i=1,
        cubic_coeff_a_f=-0.5,
        coordinate_transformation_mode_s="half_pixel",
    )


_registered = False


def _register_symbolics() -> None:
    global _registered
    if not _registered:
        torch.onnx.register_custom_op_symbolic("aten::_upsample_bicubic2d_aa", _bicubic_aa_symbolic, OPSET)
        _registered = True


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise VitkitError(f"ONNX export needs {module}: pip install 'vitkit[onnx]'") from None


def supports_dynamic_size(model: nn.Module) -> bool:
    return getattr(model, "family", "") in DYNAMIC_SIZE_FAMILIES


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: tuple[int, int, int] | None = None,
    dynamic_batch: bool = True,
    dynamic_size: bool | None = None,
    opset: int = OPSET,
    check: bool = True,
) -> Path:
    """Write ``model`` as an ONNX graph with input ``pixel_values`` (B, C, H, W) and output ``logits``.

    ``dynamic_size=None`` makes H and W dynamic for families that support it (ViT, CvT) and fixed otherwise;
    ``True`` on a family that does not support it is an error (the graph would be wrong at other sizes).
    The file is written atomically; ``check`` runs ``onnx.checker`` on it.
    """
    onnx = _require("onnx")
    family = getattr(model, "family", "")
    if dynamic_size is None:
        dynamic_size = supports_dynamic_size(model)
    elif dynamic_size and not supports_dynamic_size(model):
        raise VitkitError(
            f"dynamic_size=True is not supported for family {family!r} (its graph depends on the image size); "
            "export one file per size"
        )
    if input_size is None:
        input_size = tuple(model.data_config["input_size"]) if hasattr(model, "data_config") else (3, 224, 224)
    _register_symbolics()
    c, h, w = input_size
    if dynamic_size and family == "vit":
        # trace away from the native grid so the position-embedding resampling is part of the graph
        # (at the native grid the model skips it, and the trace would hard-code that size)
        p = model.config.patch_size
        h, w = h + p, w + 2 * p
    param = next(iter(model.parameters()))
    x = torch.randn(2 if dynamic_batch else 1, c, h, w, device=param.device, dtype=param.dtype)
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_size:
        axes.update({2: "height", 3: "width"})
    dynamic_axes = {"pixel_values": axes, "logits": {0: "batch"} if dynamic_batch else {}}
    was_training = model.training
    model.eval()
    path = Path(path)

    def write(tmp: str) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints derived from shapes
            torch.onnx.export(
                model,
                (x,),
                tmp,
                input_names=["pixel_values"],
                output_names=["logits"],
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        if check:
            onnx.checker.check_model(tmp)

    try:
        atomic_write(path, write)
    finally:
        model.train(was_training)
    return path


class OnnxRunner:
    """A model-like wrapper around an onnxruntime session: ``runner(x) -> logits`` (torch in, torch out)."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's idle threads spin by default and would steal the cores from whatever runs next (benchmarks
        # alternate ORT with PyTorch)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
        (out,) = self.session.run(None, {self.input_name: arr})
        return torch.from_numpy(out)


def quantize_onnx_int8(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """An int8 copy of an exported graph: weights of every MatMul / Gemm quantised per output channel once, their
    activations per call (onnxruntime's dynamic quantisation; u8 x s8 products, which its CPU kernels run on VNNI /
    AMX-INT8 where the processor has them). Convolutions, normalisation and softmax stay float32."""
    _require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(target)

    def write(tmp: str) -> None:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantiser logs advice to run its pre-processing (shape inference) first
        try:
            quantize_dynamic(
                str(source), tmp, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"]
            )
        finally:
            root.setLevel(level)

    atomic_write(target, write)
    return target


def onnx_session(
    model: nn.Module, *, input_size=None, threads: int | None = None, directory=None, int8: bool = False
) -> OnnxRunner:
    """Export ``model`` to a temporary (or given) directory and open it with onnxruntime (``int8``: quantised)."""
    directory = Path(directory or tempfile.mkdtemp(prefix="vitkit-onnx-"))
    path = export_onnx(model, directory / "model.onnx", input_size=input_size)
    if int8:
        path = quantize_onnx_int8(path, directory / "model.int8.onnx")
    return OnnxRunner(path, threads=threads)

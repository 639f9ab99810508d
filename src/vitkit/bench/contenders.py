"""The contenders of a benchmark: vitkit (optimized, reference and faster modes), transformers and timm, all with
the same weights where the peer can take them."""

import dataclasses
import tempfile
import time
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.convert import HF_CONFIGS
from vitkit.engine import optimize, training_path
from vitkit.errors import VitkitError
from vitkit.factory import create_model
from vitkit.hub import from_pretrained
from vitkit.train.optim import adamw

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("optimized", "reference", "compile", "onnx", "onnx-int8", "int8", "bf16-weights")
TRAINABLE = ("reference", "compile")  # an optimized model is inference-only
CPU_ONLY = ("onnx", "onnx-int8", "int8")  # onnxruntime's CPU provider, fbgemm int8
BF16_ONLY = ("bf16-weights",)  # vitkit.optimize(model, bf16_weights=True): the model itself in bfloat16


@dataclasses.dataclass
class Contender:
    name: str
    impl: str  # vitkit | transformers | timm
    mode: str  # one of MODES for vitkit, "eager" for the peers
    dtype: str  # fp32 | bf16
    model: Any  # nn.Module, or an OnnxRunner
    trainable: bool = True
    setup_s: float = 0.0  # export / quantisation / optimisation time; compile time is the first call's
    weights: str = "shared"
    input_size: tuple[int, ...] = (3, 224, 224)  # (C, H, W) of one image
    optimizer: Any = None
    adamw: str = "default"  # "fused": PyTorch's fused AdamW kernel (what `vitkit train` uses); "default": its loop
    report: Any = None  # vitkit.optimize's OptimizationReport for optimized modes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "transformers":
            return self.model(pixel_values=x).logits
        out = self.model(x)
        return out.logits if hasattr(out, "logits") else out


def spec_name(spec: dict[str, str]) -> str:
    mode = spec["mode"] if spec["mode"] not in ("optimized", "eager") else ""
    extra = [s for s in (mode, spec["dtype"]) if s and s != "fp32"]
    return spec["impl"] + (f"[{','.join(extra)}]" if extra else "")


def contender_specs(
    modes: list[str], dtypes: list[str], compare: bool, device: torch.device, peer_adamw: str = "default"
) -> list[dict[str, str]]:
    """vitkit in each mode and dtype; with ``compare`` also vitkit's reference model, transformers and timm.

    Training steps use AdamW: vitkit the fused kernel its trainer uses, the peers ``peer_adamw`` ("default":
    ``torch.optim.AdamW()`` as a plain training loop writes it; "fused": the same kernel as vitkit).
    """
    if compare and "reference" not in modes:
        modes = [*modes, "reference"]
    specs = []
    for mode in modes:
        for dtype in dtypes:
            if mode in CPU_ONLY and (dtype != "fp32" or device.type != "cpu"):
                continue  # these modes are CPU float32 only: autocast does not apply
            if mode in BF16_ONLY and dtype != "bf16":
                continue
            specs.append({"impl": "vitkit", "mode": mode, "dtype": dtype, "adamw": "fused"})
    if compare:
        for dtype in dtypes:
            specs.append({"impl": "transformers", "mode": "eager", "dtype": dtype, "adamw": peer_adamw})
            specs.append({"impl": "timm", "mode": "eager", "dtype": dtype, "adamw": peer_adamw})
    return specs


def timm_available() -> bool:
    try:
        import timm  # noqa: F401

        return True
    except Exception:  # timm's import fails in several ways when torchvision does not match torch
        return False


def build_vitkit(name: str, img_size: int | None, overrides: dict[str, Any]) -> nn.Module:
    kw = dict(overrides)
    if img_size is not None:
        kw["img_size"] = img_size
    return create_model(name, drop_path_rate=0.0, **kw)


def hf_model(config: Any) -> nn.Module:
    """transformers' image classifier for a vitkit config, randomly initialised."""
    import transformers

    fields = HF_CONFIGS[config.family](config)
    hf_cfg = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    return transformers.AutoModelForImageClassification.from_config(hf_cfg)


def build_hf_pair(name: str, img_size: int | None, overrides: dict[str, Any], seed: int = 0):
    """(vitkit model, transformers model) with identical weights: HF init -> save_pretrained -> from_pretrained."""
    config = build_vitkit(name, img_size, overrides).config
    torch.manual_seed(seed)
    hf = hf_model(config)
    with tempfile.TemporaryDirectory(prefix="vitkit-bench-") as tmp:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        hf.save_pretrained(tmp)
        model = from_pretrained(tmp)
    model.model_name = name
    return model, hf


def build_timm(name: str, vitkit_model: nn.Module) -> tuple[nn.Module, str]:
    """timm's model of the same name, given vitkit's weights when the state dict fits (vitkit uses timm's names)."""
    import timm

    cfg = vitkit_model.config
    m = timm.create_model(name, pretrained=False, num_classes=cfg.num_classes, img_size=cfg.img_size)
    try:
        m.load_state_dict(vitkit_model.state_dict(), strict=True)
        return m, "shared"
    except RuntimeError as e:
        return m, f"timm init (state dict did not fit: {str(e).splitlines()[0]})"


def make_mode(
    model: nn.Module, mode: str, *, threads: int | None, input_size, inplace: bool = False
) -> tuple[Any, float, Any]:
    """vitkit's reference model in a mode: (callable model, setup seconds, optimization report or None).

    ``inplace``: the reference model is not needed afterwards (optimize rewrites it instead of a copy).
    """
    if mode not in MODES:
        raise VitkitError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    t0 = time.perf_counter()
    if mode == "reference":
        return model, 0.0, None
    if mode == "compile":
        return torch.compile(model), 0.0, None  # compiles lazily: the first call's time is reported as compile time
    if mode in ("onnx", "onnx-int8"):
        from vitkit.export import onnx_session

        runner = onnx_session(model, input_size=input_size, threads=threads, int8=mode == "onnx-int8")
        return runner, time.perf_counter() - t0, None
    if mode == "int8":
        from vitkit.engine.quantize import quantize_dynamic_int8

        model = quantize_dynamic_int8(model)
    # optimized, int8 (quantized), bf16-weights
    fast = optimize(model, inplace=inplace, bf16_weights=mode == "bf16-weights")
    return fast, time.perf_counter() - t0, fast.optimization


def autocast(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")


def infer_step(c: Contender, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if c.mode in ("onnx", "onnx-int8"):
        return c.model(x)
    with torch.inference_mode(), autocast(device, c.dtype):
        return c.forward(x)


def train_step(c: Contender, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Forward, cross-entropy, backward and an AdamW step (fused or PyTorch's default loop, see ``c.adamw``).

    vitkit's forward runs through the engine's training shortcuts, as ``vitkit train`` runs it.
    """
    c.model.train()
    if c.optimizer is None:
        params = c.model.parameters()
        c.optimizer = adamw(params, lr=1e-4) if c.adamw == "fused" else torch.optim.AdamW(params, lr=1e-4)
    c.optimizer.zero_grad(set_to_none=True)
    shortcuts = training_path(c.model) if c.impl == "vitkit" else nullcontext()
    with autocast(device, c.dtype), shortcuts:
        loss = F.cross_entropy(c.forward(x).float(), y)
    loss.backward()
    c.optimizer.step()
    return loss.detach()


def inputs(batch: int, input_size, num_classes: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *input_size, generator=g).to(device)
    y = torch.randint(0, max(1, num_classes), (batch,), generator=g).to(device)
    return x, y


def build_contender(
    name: str,
    spec: dict[str, str],
    img_size: int | None,
    overrides: dict[str, Any],
    device: torch.device,
    threads: int | None,
    pair: tuple[nn.Module, nn.Module | None] | None = None,
) -> Contender:
    impl, mode, dtype = spec["impl"], spec["mode"], spec["dtype"]
    adamw_kind = spec.get("adamw", "fused" if impl == "vitkit" else "default")
    if impl == "vitkit":
        base = pair[0] if pair is not None else build_vitkit(name, img_size, overrides)
        base = base.to(device).eval()
        input_size = tuple(base.data_config["input_size"])
        model, setup, report = make_mode(base, mode, threads=threads, input_size=input_size, inplace=pair is None)
        c = Contender(spec_name(spec), impl, mode, dtype, model, mode in TRAINABLE, setup, report=report)
    elif impl == "transformers":
        if pair is not None and pair[1] is not None:
            vk, hf = pair
            input_size = tuple(vk.data_config["input_size"])
        else:  # the memory subprocess: only the transformers model may live in it
            config = build_vitkit(name, img_size, overrides).config
            input_size = config.input_size
            hf = hf_model(config)
        c = Contender(spec_name(spec), impl, mode, dtype, hf.to(device).eval())
    elif impl == "timm":
        vk = pair[0] if pair is not None else build_vitkit(name, img_size, overrides)
        input_size = tuple(vk.data_config["input_size"])
        tm, weights = build_timm(name, vk)
        c = Contender(spec_name(spec), impl, mode, dtype, tm.to(device).eval(), weights=weights)
    else:
        raise VitkitError(f"unknown implementation {impl!r}")
    c.input_size = tuple(input_size)
    c.adamw = adamw_kind
    return c

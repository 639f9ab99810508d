"""``vitkit export SOURCE OUT``: an ONNX graph of a model, checked against PyTorch with onnxruntime; or, with
``--format transformers|timm|vitkit``, a checkpoint directory those libraries load."""

import sys
import tempfile
from pathlib import Path

import torch

from vitkit.cli._args import add_model_name
from vitkit.errors import VitkitError

FORMATS = ("onnx", "transformers", "timm", "vitkit")


def add_arguments(parser) -> None:
    parser.add_argument(
        "source", help="a registered model name, checkpoint directory, run directory, hf-hub:id or weights file"
    )
    parser.add_argument("output", help="the .onnx file to write (atomically), or the directory for other formats")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help="onnx (default); transformers: config.json + preprocessor_config.json + model.safetensors for "
        "AutoModelForImageClassification; timm: timm's hub format (ViT, Swin); vitkit: vitkit's checkpoint",
    )
    parser.add_argument("--img-size", type=int, default=0, help="ONNX trace size (0 = the model's own)")
    parser.add_argument("--static-batch", action="store_true", help="ONNX: fix the batch size to 1")
    parser.add_argument("--static-size", action="store_true", help="ONNX: fix the image size even where it may vary")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="ONNX: quantise the weight matmuls to int8 with onnxruntime's quantiser (runs on VNNI / AMX-INT8 units)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip comparing onnxruntime with PyTorch")
    add_model_name(parser)


def run(args) -> int:
    from vitkit.cli._args import inference_model
    from vitkit.factory import create_model
    from vitkit.models.registry import list_models

    if args.source in list_models():
        model = create_model(args.source).eval()  # random weights: the graph alone (serving stacks, inspection)
    else:
        model = inference_model(args.source, reference=True, model_name=args.model)
    if args.format != "onnx":
        from vitkit.hub import save_pretrained

        used = {"--img-size": args.img_size, "--static-batch": args.static_batch, "--static-size": args.static_size}
        used["--int8"] = args.int8
        onnx_only = [flag for flag, on in used.items() if on]
        if onnx_only:
            raise VitkitError(f"{', '.join(onnx_only)}: only with --format onnx")
        path = save_pretrained(model, args.output, format=args.format)
        print(f"wrote {path} ({args.format} format: {', '.join(sorted(p.name for p in path.iterdir()))})")
        if args.source in list_models():
            print(f"note: {args.source} has random weights here; export a checkpoint for trained ones", file=sys.stderr)
        return 0
    from vitkit.export import OnnxRunner, export_onnx, quantize_onnx_int8, supports_dynamic_size

    c, h, w = model.data_config["input_size"]
    if args.img_size:
        h = w = args.img_size
    with tempfile.TemporaryDirectory(prefix="vitkit-export-") as tmp:
        path = export_onnx(
            model,
            Path(tmp) / "fp32.onnx" if args.int8 else args.output,
            input_size=(c, h, w),
            dynamic_batch=not args.static_batch,
            dynamic_size=False if args.static_size else None,
        )
        if args.int8:
            path = quantize_onnx_int8(path, args.output)
    print(
        f"wrote {path} ({'int8 weight matmuls, ' if args.int8 else ''}batch {'1' if args.static_batch else 'dynamic'}"
        f", size {'dynamic' if not args.static_size and supports_dynamic_size(model) else f'{h}x{w}'})"
    )
    if not args.no_verify:
        x = torch.randn(1 if args.static_batch else 3, c, h, w)
        with torch.no_grad():
            ref = model(x)
        out = OnnxRunner(path)(x)
        diff = (out - ref).abs().max().item()
        print(f"onnxruntime vs PyTorch: max |logit difference| {diff:.2e}")
        if args.int8:  # quantisation changes the numbers: report, and refuse only a graph that lost the model
            agree = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
            print(f"int8 vs float32 on random inputs: top-1 agreement {agree:.0%}")
            if diff > 0.25 * ref.abs().max().item():
                raise VitkitError(f"{path}: int8 logits differ from PyTorch by {diff:.2e}, over 1/4 of their scale")
        elif diff > 1e-4:
            raise VitkitError(f"{path}: onnxruntime logits differ from PyTorch by {diff:.2e} (> 1e-4)")
    return 0

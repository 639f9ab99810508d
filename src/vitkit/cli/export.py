"""``vitkit export SOURCE OUT.onnx``: an ONNX graph of a model, checked against PyTorch with onnxruntime."""

import torch

from vitkit.errors import VitkitError


def add_arguments(parser) -> None:
    parser.add_argument("source", help="a registered model name, checkpoint directory, run directory or hf-hub:id")
    parser.add_argument("output", help="the .onnx file to write (atomically)")
    parser.add_argument("--img-size", type=int, default=0, help="trace size (0 = the model's own)")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch size to 1")
    parser.add_argument("--static-size", action="store_true", help="fix the image size even where it may vary")
    parser.add_argument("--no-verify", action="store_true", help="skip comparing onnxruntime with PyTorch")


def run(args) -> int:
    from vitkit.export import OnnxRunner, export_onnx, supports_dynamic_size
    from vitkit.factory import create_model
    from vitkit.hub import from_pretrained
    from vitkit.models.registry import list_models

    if args.source in list_models():
        model = create_model(args.source).eval()  # random weights: the graph alone (serving stacks, inspection)
    else:
        model = from_pretrained(args.source)
    c, h, w = model.data_config["input_size"]
    if args.img_size:
        h = w = args.img_size
    path = export_onnx(
        model,
        args.output,
        input_size=(c, h, w),
        dynamic_batch=not args.static_batch,
        dynamic_size=False if args.static_size else None,
    )
    print(
        f"wrote {path} (batch {'1' if args.static_batch else 'dynamic'}, size "
        f"{'dynamic' if not args.static_size and supports_dynamic_size(model) else f'{h}x{w}'})"
    )
    if not args.no_verify:
        x = torch.randn(1 if args.static_batch else 3, c, h, w)
        with torch.no_grad():
            diff = (OnnxRunner(path)(x) - model(x)).abs().max().item()
        print(f"onnxruntime vs PyTorch: max |logit difference| {diff:.2e}")
        if diff > 1e-4:
            raise VitkitError(f"{path}: onnxruntime logits differ from PyTorch by {diff:.2e} (> 1e-4)")
    return 0

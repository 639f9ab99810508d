"""Model cards and publishing: ``README.md`` beside a checkpoint, and ``vitkit push`` to the Hugging Face Hub.

A card says what the weights are and how they were made, from what lies beside the checkpoint: the architecture and
parameter count (the model), the training data and command (``train_config.json`` of the training run holding the
checkpoint), the evaluation's metrics and confusion matrix (an ``eval-*/report.json`` of ``vitkit eval``) and the
preprocessing the weights expect (``data_config``). ``vitkit train`` and ``vitkit eval`` write it locally; ``push``
uploads it with the weights (``huggingface_hub``, the ``hub`` extra).
"""

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vitkit.errors import VitkitError
from vitkit.hub import from_pretrained, resolve_source, save_pretrained
from vitkit.utils.io import atomic_write

CARD_NAME = "README.md"
TRAIN_CONFIG = "train_config.json"  # what `vitkit train` writes into its output_dir
CONFUSION_MATRIX = "confusion_matrix.png"
_TRAINING_SHOWN = ("model", "model_args", "img_size", "epochs", "batch_size", "lr", "weight_decay", "aug")


# --- what lies beside a checkpoint ----------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def find_training(checkpoint: Path) -> dict[str, Any] | None:
    """The TrainConfig of the run a checkpoint belongs to (``run/best``, ``run/last``: the run is the parent), with
    the checkpoint's epoch and best validation accuracy under ``_checkpoint`` when its trainer state says them."""
    for run in (checkpoint, checkpoint.parent):
        found = _read_json(run / TRAIN_CONFIG)
        if found is not None:
            state = _read_json(checkpoint / "trainer_state.json") or {}
            best = state.get("best") if isinstance(state.get("best"), dict) else {}
            found["_checkpoint"] = {"epoch": state.get("epoch"), "best_val_acc": best.get("acc")}
            return found
    return None


def find_eval_report(checkpoint: Path) -> tuple[dict[str, Any], Path] | None:
    """The newest ``eval-*/report.json`` in the checkpoint directory or its run directory, with its folder."""
    reports = [p for d in (checkpoint, checkpoint.parent) for p in d.glob("eval-*/report.json")]
    for path in sorted(reports, key=lambda p: p.stat().st_mtime, reverse=True):
        report = _read_json(path)
        if report is not None and "top1" in report:
            return report, path.parent
    return None


def train_command(config: dict[str, Any]) -> str:
    """The ``vitkit train`` command line of a run: every setting that differs from TrainConfig's default."""
    from vitkit.train.config import TrainConfig

    defaults = TrainConfig().to_dict()
    parts = ["vitkit", "train"]
    for key, value in config.items():
        default = defaults.get(key)
        if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
            value, default = list(value), list(default)  # JSON has lists where TrainConfig has tuples
        if key not in defaults or value == default or key == "output_dir":
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, (list, tuple)):
            parts += [flag, *map(str, value)]
        else:
            text = str(value)
            parts += [flag, text if text and " " not in text else json.dumps(text)]
    return " ".join(parts)


# --- the card --------------------------------------------------------------------------------------------------
def _preprocessing(data: dict[str, Any]) -> list[str]:
    c, h, w = data["input_size"]
    crop = data["crop_pct"]
    resize = f"the shorter side to {int(h / crop)} px" if h == w else f"{int(h / crop)}x{int(w / crop)} px"
    return [
        f"- input: {c} channel{'s' if c > 1 else ''} ({'RGB' if c == 3 else 'grey' if c == 1 else 'other'}), "
        f"{h}x{w} px",
        f"- resize {resize} ({data['interpolation']}), centre-crop {h}x{w} (crop_pct {crop:g})",
        "- scale to [0, 1], normalise with mean "
        f"{[round(m, 4) for m in data['mean']]} and std {[round(s, 4) for s in data['std']]}",
    ]


def model_card(
    model: Any,
    *,
    training: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    confusion_matrix: str | None = None,
    repo_id: str | None = None,
    format: str = "vitkit",
) -> str:
    """A Hugging Face model card (YAML front matter + markdown) for ``model``; ``confusion_matrix`` is the image's
    path relative to the card."""
    family, name = model.family, getattr(model, "model_name", None) or type(model).__name__
    cfg = model.config
    tags = ["vitkit", family, "image-classification", "vision-transformer"]
    lines = ["---", "library_name: vitkit", "pipeline_tag: image-classification", "tags:", *[f"- {t}" for t in tags]]
    lines += ["---", "", f"# {repo_id.split('/')[-1] if repo_id else name}", ""]
    lines += [f"A {dict(vit='ViT', swin='Swin Transformer', cvt='CvT')[family]} image classifier made with vitkit.", ""]
    lines += ["## Architecture", "", f"- model: `{name}` (family `{family}`)"]
    lines += [f"- parameters: {model.num_params():,} ({model.num_params() / 1e6:.2f} M)"]
    lines += [f"- classes: {cfg.num_classes}"]
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    shown = ", ".join(f"{k}={v}" for k, v in fields.items() if k not in ("mean", "std"))
    lines += [f"- config: {shown}", ""]
    lines += ["## Preprocessing", "", *_preprocessing(model.data_config), ""]
    if training is not None:
        lines += ["## Training", "", f"- data: `{training.get('data', '?')}`"]
        lines += [f"- {k}: {training[k]}" for k in _TRAINING_SHOWN if training.get(k) not in (None, "", 0)]
        if training.get("pretrained"):
            lines.append(f"- fine-tuned from: `{training['pretrained']}`")
        at = training.get("_checkpoint") or {}
        if isinstance(at.get("best_val_acc"), (int, float)) and at["best_val_acc"] >= 0:
            lines.append(
                f"- this checkpoint: epoch {at.get('epoch')}, best validation accuracy {at['best_val_acc']:.4f}"
            )
        lines += ["", "```bash", train_command(training), "```", ""]
    if report is not None:
        lines += ["## Evaluation", ""]
        where = f"`{report.get('data', '?')}`" + (f", split {report['split']}" if report.get("split") else "")
        lines += [f"- data: {where}, {report.get('num_samples', '?')} images"]
        if report.get("tta") and isinstance(report.get("top1_without_tta"), (int, float)):  # say what the score is
            lines += [
                f"- test-time augmentation: {report['tta']} (the scores below; top1 without it: "
                f"{report['top1_without_tta']:.4f})"
            ]
        metrics = [
            (k, report[k]) for k in ("top1", "top5", "macro_f1", "macro_precision", "macro_recall") if k in report
        ]
        lines += [f"- {k}: {v:.4f}" for k, v in metrics if isinstance(v, (int, float))]
        per_class = report.get("per_class") or []
        if per_class and len(per_class) <= 100:
            lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            lines += [
                f"| {c['name']} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |"
                for c in per_class
            ]
        if confusion_matrix:
            lines += ["", f"![confusion matrix]({confusion_matrix})"]
        lines.append("")
    source = f"hf-hub:{repo_id}" if repo_id else "path/to/this/directory"
    lines += ["## Use", "", "```python"]
    if format == "transformers":
        lines += ["from transformers import AutoImageProcessor, AutoModelForImageClassification", ""]
        where = repo_id or "path/to/this/directory"
        lines += [f'processor = AutoImageProcessor.from_pretrained("{where}")']
        lines += [f'model = AutoModelForImageClassification.from_pretrained("{where}")', "# or, with vitkit:"]
    elif format == "timm":
        lines += ["import timm", "", f'model = timm.create_model("{source}", pretrained=True)', "# or, with vitkit:"]
    lines += ["import vitkit", "", f'model = vitkit.from_pretrained("{source}")', "```", ""]
    lines += ["```bash", f"vitkit predict {source} image.jpg", "```", ""]
    return "\n".join(lines)


def write_model_card(
    checkpoint: str | os.PathLike,
    model: Any = None,
    *,
    report: dict[str, Any] | None = None,
    report_dir: str | os.PathLike | None = None,
    directory: str | os.PathLike | None = None,
) -> Path:
    """Write ``README.md`` into ``directory`` (default: the checkpoint directory) from what lies beside the
    checkpoint; ``report`` / ``report_dir``: an evaluation just made (else the newest one found)."""
    checkpoint = Path(checkpoint)
    model = model if model is not None else from_pretrained(checkpoint)
    if report is None:
        found = find_eval_report(checkpoint)
        report, report_dir = found if found else (None, None)
    out = Path(directory) if directory is not None else checkpoint
    image = None
    if report_dir is not None and (Path(report_dir) / CONFUSION_MATRIX).is_file():
        image = os.path.relpath(Path(report_dir) / CONFUSION_MATRIX, out)
    text = model_card(model, training=find_training(checkpoint), report=report, confusion_matrix=image)
    atomic_write(out / CARD_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out / CARD_NAME


def write_card_for(source: str, model: Any, *, report: dict[str, Any] | None = None, report_dir=None, fallback=None):
    """The card of a command's checkpoint: beside a local checkpoint (directory or training run), else in
    ``fallback`` (a hub id, a registered name, a bare weights file). Returns its path, or None with a note on
    stderr when it cannot be written (the command's own results stand)."""
    import sys

    path = Path(str(source)).expanduser()
    checkpoint = resolve_source(path) if path.is_dir() else None
    where = checkpoint if checkpoint is not None else fallback
    if where is None:
        return None
    try:
        return write_model_card(checkpoint or where, model, report=report, report_dir=report_dir, directory=where)
    except (OSError, VitkitError) as e:
        print(f"note: model card not written: {e}", file=sys.stderr)
        return None


# --- the Hub ---------------------------------------------------------------------------------------------------
def push(
    source: str | os.PathLike,
    repo_id: str,
    *,
    format: str = "vitkit",
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    eval_dir: str | os.PathLike | None = None,
) -> str:
    """Upload a local checkpoint (weights, config, a model card, the confusion matrix and evaluation report) to the
    Hub repository ``repo_id`` (created if needed), in vitkit's, transformers' or timm's format; returns its URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise VitkitError("vitkit push needs huggingface_hub: pip install 'vitkit[hub]'") from None
    if str(source).startswith("hf-hub:"):
        raise VitkitError(f"{source}: push a local checkpoint (a directory or training run), not a hub id")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise VitkitError(f"repository {repo_id!r}: expected 'org/name'")
    checkpoint = resolve_source(source)
    model = from_pretrained(checkpoint)
    found = find_eval_report(checkpoint)
    if eval_dir is not None:
        report = _read_json(Path(eval_dir) / "report.json")
        if report is None:
            raise VitkitError(f"{eval_dir}: no report.json there (the output directory of `vitkit eval`)")
        found = (report, Path(eval_dir))
    with tempfile.TemporaryDirectory(prefix="vitkit-push-") as tmp:
        stage = Path(tmp)
        save_pretrained(model, stage, format=format)
        image = None
        if found is not None:
            report, folder = found
            shutil.copyfile(folder / "report.json", stage / "eval_report.json")
            if (folder / CONFUSION_MATRIX).is_file():
                shutil.copyfile(folder / CONFUSION_MATRIX, stage / CONFUSION_MATRIX)
                image = CONFUSION_MATRIX
        card = model_card(
            model,
            training=find_training(checkpoint),
            report=found[0] if found else None,
            confusion_matrix=image,
            repo_id=repo_id,
            format=format,
        )
        (stage / CARD_NAME).write_text(card, encoding="utf-8")
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(stage),
                repo_type="model",
                revision=revision,
                commit_message=commit_message or f"Upload {model.model_name or model.family} with vitkit",
            )
        except Exception as e:  # no token, no network, no rights: one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise VitkitError(
                f"push to {repo_id} failed ({type(e).__name__}: {first}); log in with `hf auth login` or pass --token"
            ) from None
    return str(getattr(commit, "commit_url", None) or url)

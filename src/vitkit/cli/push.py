"""``vitkit push SOURCE org/name``: upload a checkpoint, its model card and evaluation to the Hugging Face Hub."""

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a local checkpoint directory or training output_dir (uses final/, best/ or last/)")
    p.add_argument("repo_id", help="the Hub repository, org/name (created if it does not exist)")
    p.add_argument(
        "--format",
        choices=("vitkit", "transformers", "timm"),
        default="vitkit",
        help="the files to upload: vitkit's checkpoint (default), transformers' (AutoModelForImageClassification) "
        "or timm's hub format (ViT, Swin)",
    )
    p.add_argument("--eval-dir", default=None, help="the `vitkit eval` output to report (default: the newest one "
                   "found beside the checkpoint, e.g. CHECKPOINT/eval-test)")  # fmt: skip
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", default=None, help="the branch to commit to (default: main)")
    p.add_argument("--message", default=None, help="the commit message")
    p.add_argument("--token", default=None, help="a Hub token (default: HF_TOKEN or the saved login)")


def run(args: argparse.Namespace) -> int:
    from vitkit.publish import push

    url = push(
        args.source,
        args.repo_id,
        format=args.format,
        private=args.private,
        token=args.token,
        revision=args.revision,
        commit_message=args.message,
        eval_dir=args.eval_dir,
    )
    print(f"pushed {args.source} to {args.repo_id}: {url}")
    return 0

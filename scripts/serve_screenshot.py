"""Make docs/serve.png: the `vitkit serve` page in headless Chromium after a few Fashion-MNIST test images are uploaded.

Trains a small CvT on the bundled Fashion-MNIST sample for two epochs into runs/serve-screenshot (once; later runs
reuse it) unless ``--run`` names another run, serves it in-process, uploads four test images through the page and
takes the screenshot.
Needs the serve extra, selenium, and the system's Chromium + chromedriver (Debian: chromium chromium-driver).

    PYTHONPATH=src:. python scripts/serve_screenshot.py [--run runs/demo] [--out docs/serve.png]
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from PIL import Image  # noqa: E402
from tests.serve.browser import cards, chromium, find_browser, upload, wait_for  # noqa: E402
from tests.serve.helpers import live_server  # noqa: E402

from vitkit.cli import main as vitkit  # noqa: E402
from vitkit.data.datasets import build_dataset  # noqa: E402
from vitkit.engine import optimize  # noqa: E402
from vitkit.hub import from_pretrained  # noqa: E402
from vitkit.serve.app import create_app  # noqa: E402
from vitkit.serve.backend import make_backend  # noqa: E402

PICKS = ("Sneaker", "Trouser", "Bag", "Dress")  # one test image of each, in this order on the page


def train(run: Path) -> Path:
    if (run / "last" / "config.json").is_file():
        return run
    args = ["train", "--model", "cvt_nano_28", "--data", "sample", "--epochs", "2", "--output-dir", str(run),
            "--progress", "none", "--no-tensorboard", "--num-workers", "0"]  # fmt: skip
    if vitkit(args) != 0:
        raise SystemExit("training failed")
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a training run or checkpoint to serve (default: train a small one)")
    p.add_argument("--out", default=str(ROOT / "docs" / "serve.png"))
    args = p.parse_args()
    found = find_browser()
    if found is None:
        raise SystemExit("no chromium / chromedriver found (apt-get install chromium chromium-driver)")
    with tempfile.TemporaryDirectory(prefix="vitkit-screenshot-") as tmp:
        folder = Path(tmp)
        model = optimize(from_pretrained(args.run or train(ROOT / "runs" / "serve-screenshot")), inplace=True)
        test = build_dataset("sample", "test")
        paths = []
        for name in reversed(PICKS):  # the page shows the latest upload first
            index = next(i for i in range(len(test)) if test.classes[int(test.targets[i])] == name)
            path = folder / f"{name.lower().replace(' ', '-')}-{index:04d}.png"
            Image.fromarray(test.images[index], "L").save(path)
            paths.append(str(path))
        with live_server(create_app(make_backend(model))) as url, chromium(*found, width=1180, height=900) as browser:
            browser.get(url + "/")
            wait_for(browser, lambda b: "classes" in b.find_element("id", "model").text)
            for path in paths:
                upload(browser, path)
            wait_for(browser, lambda b: [c["state"] for c in cards(b)] == ["done"] * len(paths))
            browser.execute_script("document.activeElement.blur()")
            browser.save_screenshot(args.out)
            for card in cards(browser):
                print(card["file"], "->", card["status"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Property-based tests and a bounded fuzz run: whatever the bytes, config or flag value, vitkit answers or refuses
with its own one-line error — never another exception, a hang or a crash.

Hypothesis runs derandomized (the same examples on every machine); the mutation fuzz run is seeded and bounded.
"""

import io
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vitkit.cli import main
from vitkit.data.images import open_image
from vitkit.data.transforms import DataSpec, eval_image
from vitkit.errors import CheckpointError, VitkitError
from vitkit.hub import config_from_vitkit
from vitkit.models.registry import get_entry, model_from_config

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SPEC = DataSpec((28, 28), 1, (0.5,), (0.5,), "bilinear", 0.875)


def decode(data: bytes, suffix: str = ".png"):
    """open_image + the evaluation pipeline on ``data`` written to a file: a tensor, or a VitkitError."""
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        try:
            img = open_image(f.name)
        except VitkitError as e:
            assert f.name in str(e) and "\n" not in str(e)
            return e
        x = eval_image(img, SPEC)
        assert x.shape == (1, 28, 28) and torch.isfinite(x).all()
        return x


def seeds() -> dict[str, bytes]:
    """One small valid image per format the decoder meets."""
    rng = np.random.default_rng(0)
    out = {}
    for fmt, mode in (("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "I;16"),
                      ("WEBP", "RGB"), ("PPM", "RGB")):  # fmt: skip
        if mode == "I;16":
            img = Image.fromarray(rng.integers(0, 65535, (12, 10), dtype=np.uint16))
        else:
            img = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        try:
            img.save(buf, format=fmt)
        except (KeyError, OSError):  # a Pillow built without this codec
            continue
        out[fmt.lower()] = buf.getvalue()
    return out


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_decode_or_refuse(data):
    decode(data)


@FUZZ
@given(st.sampled_from(sorted(seeds())), st.data())
def test_damaged_images_decode_or_refuse(fmt, data):
    blob = bytearray(seeds()[fmt])
    cut = data.draw(st.integers(0, len(blob)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255)), max_size=8))
    for pos, value in flips:
        blob[pos] = value
    decode(bytes(blob[: max(cut, 1)]), "." + fmt)


def test_bounded_mutation_fuzz_run_of_the_decoder():
    """Seeded byte-level mutations of every seed image for a fixed budget (a few seconds)."""
    rng = np.random.default_rng(1234)
    corpus = seeds()
    deadline, runs, refused = time.monotonic() + 8.0, 0, 0
    while time.monotonic() < deadline and runs < 3000:
        fmt = list(corpus)[runs % len(corpus)]
        blob = bytearray(corpus[fmt])
        kind = rng.integers(4)
        if kind == 0:  # flip bytes
            for pos in rng.integers(0, len(blob), rng.integers(1, 16)):
                blob[pos] = rng.integers(0, 256)
        elif kind == 1:  # truncate
            blob = blob[: rng.integers(1, len(blob))]
        elif kind == 2:  # insert junk
            pos = rng.integers(0, len(blob))
            blob[pos:pos] = rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes()
        else:  # grow a size field: width / height read from the header become huge
            pos = rng.integers(0, min(len(blob), 32))
            blob[pos : pos + 2] = b"\xff\xff"
        refused += isinstance(decode(bytes(blob), "." + fmt), VitkitError)
        runs += 1
    assert runs >= 200 and 0 < refused < runs  # both outcomes were exercised


VALUES = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
    st.lists(st.integers(-4, 300), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@FUZZ
@given(st.sampled_from(["vit_nano_patch4_28", "swin_nano_patch2_window7_28", "cvt_nano_28"]), st.data())
def test_config_json_values_build_or_are_refused_by_name(name, data):
    entry = get_entry(name)
    raw = json.loads(json.dumps(entry.config.__dict__))  # what a checkpoint's config.json holds
    fields = sorted(raw)
    for key in data.draw(st.lists(st.sampled_from([*fields, "unknown_field"]), min_size=1, max_size=3)):
        raw[key] = data.draw(VALUES)
    meta = {"version": "0.2.0", "family": entry.family, "config": raw}
    try:
        cfg = config_from_vitkit(meta, Path("ck/config.json"))
    except CheckpointError as e:
        assert str(e).startswith("ck/config.json: ") and "\n" not in str(e)
        return
    with torch.device("meta"):  # shapes only: a valid config of any size builds without memory
        model = model_from_config(cfg)
    assert model.config == cfg


FLOAT_FLAGS = ["--lr", "--min-lr", "--warmup-epochs", "--weight-decay", "--clip-grad", "--label-smoothing",
               "--mixup", "--ema-decay", "--time-limit-minutes", "--val-fraction", "--drop-path-rate"]  # fmt: skip
INT_FLAGS = ["--epochs", "--batch-size", "--max-train-samples", "--accum-steps", "--img-size", "--in-chans",
             "--early-stopping-patience", "--checkpoint-every-steps", "--seed", "--log-every"]  # fmt: skip
TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**15), 10**15).map(str),
    st.text(alphabet="0123456789.-+eEinfa x", max_size=8),
)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.sampled_from(FLOAT_FLAGS + INT_FLAGS), TEXT)
def test_flag_values_are_accepted_or_one_line_errors(flag, value):
    err = io.StringIO()
    out = io.StringIO()
    from contextlib import redirect_stderr, redirect_stdout

    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["train", flag, value, "--print-config"])
    assert rc in (0, 2), err.getvalue()
    if rc == 2:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        assert len(lines) == 1 and flag in lines[0] and "Traceback" not in err.getvalue(), err.getvalue()
    else:
        printed = json.loads(out.getvalue())
        key = flag[2:].replace("-", "_")
        number = float(printed[key])
        assert math.isfinite(number)

"""Figures of explanations: heat maps on the original images, and one self-contained HTML page per run.

matplotlib is the optional ``plots`` extra; every function here raises :class:`vitkit.eval.plots.PlotsUnavailable`
without it, so a caller can still write the numbers. Figures are drawn on an Agg ``Figure``, never through pyplot.
The HTML page embeds every image as base64 and loads nothing from the network.
"""

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitkit.data.transforms import DataSpec, eval_geometry
from vitkit.eval.plots import _figure
from vitkit.utils.io import atomic_write, atomic_write_text

CMAP = "inferno"  # perceptually uniform and readable on grey and colour images alike


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def write_png(fig: Any, path: str | os.PathLike) -> bytes:
    """Save ``fig`` as a PNG (atomically) and return its bytes for the HTML page."""
    data = png_bytes(fig)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))
    return data


def _show_image(ax: Any, img: Image.Image) -> None:
    a = np.asarray(img.convert("L") if img.mode in ("L", "I", "I;16", "F", "1") else img.convert("RGB"))
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _crop_box(ax: Any, size: tuple[int, int], spec: DataSpec) -> None:
    """A dashed frame around the part of the original image the model saw (after resize + centre crop)."""
    from matplotlib.patches import Rectangle

    h, w = size
    nh, nw, top, left = eval_geometry(h, w, spec)
    th, tw = spec.img_size
    if (top, left, th, tw) == (0, 0, nh, nw):
        return  # the whole image
    sy, sx = h / nh, w / nw
    ax.add_patch(
        Rectangle((left * sx - 0.5, top * sy - 0.5), tw * sx, th * sy, fill=False, ls="--", lw=1.0, ec="white")
    )


@dataclass
class Panel:
    """One heat map of an image: what it explains, how, and the map on the original image (NaN = not seen)."""

    method: str
    heatmap: torch.Tensor
    subtitle: str = ""


def explanation_figure(
    original: Image.Image, panels: Sequence[Panel], spec: DataSpec, title: str, path: str | os.PathLike
) -> bytes:
    """The original image, then one overlay per method with a colour bar; returns the PNG bytes."""
    n = len(panels) + 1
    fig = _figure(2.6 * n + 0.6, 3.0)
    ax = fig.add_subplot(1, n, 1)
    _show_image(ax, original)
    ax.set_title("image", fontsize=8)
    size = (original.size[1], original.size[0])
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 2)
        _show_image(ax, original)
        heat = np.ma.masked_invalid(panel.heatmap.float().numpy())
        im = ax.imshow(heat, cmap=CMAP, vmin=0.0, vmax=1.0, alpha=0.55, interpolation="bilinear")
        _crop_box(ax, size, spec)
        ax.set_title(f"{panel.method}\n{panel.subtitle}".strip(), fontsize=8)
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=6)
        bar.set_label("relevance (1 = most)", fontsize=6)
    fig.suptitle(title, fontsize=9, y=1.04)
    return write_png(fig, path)


# --- the HTML page --------------------------------------------------------------------------------------------
@dataclass
class Section:
    heading: str
    text: str = ""  # plain text, escaped
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG bytes)
    tables: list[tuple[str, list[list[Any]]]] = field(default_factory=list)  # (caption, rows; the first = header)


def html_table(rows: list[list[Any]], caption: str = "") -> str:
    head, *body = rows
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in head) + "</tr>")
    for r in body:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.8em; color: #555; max-width: 600px; }
img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
caption { text-align: left; font-weight: bold; padding: 0.2em 0; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; font-family: monospace; }
p { white-space: pre-wrap; }
"""


def write_html(path: str | os.PathLike, title: str, sections: Sequence[Section], intro: str = "") -> Path:
    """One self-contained page: every image inline as a base64 data URI, no scripts, no network."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    for s in sections:
        parts.append(f"<h2>{html.escape(s.heading)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        for caption, rows in s.tables:
            parts.append(html_table(rows, caption))
        for caption, data in s.images:
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            parts.append(
                f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    path = Path(path)
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path

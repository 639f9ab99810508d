"""The study note's mechanisms, computed from a real model and drawn: what each family does to an image.

* ViT: the patch grid in raster order with the [CLS] token in front; the learned position embeddings' cosine
  similarity, each patch against all others (the ViT paper's figure 7).
* Swin: the window grid at every stage, the cyclic shift and the regions / mask of SW-MSA at the model's real sizes
  (padding included); the relative-position index built step by step as the note does (its window-2 example with the
  same numbers); the learned bias table of every head as a (2ws-1) x (2ws-1) image.
* CvT: the query grid against the reduced key / value grid of each stage (the note's "9 queries, 4 keys" picture,
  drawn for real stages), tokens and channels per stage.

:func:`mechanism_numbers` returns everything as plain numbers (no matplotlib needed); :func:`mechanism_sections`
draws the figures, for :func:`vitkit.explanations.figures.write_html`.
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vitkit.eval.plots import _figure
from vitkit.explanations.figures import Section, write_png
from vitkit.explanations.geometry import Window, stages
from vitkit.models.swin import relative_position_index, window_and_shift, window_partition

# --- numbers ------------------------------------------------------------------------------------------------------


def relative_position_steps(window_size: int) -> dict[str, torch.Tensor]:
    """The note's construction of Swin's relative-position index, every intermediate kept.

    The note names ``relative_coords[0]`` (row offsets) ``x_coords`` and ``relative_coords[1]`` ``y_coords``:
    (1, 2) pairwise coordinate differences, (3) ``+ (ws - 1)`` on both, (4) ``x_coords * (2ws - 1)``, (5) the sum.
    """
    ws = window_size
    coords = torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing="ij"))  # (2, ws, ws)
    coords_flatten = torch.flatten(coords, 1)  # (2, ws*ws)
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]  # steps 1, 2: (2, N, N)
    x_coords = relative_coords[0].clone() + (ws - 1)  # step 3
    y_coords = relative_coords[1].clone() + (ws - 1)  # step 3
    x_scaled = x_coords * (2 * ws - 1)  # step 4
    index = x_scaled + y_coords  # step 5
    return {
        "coords_flatten": coords_flatten,
        "relative_coords_x": relative_coords[0],
        "relative_coords_y": relative_coords[1],
        "x_coords_plus": x_coords,
        "y_coords_plus": y_coords,
        "x_coords_times": x_scaled,
        "relative_position_index": index,
    }


def shift_regions(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(Hp, Wp) region id (0-8) of every token of the shifted, padded grid, as SW-MSA's mask sees it."""
    rows, cols = torch.arange(height), torch.arange(width)
    row_region = (rows >= height - window).long() + (rows >= height - shift).long()
    col_region = (cols >= width - window).long() + (cols >= width - shift).long()
    return row_region[:, None] * 3 + col_region[None, :]


def swin_layout(model, size: tuple[int, int]) -> list[dict[str, Any]]:
    """Per stage and block: the token grid, the padded grid, window, shift and window count at input ``size``."""
    cfg = model.config
    out = []
    for s, st in enumerate(stages(model, size)):
        H, W = st.grid
        blocks = []
        for b in range(cfg.depths[s]):
            shift_cfg = cfg.window_size // 2 if b % 2 == 1 else 0
            window, shift = window_and_shift(H, W, cfg.window_size, shift_cfg)
            Hp, Wp = H + (-H) % window, W + (-W) % window
            blocks.append(
                dict(block=b, window=window, shift=shift, padded=(Hp, Wp), windows=(Hp // window, Wp // window))
            )
        out.append(dict(stage=s, grid=(H, W), channels=cfg.stage_dim(s), heads=cfg.num_heads[s], blocks=blocks))
    return out


def cvt_layout(model, size: tuple[int, int]) -> list[dict[str, Any]]:
    """Per stage: the query grid, the reduced key / value grid, tokens, channels, heads, the embedding's conv."""
    cfg = model.config
    kv = Window(cfg.kernel_qkv, cfg.stride_kv, cfg.padding_kv)
    out = []
    for s, st in enumerate(stages(model, size)):
        H, W = st.grid
        h, w = kv.out_size(H), kv.out_size(W)
        cls = int(bool(cfg.cls_token) and s == cfg.num_stages - 1)
        out.append(
            dict(
                stage=s,
                grid=(H, W),
                kv_grid=(h, w),
                queries=cls + H * W,
                keys=cls + h * w,
                cls_token=bool(cls),
                channels=cfg.embed_dims[s],
                heads=cfg.num_heads[s],
                blocks=cfg.depths[s],
                embed=dict(kernel=st.embed.kernel, stride=st.embed.stride, padding=st.embed.padding),
            )
        )
    return out


def position_similarity(model) -> torch.Tensor:
    """ViT: (gh, gw, gh, gw) cosine similarity between the learned position embeddings of every pair of patches."""
    p = model.num_prefix_tokens
    gh, gw = model.config.grid_size
    pos = model.pos_embed.detach().float()[0, p:]  # (N, D), raster order
    pos = F.normalize(pos, dim=-1)
    return (pos @ pos.T).view(gh, gw, gh, gw)


def _tensors_to_lists(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: _tensors_to_lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_tensors_to_lists(v) for v in obj]
    return obj


def mechanism_numbers(model, size: tuple[int, int]) -> dict[str, Any]:
    """Everything the figures show, as JSON-ready numbers, for input ``size``."""
    family, cfg = model.family, model.config
    out: dict[str, Any] = {"family": family, "input_size": list(size)}
    if family == "vit":
        grid = stages(model, size)[0].grid
        out |= dict(patch_size=cfg.patch_size, grid=grid, tokens=grid[0] * grid[1] + model.num_prefix_tokens)
        out["num_prefix_tokens"] = model.num_prefix_tokens
        out["position_similarity"] = position_similarity(model)
    elif family == "swin":
        out["stages"] = swin_layout(model, size)
        out["note_example"] = relative_position_steps(2)
        out["relative_position_index"] = relative_position_index(cfg.window_size)
        out["bias_tables"] = {
            name: m.relative_position_bias_table.detach()
            .float()
            .T.reshape(-1, 2 * cfg.window_size - 1, 2 * cfg.window_size - 1)
            for name, m in model.named_modules()
            if hasattr(m, "relative_position_bias_table")
        }
    elif family == "cvt":
        out["stages"] = cvt_layout(model, size)
    return _tensors_to_lists(out)


# --- figures ------------------------------------------------------------------------------------------------------


def _image_axes(ax, image: torch.Tensor) -> None:
    """Show a (C, H, W) image in [0, 1] with one unit per input pixel."""
    img = image.detach().float().clamp(0, 1).cpu()
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(img[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _grid_lines(ax, starts_y, starts_x, extent: tuple[float, float], **style) -> None:
    h, w = extent
    for y in starts_y:
        ax.plot([-0.5, w - 0.5], [y - 0.5, y - 0.5], **style)
    for x in starts_x:
        ax.plot([x - 0.5, x - 0.5], [-0.5, h - 0.5], **style)


def vit_sections(model, image: torch.Tensor, out_dir: Path) -> list[Section]:
    from matplotlib import patheffects

    cfg = model.config
    H, W = image.shape[-2:]
    p = cfg.patch_size
    gh, gw = H // p, W // p
    fig = _figure(6.4, 5.0)
    ax = fig.add_axes((0.22, 0.05, 0.75, 0.9))
    _image_axes(ax, image)
    _grid_lines(ax, range(0, H + 1, p), range(0, W + 1, p), (H, W), color="yellow", lw=0.6)
    every = max(1, (gh * gw) // 200)  # numbers stay readable on large grids
    fs = max(4, min(9, 140 // max(gh, gw)))
    outline = [patheffects.withStroke(linewidth=1.5, foreground="black")]  # readable on light and dark pixels
    for i in range(0, gh * gw, every):
        r, c = divmod(i, gw)
        ax.text(
            c * p + p / 2 - 0.5,
            r * p + p / 2 - 0.5,
            str(i + 1),
            ha="center",
            va="center",
            fontsize=fs,
            color="cyan",
            path_effects=outline,
        )
    ax.set_title(f"{gh} x {gw} patches of {p} px, raster order (left to right, top to bottom)", fontsize=8)
    if model.num_prefix_tokens:
        cls_ax = fig.add_axes((0.02, 0.45, 0.15, 0.1))
        cls_ax.set_xticks([])
        cls_ax.set_yticks([])
        cls_ax.set_facecolor("#ffd54f")
        cls_ax.text(0.5, 0.5, "[CLS]\ntoken 0", ha="center", va="center", fontsize=8)
        cls_ax.set_title("in front of patch 1", fontsize=6)
    grid_png = write_png(fig, out_dir / "vit_patch_grid.png")

    sim = position_similarity(model).numpy()  # (gh, gw, gh, gw) at the model's own grid
    sh, sw = sim.shape[:2]
    tile = np.full((sh * (sh + 1) - 1, sw * (sw + 1) - 1), np.nan)  # one map per patch, 1-px gaps
    for r in range(sh):
        for c in range(sw):
            tile[r * (sh + 1) : r * (sh + 1) + sh, c * (sw + 1) : c * (sw + 1) + sw] = sim[r, c]
    fig = _figure(6.0, 5.4)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(tile), cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    ax.set_title("position embedding similarity: tile (r, c) = cosine of patch (r, c) with every patch", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="cosine similarity")
    sim_png = write_png(fig, out_dir / "vit_position_similarity.png")
    tokens = gh * gw + model.num_prefix_tokens
    text = (
        f"The image ({H}x{W}) is cut into {gh}x{gw} = {gh * gw} patches of {p}x{p} pixels by one convolution with "
        f"kernel = stride = {p}; they are ordered left to right, top to bottom"
        + (", and a learned [CLS] token is put in front" if model.num_prefix_tokens else "")
        + f": {tokens} tokens of {cfg.embed_dim} channels. A learned position embedding is added to each; patches "
        "that are close in the image learn similar embeddings (the similarity figure), which is how ViT knows where "
        "a patch came from."
    )
    return [
        Section(
            "ViT: patches and position embeddings",
            text,
            [("patch grid in raster order, [CLS] first", grid_png), ("learned position embeddings", sim_png)],
        )
    ]


def _matrix_table(t: torch.Tensor) -> list[list[Any]]:
    rows = t.tolist()
    return [[""] + [f"k{j}" for j in range(len(rows[0]))]] + [[f"q{i}", *r] for i, r in enumerate(rows)]


def swin_sections(model, image: torch.Tensor, out_dir: Path) -> list[Section]:
    cfg = model.config
    H, W = image.shape[-2:]
    layout = swin_layout(model, (H, W))
    sections = []

    # windows on the image, stage by stage (W-MSA and, where a block shifts, SW-MSA)
    rows = [["stage", "block", "tokens", "padded grid", "window", "shift", "windows", "channels", "heads"]]
    for st in layout:
        for b in st["blocks"]:
            rows.append(
                [
                    st["stage"],
                    b["block"],
                    "x".join(map(str, st["grid"])),
                    "x".join(map(str, b["padded"])),
                    b["window"],
                    b["shift"],
                    "x".join(map(str, b["windows"])),
                    st["channels"],
                    st["heads"],
                ]
            )
    kinds = [(st, b) for st in layout for b in st["blocks"][:2]]  # the first W-MSA and SW-MSA block of each stage
    fig = _figure(2.8 * len(kinds), 3.2)
    for i, (st, b) in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        gh, gw = st["grid"]
        Hp, Wp = b["padded"]
        px = cfg.patch_size * 2 ** st["stage"]  # input pixels per token side at this stage
        canvas = torch.zeros(image.shape[0], Hp * px, Wp * px)  # the image, zero-padded as the model pads it
        canvas[:, :H, :W] = image
        _image_axes(ax, canvas)
        if Hp > gh or Wp > gw:  # the block's padding to whole windows: hatched
            from matplotlib.patches import Rectangle

            ax.add_patch(Rectangle((gw * px - 0.5, -0.5), (Wp - gw) * px, Hp * px, hatch="//", fill=False, ec="red"))
            ax.add_patch(Rectangle((-0.5, gh * px - 0.5), Wp * px, (Hp - gh) * px, hatch="//", fill=False, ec="red"))
        _grid_lines(
            ax,
            [r * px for r in range(Hp + 1)],
            [c * px for c in range(Wp + 1)],
            (Hp * px, Wp * px),
            color="white",
            lw=0.2,
            alpha=0.5,
        )
        ws, sh = b["window"], b["shift"]
        ys = [((k * ws + sh) % Hp) * px for k in range(Hp // ws + 1)]
        xs = [((k * ws + sh) % Wp) * px for k in range(Wp // ws + 1)]
        _grid_lines(ax, ys, xs, (Hp * px, Wp * px), color="yellow" if not sh else "cyan", lw=1.6)
        kind = "SW-MSA" if sh else "W-MSA"
        ax.set_title(
            f"stage {st['stage']} {kind}: {gh}x{gw} tokens\nwindow {ws}, shift {sh}, {b['windows'][0]}x"
            f"{b['windows'][1]} windows",
            fontsize=7,
        )
    windows_png = write_png(fig, out_dir / "swin_windows.png")
    sections.append(
        Section(
            "Swin: windows at every stage",
            "Each block attends only inside ws x ws windows of tokens (thick lines; fine lines are tokens). Odd blocks "
            "shift the windows by ws // 2 tokens (SW-MSA), so the next block mixes across the previous borders; the "
            "windows at the right and bottom edges wrap around (the cyclic shift). Patch merging halves the grid at "
            "every stage; a stage not larger than the window is one window without a shift. Hatched: padding to whole "
            "windows.",
            [("window grids (yellow: W-MSA, cyan: SW-MSA, wrapping at the far edges)", windows_png)],
            [("blocks at this input size", rows)],
        )
    )

    # the cyclic shift: regions and the mask of one shifted block at its real size
    shifted = [(st, b) for st in layout for b in st["blocks"] if b["shift"]]
    if shifted:
        st, b = shifted[0]
        Hp, Wp = b["padded"]
        ws, sh = b["window"], b["shift"]
        regions = shift_regions(Hp, Wp, ws, sh)
        win_regions = window_partition(regions.view(1, Hp, Wp, 1), ws).view(-1, ws * ws)  # (nW, N)
        masks = (win_regions[:, :, None] != win_regions[:, None, :]).float() * -100.0
        fig = _figure(12.0, 4.0)
        ax = fig.add_subplot(1, 3, 1)
        valid = torch.zeros(Hp, Wp)
        valid[: st["grid"][0], : st["grid"][1]] = 1
        ax.imshow(torch.roll(valid, (-sh, -sh), (0, 1)).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        _grid_lines(ax, range(0, Hp + 1, ws), range(0, Wp + 1, ws), (Hp, Wp), color="yellow", lw=1.2)
        ax.set_title(f"map rolled up-left by {sh}\n(dark: padding)", fontsize=8)
        ax = fig.add_subplot(1, 3, 2)
        ax.imshow(regions.numpy(), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
        for r in range(Hp):
            for c in range(Wp):
                if Hp * Wp <= 400:
                    ax.text(c, r, str(int(regions[r, c])), ha="center", va="center", fontsize=5, color="white")
        _grid_lines(ax, range(0, Hp + 1, ws), range(0, Wp + 1, ws), (Hp, Wp), color="black", lw=1.5)
        ax.set_title("regions after the shift\n(same colour = neighbours in the image)", fontsize=8)
        ax = fig.add_subplot(1, 3, 3)
        last = masks.shape[0] - 1  # the bottom-right window holds all four kinds of region
        ax.imshow(masks[last].numpy(), cmap="gray", vmin=-100, vmax=0, interpolation="nearest")
        ax.set_title(f"mask of window {last} ({ws * ws}x{ws * ws})\nblack: -100 across regions", fontsize=8)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        mask_png = write_png(fig, out_dir / "swin_shift_mask.png")
        sections.append(
            Section(
                f"Swin: cyclic shift and SW-MSA mask (stage {st['stage']}, block {b['block']})",
                f"The {st['grid'][0]}x{st['grid'][1]} map is padded to {Hp}x{Wp}, rolled up and left by {sh} "
                f"tokens and cut into {ws}x{ws} windows. A window at the far edge then holds tokens that are not "
                "neighbours in the image; the mask adds -100 to their attention logits, so after the softmax they do "
                "not see each other.",
                [("cyclic shift, regions and one window's mask", mask_png)],
            )
        )

    # the relative position index, the note's five steps for window 2, then the model's window
    steps = relative_position_steps(2)
    tables = [
        ("steps 1-2: relative_coords[0] (x_coords in the note: row offset)", _matrix_table(steps["relative_coords_x"])),
        ("steps 1-2: relative_coords[1] (y_coords: column offset)", _matrix_table(steps["relative_coords_y"])),
        ("step 3: x_coords += window_size - 1", _matrix_table(steps["x_coords_plus"])),
        ("step 3: y_coords += window_size - 1", _matrix_table(steps["y_coords_plus"])),
        ("step 4: x_coords *= 2 * window_size - 1", _matrix_table(steps["x_coords_times"])),
        ("step 5: relative_position_index = x_coords + y_coords", _matrix_table(steps["relative_position_index"])),
    ]
    ws = cfg.window_size
    index = relative_position_index(ws)
    fig = _figure(9.0, 4.2)
    ax = fig.add_subplot(1, 2, 1)
    im = ax.imshow(steps["relative_position_index"].numpy(), cmap="viridis", interpolation="nearest")
    for i in range(4):
        for j in range(4):
            ax.text(j, i, str(int(steps["relative_position_index"][i, j])), ha="center", va="center", color="white")
    ax.set_title("the note's example, window 2: index (4x4) into 3x3 = 9 biases", fontsize=8)
    ax.set_xticks(range(4))
    ax.set_yticks(range(4))
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax = fig.add_subplot(1, 2, 2)
    im = ax.imshow(index.numpy(), cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    ax.set_title(f"this model, window {ws}: ({ws * ws})^2 pairs -> {(2 * ws - 1) ** 2} biases", fontsize=8)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    index_png = write_png(fig, out_dir / "swin_relative_position_index.png")
    sections.append(
        Section(
            "Swin: the relative position index, step by step",
            "As in the note: the window's coordinates (meshgrid, flatten), their pairwise differences (1, 2), "
            "+ (ws - 1) so they start at 0 (3), the row offset times (2ws - 1) (4), the sum (5). Pairs the same "
            "(dy, dx) apart get the same index, i.e. share one learned bias per head.",
            [("index matrices", index_png)],
            tables,
        )
    )

    # learned bias tables
    tables_ = [
        (n, m.relative_position_bias_table.detach().float())
        for n, m in model.named_modules()
        if hasattr(m, "relative_position_bias_table")
    ]
    heads = max(t.shape[1] for _, t in tables_)
    side = 2 * ws - 1
    fig = _figure(1.3 * heads + 1.0, 1.4 * len(tables_) + 0.6)
    for i, (name, table) in enumerate(tables_):
        limit = float(table.abs().max()) or 1.0
        for h in range(table.shape[1]):
            ax = fig.add_subplot(len(tables_), heads, i * heads + h + 1)
            ax.imshow(
                table[:, h].view(side, side).numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if h == 0:
                ax.set_ylabel(name.replace("layers.", "s").replace(".blocks.", " b").replace(".attn", ""), fontsize=6)
            if i == 0:
                ax.set_title(f"head {h}", fontsize=7)
    fig.suptitle(
        f"learned relative position bias, (2ws-1) x (2ws-1) = {side}x{side} per head; centre = same token", fontsize=8
    )
    bias_png = write_png(fig, out_dir / "swin_bias_tables.png")
    sections.append(
        Section(
            "Swin: learned relative position bias per head",
            "Row = vertical offset dy, column = horizontal offset dx, from -(ws-1) to ws-1; red raises the attention "
            "logit, blue lowers it (each block on its own scale). A checkpoint that learned locality shows a bright "
            "centre.",
            [("bias tables", bias_png)],
        )
    )
    return sections


def _kv_picture(ax_q, ax_k, grid: tuple[int, int], kv: tuple[int, int], window: Window, key: tuple[int, int]) -> None:
    from matplotlib.patches import Rectangle

    H, W = grid
    h, w = kv
    u, v = key
    for ax, (gh, gw), label in ((ax_q, grid, "queries"), (ax_k, kv, "keys / values")):
        ax.set_xlim(-0.5, gw - 0.5)
        ax.set_ylim(gh - 0.5, -0.5)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        _grid_lines(ax, range(gh + 1), range(gw + 1), (gh, gw), color="grey", lw=0.4)
        ax.set_title(f"{gh}x{gw} = {gh * gw} {label}", fontsize=8)
    top, left = u * window.stride - window.padding, v * window.stride - window.padding
    r0, r1 = max(top, 0), min(top + window.kernel, H)
    c0, c1 = max(left, 0), min(left + window.kernel, W)
    ax_q.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, color="tab:orange", alpha=0.6))
    ax_k.add_patch(Rectangle((v - 0.5, u - 0.5), 1, 1, color="tab:orange", alpha=0.9))
    if H * W <= 100:
        for i in range(H * W):
            ax_q.text(i % W, i // W, str(i + 1), ha="center", va="center", fontsize=6)
    if h * w <= 100:
        for i in range(h * w):
            ax_k.text(i % w, i // w, str(i + 1), ha="center", va="center", fontsize=6)


def cvt_sections(model, image: torch.Tensor, out_dir: Path) -> list[Section]:
    cfg = model.config
    H, W = image.shape[-2:]
    layout = cvt_layout(model, (H, W))
    kv = Window(cfg.kernel_qkv, cfg.stride_kv, cfg.padding_kv)
    rows = [
        [
            "stage",
            "token grid",
            "queries",
            "key/value grid",
            "keys",
            "attention matrix",
            "channels",
            "heads",
            "blocks",
            "embedding conv (k, s, p)",
        ]
    ]
    for st in layout:
        e = st["embed"]
        rows.append(
            [
                st["stage"],
                "x".join(map(str, st["grid"])),
                st["queries"],
                "x".join(map(str, st["kv_grid"])),
                st["keys"],
                f"{st['queries']} x {st['keys']}",
                st["channels"],
                st["heads"],
                st["blocks"],
                f"{e['kernel']}, {e['stride']}, {e['padding']}",
            ]
        )
    # the note's picture: 3x3 queries, 2x2 keys, with this model's projection
    note_kv = (kv.out_size(3), kv.out_size(3))
    fig = _figure(2.4 * (1 + len(layout)) + 1, 5.0)
    cols = 1 + len(layout)
    for i, (grid, kvg, title) in enumerate(
        [((3, 3), note_kv, "the note: 3x3 queries")]
        + [(st["grid"], tuple(st["kv_grid"]), f"stage {st['stage']}") for st in layout]
    ):
        ax_q, ax_k = fig.add_subplot(2, cols, i + 1), fig.add_subplot(2, cols, cols + i + 1)
        key = (min(1, kvg[0] - 1), min(1, kvg[1] - 1))
        _kv_picture(ax_q, ax_k, tuple(grid), kvg, kv, key)
        cls = " + [CLS]" if i > 0 and layout[i - 1]["cls_token"] else ""
        ax_q.set_title(f"{title}\n" + ax_q.get_title() + cls, fontsize=8)
        if cls:
            ax_k.set_title(ax_k.get_title() + cls, fontsize=8)
    fig.suptitle(
        f"queries at stride 1, keys / values after a {kv.kernel}x{kv.kernel} depthwise conv at stride "
        f"{kv.stride}: the orange key summarises the orange queries' neighbourhood",
        fontsize=8,
    )
    kv_png = write_png(fig, out_dir / "cvt_queries_keys.png")

    fig = _figure(8.0, 3.0)
    ax = fig.add_subplot(1, 2, 1)
    xs = [st["stage"] for st in layout]
    ax.bar([x - 0.2 for x in xs], [st["queries"] for st in layout], width=0.4, label="queries")
    ax.bar([x + 0.2 for x in xs], [st["keys"] for st in layout], width=0.4, label="keys / values")
    ax.set_xticks(xs)
    ax.set_xlabel("stage")
    ax.set_ylabel("tokens")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    ax.bar(xs, [st["channels"] for st in layout], color="tab:green")
    ax.set_xticks(xs)
    ax.set_xlabel("stage")
    ax.set_ylabel("channels")
    tokens_png = write_png(fig, out_dir / "cvt_tokens_channels.png")
    text = (
        "Each stage embeds the map below it with an overlapping strided convolution (fewer tokens, more channels). "
        f"Inside a stage, queries come from every token, keys and values from the map convolved at stride "
        f"{kv.stride}: {note_kv[0] * note_kv[1]} keys for 9 queries in the note's example, a quarter of the tokens in "
        "a real stage, so attention costs a quarter as much while every output token keeps its place."
        + (" The last stage puts a [CLS] token in front of both." if cfg.cls_token else "")
    )
    return [
        Section(
            "CvT: queries against reduced keys and values",
            text,
            [("query grid vs key / value grid", kv_png), ("tokens and channels per stage", tokens_png)],
            [("stages at this input size", rows)],
        )
    ]


def mechanism_sections(model, image: torch.Tensor, out_dir: str | Path) -> list[Section]:
    """Draw the family's mechanisms on ``image`` (C, H, W) in [0, 1] at the size the model sees; PNGs in out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    draw = {"vit": vit_sections, "swin": swin_sections, "cvt": cvt_sections}[model.family]
    return draw(model, image, out_dir)

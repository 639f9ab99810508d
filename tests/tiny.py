"""Tiny configurations of every family, shared by the tests: a forward / backward takes milliseconds."""

from vitkit.models.registry import get_entry

# family -> (registered name, overrides that make it tiny, image size, other sizes a dynamic-size export must accept)
TINY = {
    "vit": ("vit_tiny_patch16_224", dict(embed_dim=32, depth=2, num_heads=2, patch_size=8, num_classes=5), 32, [48]),
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(embed_dim=16, depths=(2, 1, 1, 1), num_heads=(2, 2, 2, 2), window_size=2, num_classes=5),
        16,
        [],
    ),
    "cvt": (
        "cvt_13_224",
        dict(embed_dims=(16, 24, 32), depths=(1, 1, 2), num_heads=(1, 2, 2), num_classes=5),
        32,
        [48, 64],
    ),
}


def tiny_overrides(name: str, head_width: int | None = None) -> dict:
    """Shrink a registered config, keeping its family's structure. ``head_width`` (e.g. 16, what the native kernels
    need) makes every attention head that wide."""
    entry = get_entry(name)
    cfg = entry.config
    hw = head_width or 16
    if entry.family == "vit":
        return dict(img_size=2 * cfg.patch_size, embed_dim=2 * hw, depth=2, num_heads=2)
    if entry.family == "cvt":
        return dict(img_size=min(to_int(cfg.img_size), 64), embed_dims=(hw, 2 * hw, 2 * hw), depths=(1, 1, 2),
                    num_heads=(1, 2, 2))  # fmt: skip
    if entry.family == "swin":  # stage 0 is 4x4 tokens: two 2x2 windows a side, then a shifted block
        n = len(cfg.depths)
        width = hw * 2 if head_width else 16
        return dict(
            img_size=4 * cfg.patch_size,
            embed_dim=width,
            depths=(2,) + (1,) * (n - 1),
            num_heads=(2,) * n,
            window_size=2,
        )
    raise AssertionError(f"no tiny overrides for family {entry.family}")


def to_int(size) -> int:
    return size if isinstance(size, int) else max(size)

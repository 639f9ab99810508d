"""Tiny configurations of every family, shared by the tools tests."""

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
        dict(embed_dim=(16, 24, 32), depth=(1, 1, 2), num_heads=(1, 2, 2), num_classes=5),
        32,
        [48, 64],
    ),
}

"""Tiny configurations of every family, shared by the tools tests."""

# family -> (registered name, config overrides that make it tiny, image size, other sizes it must accept)
TINY = {
    "vit": ("vit_tiny_patch16_224", dict(embed_dim=32, depth=2, num_heads=2, patch_size=8, num_classes=5), 32, [48]),
}

"""vitkit's version (checkpoints record it, so a newer vitkit can read what an older one wrote)."""

__version__ = "0.2.0"

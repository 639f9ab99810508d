"""``python -m vitkit`` (also what ``torchrun -m vitkit train ...`` runs)."""

import sys

from vitkit.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())

"""``python -m vitkit`` (also what ``torchrun -m vitkit train ...`` runs)."""

import sys

from vitkit.cli import main

if __name__ == "__main__":
    sys.exit(main())

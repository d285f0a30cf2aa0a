"""``python -m vgglab ...`` (and ``torchrun -m vgglab ...``) run the CLI."""

import sys

from .entry import main

if __name__ == "__main__":
    sys.exit(main())

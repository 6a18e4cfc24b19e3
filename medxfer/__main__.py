"""``python -m medxfer``."""

import sys

from medxfer.cli import main

if __name__ == "__main__":
    sys.exit(main())

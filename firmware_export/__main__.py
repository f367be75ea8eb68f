"""``python -m firmware_export``: the same command as ``edgenn firmware``."""

import sys

from edgenn.cli import main

if __name__ == "__main__":
    main(["firmware", *sys.argv[1:]], prog_name="python -m firmware_export")

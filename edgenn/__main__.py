"""``python -m edgenn``: the same as the ``edgenn`` console script."""

from edgenn.cli import main

if __name__ == "__main__":
    main()

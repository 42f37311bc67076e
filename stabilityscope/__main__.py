"""``python -m stabilityscope [overrides]``: see :mod:`stabilityscope.cli.app`."""
from stabilityscope.cli.app import main

if __name__ == "__main__":
    main()

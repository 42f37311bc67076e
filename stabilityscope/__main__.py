"""``python -m stabilityscope [overrides]``: see :mod:`stabilityscope.app`."""
from stabilityscope.app import main

if __name__ == "__main__":
    main()

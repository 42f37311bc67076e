"""``python -m stabilityscope [overrides]``: see :mod:`stabilityscope.cli.app`."""
from stabilityscope.cli.app import cli

if __name__ == "__main__":
    cli()

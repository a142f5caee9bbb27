"""``python -m graphm``: the same as the ``graphm`` command."""
import sys

from graphm.cli import main

sys.exit(main())

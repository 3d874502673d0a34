"""``python -m tfkd.cli``: the ``tfkd`` command."""

import sys

from tfkd.cli import main

sys.exit(main())

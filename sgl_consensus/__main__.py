"""``python -m sgl_consensus ...``: the ``sgl-consensus`` command from a source tree (no install)."""

import sys

from sgl_consensus.cli import main

sys.exit(main())

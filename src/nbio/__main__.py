"""``python -m nbio`` is the ``nbio`` command."""

import sys

from .cli import main

sys.exit(main())

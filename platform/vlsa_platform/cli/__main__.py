"""``python -m vlsa_platform.cli``: the ``vlsa-platform`` command."""

import sys

from . import main

sys.exit(main())

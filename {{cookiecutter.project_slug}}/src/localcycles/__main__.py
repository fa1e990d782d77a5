"""``python -m localcycles --db PATH [--port N] [--admin-key K]``."""

import sys

from .process import main

sys.exit(main())

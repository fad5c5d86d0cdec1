"""``python -m nsmctl`` and the ``nsmctl`` console script."""

from __future__ import annotations

import sys

from nsmctl.app import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m modelpilot.compress ...`, the same as `modelpilot compress ...`."""

import sys

from modelpilot.compress.command import main

sys.exit(main())

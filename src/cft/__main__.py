"""`python -m cft`: the same as the `cft` command."""

import sys

from cft.cli import main

sys.exit(main())

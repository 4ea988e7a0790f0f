"""`python -m cft.cli` (and `torchrun -m cft.cli`): the same as the `cft` command."""

import sys

from cft.cli import main

sys.exit(main())

"""`python -m services.cli`: the `lookout` command."""

import sys

from services.cli import main

sys.exit(main())

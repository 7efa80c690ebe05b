"""`python -m faces.cli ...` is the `krx` command."""

import sys

from faces.cli import main

sys.exit(main())

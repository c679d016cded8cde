"""`python -m data_tools` runs the `roots-data` command line."""

import sys

from data_tools.cli import main

sys.exit(main())

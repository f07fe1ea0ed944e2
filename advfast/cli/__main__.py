"""``python -m advfast.cli`` (what torchrun runs): the command line."""

import sys

from advfast.cli import main

sys.exit(main())

"""``python -m platybus`` runs the command line."""

import sys

from platybus.cli import main

sys.exit(main())

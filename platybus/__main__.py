"""``python -m platybus`` runs the command line."""

import sys

from platybus.cli.main import main

sys.exit(main())

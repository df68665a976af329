"""``python -m fleet_agent``: the same as the ``fleet-agent`` command."""

import sys

from fleet_agent.cli import main

sys.exit(main())

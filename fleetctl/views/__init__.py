"""Everything fleetctl draws: one module per command family, and :mod:`~fleetctl.views.console`,
the one owner of the rich Console and of ``--json`` output. Views import rich; commands import
views inside their bodies only, so ``fleetctl --help`` never loads it."""

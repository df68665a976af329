"""fleetctl's state store: provision runs, host drain state and its audit log, locks."""

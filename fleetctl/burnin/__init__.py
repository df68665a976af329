"""Burn-in: active diagnostics that gate new and repaired hosts before they take work.

``dcgm`` parses ``dcgmi diag -j`` output (DCGM 2.x/3.x and 4.x layouts) into typed per-test,
per-GPU results; ``run`` runs ``playbooks/burn_in.yml`` through fleetctl's runner and turns each
host's answer into a :class:`~fleetctl.burnin.run.HostBurnIn`, naming the checks that could not run.
"""

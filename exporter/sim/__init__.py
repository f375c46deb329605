"""Exchange simulator: a seeded market model served over the four exchanges' real protocols.

Entry points live in :mod:`exporter.sim.main` (``Simulator``, ``add_arguments``, ``run``).
"""

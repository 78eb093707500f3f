"""Live updates: the broker contract and its backends, event streams, presence."""

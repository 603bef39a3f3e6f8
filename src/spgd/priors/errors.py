"""The error every prior loader raises for a checkpoint that cannot be used."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, unreadable, or not matching the network."""

"""Data sets, partitioners and the federation of known and agnostic clients."""

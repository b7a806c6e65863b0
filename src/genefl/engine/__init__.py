"""The in-process engine: round loop, local loop, client store, wire."""

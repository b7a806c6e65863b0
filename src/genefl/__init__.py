"""GENE-FL: gene-driven parameter-efficient dynamic federated learning."""

__version__ = "0.1.0"

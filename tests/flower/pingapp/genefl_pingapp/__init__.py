"""Minimal ServerApp/ClientApp for the genefl deployment tests."""

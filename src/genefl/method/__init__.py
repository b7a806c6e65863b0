"""GENE-FL math as pure functions: Fisher, losses, condensation, clustering, aggregation."""

"""Reports of results: summary tables."""

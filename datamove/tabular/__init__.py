"""`format: delta` datasets: sources, loading, digests, tiering."""

"""The `paperwire` command and the single-node launcher."""

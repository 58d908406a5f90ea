"""paperwire's embed service."""

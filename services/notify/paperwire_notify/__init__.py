"""paperwire's notify service."""

"""paperwire's recommend service."""

"""paperwire's contracts: the only code the services share."""

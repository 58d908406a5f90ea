"""paperwire's benchmarks: speed, cost and scale, each against a baseline measured in the same run."""

"""Per-arm time series for the console: request and error rates, latency quantiles, rewards."""

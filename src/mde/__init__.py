"""mde: the Market Data Engine."""

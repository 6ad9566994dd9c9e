"""The failover chain of one generation: retries, provider switches, stalls, breakers."""

"""Client -> NATS: accepting a message (checks, limits, ownership) and publishing it."""

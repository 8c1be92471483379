"""Layer 2: the event bus (embedded, Redis Streams) and the consumer policy on top of it."""

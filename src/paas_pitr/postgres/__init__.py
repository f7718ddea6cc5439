"""Running real PostgreSQL servers: the embedded audit database and the local engine's instances."""

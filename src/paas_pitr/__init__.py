"""Point-in-time recovery for the managed Postgres addon of a PaaS, on CloudNativePG."""

__version__ = "0.1.0"

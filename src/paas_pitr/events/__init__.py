"""The destructive-event finder: archived WAL decoded with ``pg_waldump``, the transactions
that dropped or truncated relations or deleted/updated many rows, and the recovery target
that restores to just before each."""

"""The CNPG contract: pure builders (plan -> objects) and projections (objects -> records).

Nothing in this package does I/O. Both engines hand it the same objects, so everything a
user sees is computed by the same code whichever engine runs the databases.
"""

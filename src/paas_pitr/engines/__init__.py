"""Engines run the databases described by CNPG objects. See ``base.Engine``."""

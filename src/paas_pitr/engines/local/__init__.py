"""The local engine: CNPG objects executed by real processes on one machine."""

from paas_pitr.engines.local.engine import LocalEngine

__all__ = ["LocalEngine"]

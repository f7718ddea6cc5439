"""The Kubernetes engine: CNPG objects applied to a real cluster through its API."""

from paas_pitr.engines.kubernetes.engine import KubernetesEngine

__all__ = ["KubernetesEngine"]

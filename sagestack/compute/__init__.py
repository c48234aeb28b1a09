"""Compute backends: start, watch and stop *instances* (training, serving, notebook processes)."""

from sagestack.compute.local import InstanceSpec, LocalBackend, LocalInstance, free_port

__all__ = ["InstanceSpec", "LocalBackend", "LocalInstance", "free_port"]

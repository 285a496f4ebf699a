"""Fixtures of the fault suite: see ``tests/faults/harness/fixtures.py``."""

from tests.faults.harness.fixtures import fault_backend, postgres_cluster

__all__ = ["fault_backend", "postgres_cluster"]

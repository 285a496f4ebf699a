"""The cross-system benchmark: offload beside its peers (see ``benchmarks/compare.py``)."""

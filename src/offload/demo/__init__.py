"""The demo: what offload does, shown live."""

"""Measurements: Little's-Law analytics and Prometheus metrics."""

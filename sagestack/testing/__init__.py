"""Helpers for driving a real sagestack server from tests, benchmarks and the demo (not used by the server)."""

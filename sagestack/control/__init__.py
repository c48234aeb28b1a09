"""Reconcilers: move jobs, endpoints and notebooks through their state machines on a backend."""

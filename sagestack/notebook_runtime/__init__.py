"""Code that runs inside a notebook instance (its kernels and their child processes), not in the server."""

"""A directory put on PYTHONPATH of notebook instances, so that every Python process there loads sitecustomize."""

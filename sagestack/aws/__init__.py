"""The AWS wire layer: protocols, SigV4, errors. Knows shapes, never operations by name."""

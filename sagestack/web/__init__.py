"""HTTP serving that is not an AWS API: the notebook proxy (and, later, the console)."""

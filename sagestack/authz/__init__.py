"""Authorization: which caller may do what, decided as IAM decides.

``policy`` parses and evaluates policy documents (pure); ``principals`` reads the
policies of a user or role from the IAM tables.
"""

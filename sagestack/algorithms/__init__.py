"""Built-in algorithms. Each runs *inside* an instance process, never in the API server.

Modules here import only the standard library, numpy/pandas/xgboost and each
other; they talk to the platform through the ``/opt/ml``-shaped directory
(config files in, model/failure files out) and stdout (logs and metrics).
"""

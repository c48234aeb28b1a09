"""Model servers that run inside an endpoint instance and speak SageMaker's container contract.

``xgboost_handler`` turns one ``/invocations`` request into a response (pure
logic, no I/O); ``model_server`` is the process that listens for HTTP.
"""

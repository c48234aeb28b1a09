"""Model servers that run inside an endpoint instance and speak SageMaker's container contract.

``xgboost_handler`` turns one ``/invocations`` request into a response (pure
logic, no I/O) from ``decoding``, ``predictors``, ``model`` and ``encoding``;
``compiled`` upgrades a model's predictors to trees compiled to C;
``model_server`` is the process that listens for HTTP.
"""

"""SageMaker's business logic: the state handlers and controllers both move."""

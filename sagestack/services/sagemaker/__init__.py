"""Amazon SageMaker (botocore "sagemaker", json 1.1): one module per resource family."""

from sagestack.services.sagemaker import hosting, tags, training, transform, tuning  # noqa: F401  (registers the handlers)

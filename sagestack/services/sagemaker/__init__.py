"""Amazon SageMaker (botocore "sagemaker", json 1.1): one module per resource family."""

from sagestack.services.sagemaker import (  # noqa: F401  (registers the handlers)
    hosting,
    notebooks,
    tags,
    training,
    transform,
    tuning,
)

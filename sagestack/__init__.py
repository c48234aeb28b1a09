"""sagestack: Amazon SageMaker's wire APIs, self-hosted on one machine."""

__version__ = "0.1.0"

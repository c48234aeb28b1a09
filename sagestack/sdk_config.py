"""The SageMaker Python SDK configuration sagestack gives its users (notebook instances, the demo).

Telemetry off (it would call AWS), and a default bucket, so that
``Session().default_bucket()`` needs no STS call to AWS's hard-coded endpoint.
"""

from __future__ import annotations


def sdk_config_yaml(default_bucket: str) -> str:
    return (
        "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
        f"      Session:\n        DefaultS3Bucket: {default_bucket}\n"
    )

"""The one ARN builder: every service and controller spells ARNs through here."""

from __future__ import annotations


def resource_arn(service: str, region: str, account: str, resource: str) -> str:
    """``arn:aws:<service>:<region>:<account>:<resource>`` (region and account may be empty, as for IAM and S3)."""
    return f"arn:aws:{service}:{region}:{account}:{resource}"


def sagemaker_arn(region: str, account: str, kind: str, name: str) -> str:
    """``arn:aws:sagemaker:<region>:<account>:<kind>/<name>``: SageMaker lower-cases names in its ARNs."""
    return resource_arn("sagemaker", region, account, f"{kind}/{name.lower()}")


def arn_region(arn: str) -> str:
    return arn.split(":")[3]


def arn_account(arn: str) -> str:
    return arn.split(":")[4]


def iam_arn(account: str, kind: str, path: str, name: str) -> str:
    """``arn:aws:iam::<account>:<kind><path><name>`` (IAM is global: no region; ``path`` starts and ends with /)."""
    return resource_arn("iam", "", account, f"{kind}{path}{name}")

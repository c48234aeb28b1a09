"""Execution roles for tests, benchmarks and the demo: what the console's "Create a new role" makes."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sagestack.authz.role_templates import FULL_ACCESS, PATH, execution_role_template

#: A role SageMaker may assume (and nothing else may).
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def execution_role(iam: Any, buckets: list[str] | None = None, prefix: str = "AmazonSageMaker-ExecutionRole") -> str:
    """A uniquely named role with AmazonSageMakerFullAccess and the console's S3 policy for ``buckets``
    (None: any bucket); its ARN."""
    from datetime import UTC, datetime

    template = execution_role_template(buckets, datetime.now(UTC))
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    arn = iam.create_role(RoleName=name, Path=PATH, AssumeRolePolicyDocument=template.trust_policy)["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="s3-access", PolicyDocument=template.s3_policy)
    iam.attach_role_policy(RoleName=name, PolicyArn=FULL_ACCESS)
    return str(arn)

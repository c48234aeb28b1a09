"""The execution role the SageMaker console makes ("Create a new role"), for the CLI and the console.

The console's choice is which S3 buckets the role may use: "Any S3 bucket", or "Specific S3
buckets" by name. Either way the role trusts sagemaker.amazonaws.com, has AmazonSageMakerFullAccess
(which already reaches buckets with "sagemaker" in their names) and gets one more policy for the
chosen buckets. The names carry the creation time, as the console's do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sagestack.authz.roles import SAGEMAKER_PRINCIPAL

FULL_ACCESS = "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"
PATH = "/service-role/"


@dataclass(frozen=True)
class ExecutionRoleTemplate:
    role_name: str
    policy_name: str
    trust_policy: str
    s3_policy: str
    description: str


def execution_role_template(buckets: Sequence[str] | None, now: datetime) -> ExecutionRoleTemplate:
    """``buckets=None``: any bucket; otherwise only these (names, not ARNs)."""
    stamp = now.strftime("%Y%m%dT%H%M%S")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": SAGEMAKER_PRINCIPAL}, "Action": "sts:AssumeRole"}]}
    bucket_arns = ["arn:aws:s3:::*"] if buckets is None else [f"arn:aws:s3:::{b}" for b in buckets]
    object_arns = ["arn:aws:s3:::*"] if buckets is None else [f"arn:aws:s3:::{b}/*" for b in buckets]
    s3 = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": bucket_arns},
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": object_arns},
    ]}
    return ExecutionRoleTemplate(
        role_name=f"AmazonSageMaker-ExecutionRole-{stamp}",
        policy_name=f"AmazonSageMaker-ExecutionPolicy-{stamp}",
        trust_policy=json.dumps(trust),
        s3_policy=json.dumps(s3),
        description="SageMaker execution role created by sagestack",
    )


def create_execution_role(iam: Any, buckets: Sequence[str] | None, now: datetime) -> str:
    """Create the role through an IAM client (boto3's, or anything with its methods); return its ARN."""
    template = execution_role_template(buckets, now)
    role = iam.create_role(RoleName=template.role_name, Path=PATH, AssumeRolePolicyDocument=template.trust_policy,
                           Description=template.description)["Role"]
    policy = iam.create_policy(PolicyName=template.policy_name, Path=PATH, PolicyDocument=template.s3_policy)
    iam.attach_role_policy(RoleName=template.role_name, PolicyArn=policy["Policy"]["Arn"])
    iam.attach_role_policy(RoleName=template.role_name, PolicyArn=FULL_ACCESS)
    return str(role["Arn"])

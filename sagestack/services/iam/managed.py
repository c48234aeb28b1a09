"""AWS managed policies that exist out of the box (arn:aws:iam::aws:policy/...).

The documents are sagestack's own short equivalents of the AWS policies of the
same names, covering the services sagestack speaks. :func:`seed_managed_policies`
runs at every start: it adds missing policies and, when a document here
changed, stores it as a new default version (as AWS does when it updates one).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sagestack.db import Database
from sagestack.db.models.identity import ManagedPolicy
from sagestack.services import seeder
from sagestack.services.iam.common import AWS_POLICY_PREFIX
from sagestack.services.iam.policies import MAX_VERSIONS, add_version, new_policy, versions_of


@dataclass(frozen=True)
class BuiltinPolicy:
    name: str
    description: str
    statements: tuple[dict[str, Any], ...]
    path: str = "/"

    @property
    def arn(self) -> str:
        return f"{AWS_POLICY_PREFIX}{self.path}{self.name}"

    @property
    def document(self) -> str:
        # Pretty-printed like the documents AWS returns for its own policies.
        return json.dumps({"Version": "2012-10-17", "Statement": list(self.statements)}, indent=4)


def _allow(sid: str, actions: list[str], resources: list[str] | str = "*", **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources, **extra}


_SAGEMAKER_BUCKETS = [
    "arn:aws:s3:::*SageMaker*",
    "arn:aws:s3:::*Sagemaker*",
    "arn:aws:s3:::*sagemaker*",
]

BUILTIN_POLICIES: tuple[BuiltinPolicy, ...] = (
    BuiltinPolicy(
        "AdministratorAccess",
        "Provides full access to every service and resource.",
        (_allow("AllowEverything", ["*"]),),
    ),
    BuiltinPolicy(
        "AmazonS3FullAccess",
        "Provides full access to all buckets.",
        (_allow("S3Everything", ["s3:*", "s3-object-lambda:*"]),),
    ),
    BuiltinPolicy(
        "AmazonS3ReadOnlyAccess",
        "Provides read only access to all buckets.",
        (
            _allow(
                "S3Read",
                ["s3:Get*", "s3:List*", "s3:Describe*", "s3-object-lambda:Get*", "s3-object-lambda:List*"],
            ),
        ),
    ),
    BuiltinPolicy(
        "AmazonSageMakerFullAccess",
        "Provides full access to SageMaker, plus the access to S3, CloudWatch and IAM "
        "that training jobs and endpoints need.",
        (
            _allow("SageMaker", ["sagemaker:*"]),
            _allow(
                "SageMakerBuckets",
                ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                [f"{bucket}/*" for bucket in _SAGEMAKER_BUCKETS],
            ),
            _allow(
                "SageMakerBucketAdmin",
                [
                    "s3:CreateBucket",
                    "s3:GetBucketLocation",
                    "s3:ListBucket",
                    "s3:GetBucketCors",
                    "s3:PutBucketCors",
                ],
                _SAGEMAKER_BUCKETS,
            ),
            _allow("ListAllBuckets", ["s3:ListAllMyBuckets"]),
            _allow(
                "Monitoring",
                [
                    "cloudwatch:PutMetricData",
                    "cloudwatch:GetMetricData",
                    "cloudwatch:GetMetricStatistics",
                    "cloudwatch:ListMetrics",
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogGroups",
                    "logs:DescribeLogStreams",
                    "logs:GetLogEvents",
                    "logs:PutLogEvents",
                ],
            ),
            _allow("ReadRoles", ["iam:GetRole", "iam:ListRoles"]),
            _allow(
                "PassRoleToSageMaker",
                ["iam:PassRole"],
                "arn:aws:iam::*:role/*",
                Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            ),
        ),
    ),
    BuiltinPolicy(
        "AmazonSageMakerReadOnly",
        "Provides read only access to SageMaker.",
        (
            _allow(
                "SageMakerRead",
                [
                    "sagemaker:Describe*",
                    "sagemaker:List*",
                    "sagemaker:Get*",
                    "sagemaker:BatchGet*",
                    "sagemaker:Search",
                ],
            ),
        ),
    ),
    BuiltinPolicy(
        "CloudWatchLogsFullAccess",
        "Provides full access to CloudWatch Logs.",
        (_allow("Logs", ["logs:*"]),),
    ),
    BuiltinPolicy(
        "CloudWatchFullAccess",
        "Provides full access to CloudWatch metrics, alarms and logs.",
        (_allow("CloudWatch", ["cloudwatch:*", "logs:*"]),),
    ),
    BuiltinPolicy(
        "IAMReadOnlyAccess",
        "Provides read only access to IAM.",
        (_allow("IamRead", ["iam:Get*", "iam:List*", "iam:Generate*", "iam:Simulate*"]),),
    ),
)


def builtin_policy_id(arn: str) -> str:
    """A stable ANPA id per AWS policy, the same on every installation (as in AWS)."""
    digest = int.from_bytes(hashlib.sha256(arn.encode()).digest(), "big")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    chars = []
    for _ in range(17):
        digest, index = divmod(digest, len(alphabet))
        chars.append(alphabet[index])
    return "ANPA" + "".join(chars)


def _same_document(a: str, b: str) -> bool:
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


def _refresh(session: Session, stored: ManagedPolicy, builtin: BuiltinPolicy) -> None:
    if _same_document(stored.document, builtin.document):
        return
    versions = versions_of(session, stored.arn)
    if len(versions) >= MAX_VERSIONS:
        # Make room by dropping the oldest non-default version.
        oldest = next(v for v in reversed(versions) if not v.is_default)
        session.delete(oldest)
        session.flush()
    add_version(session, stored, builtin.document, set_default=True)
    stored.description = builtin.description


@seeder
def seed_managed_policies(database: Database) -> None:
    """Create or update the built-in AWS managed policies; safe to call on every start."""
    with database.transaction() as session:
        existing = {
            p.arn: p
            for p in session.scalars(select(ManagedPolicy).where(ManagedPolicy.aws_managed.is_(True)))
        }
        for builtin in BUILTIN_POLICIES:
            stored = existing.get(builtin.arn)
            if stored is None:
                new_policy(
                    session,
                    builtin.arn,
                    builtin.name,
                    builtin.path,
                    builtin.document,
                    builtin.description,
                    aws_managed=True,
                    policy_id=builtin_policy_id(builtin.arn),
                )
            else:
                _refresh(session, stored, builtin)

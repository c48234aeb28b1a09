"""The IAM service (botocore "iam"): users, groups, access keys, roles, policies, simulation.

State lives in the identity tables (``sagestack.db.models.identity``) and tags in
``resource_tags`` keyed by ARN. Importing this package registers every handler.
"""

from sagestack.authz.principals import PrincipalPolicies, principal_policies
from sagestack.services.iam import (  # noqa: F401  (registers the handlers)
    access_keys,
    attachments,
    groups,
    policies,
    roles,
    simulate,
    tags_and_boundaries,
    users,
)
from sagestack.services.iam.common import role_by_arn
from sagestack.services.iam.managed import BUILTIN_POLICIES, seed_managed_policies

__all__ = [
    "BUILTIN_POLICIES",
    "PrincipalPolicies",
    "principal_policies",
    "role_by_arn",
    "seed_managed_policies",
]

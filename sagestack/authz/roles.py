"""Who may assume a role: its trust policy, evaluated like any other policy."""

from __future__ import annotations

from sagestack.authz.policy import Caller, PolicyError, PolicySource, Request, evaluate, parse_policy

#: The principal SageMaker assumes execution roles as.
SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"


def trust_allows(document: str, role_arn: str, caller: Caller) -> bool:
    """Does the role's trust policy let ``caller`` (a service, or a user/role session) assume it?"""
    try:
        policy = parse_policy(document, "trust")
    except PolicyError:
        return False  # a trust policy IAM would not have stored lets no one in
    request = Request("sts:AssumeRole", role_arn, {}, caller)
    return evaluate([PolicySource(policy, "trust", "resource")], request).decision == "allowed"


def service_may_assume(document: str, role_arn: str, service: str = SAGEMAKER_PRINCIPAL) -> bool:
    return trust_allows(document, role_arn, Caller(service=service))

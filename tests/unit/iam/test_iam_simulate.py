"""IAM policy simulation and the pure policy engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

import sagestack.services.iam  # noqa: F401  (registers the handlers)
from sagestack.authz.policy import (
    Caller,
    PolicyError,
    PolicySource,
    Request,
    authorize,
    evaluate,
    parse_policy,
)
from sagestack.db.base import Database
from sagestack.services import RequestContext
from sagestack.services.iam import (
    principal_policies,
)
from tests.unit.iam.support import (
    ACCOUNT,
    TRUST,
    allow,
    call,
    deny,
    doc,
    fails,
    make_role,
    s3_arn,
)

# --------------------------------------------------------------------------- simulation


def simulate(ctx: RequestContext, source: str, actions: list[str], **params: Any) -> list[dict[str, Any]]:
    return call(ctx, "SimulatePrincipalPolicy", PolicySourceArn=source, ActionNames=actions, **params)[
        "EvaluationResults"
    ]


def decisions(results: list[dict[str, Any]]) -> dict[str, str]:
    return {r["EvalActionName"]: r["EvalDecision"] for r in results}


def test_simulate_role_with_managed_and_inline(ctx: RequestContext, seeded: Database) -> None:
    role = make_role(ctx)
    call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=s3_arn("AmazonS3FullAccess"))
    results = simulate(ctx, role["Arn"], ["s3:GetObject", "sagemaker:CreateTrainingJob"])
    assert decisions(results) == {"s3:GetObject": "allowed", "sagemaker:CreateTrainingJob": "implicitDeny"}
    assert results[0]["EvalResourceName"] == "*"
    assert results[0]["MatchedStatements"] == [
        {"SourcePolicyId": "AmazonS3FullAccess", "SourcePolicyType": "aws-managed"}
    ]
    assert results[1]["MatchedStatements"] == []
    call(ctx, "PutRolePolicy", RoleName="Exec", PolicyName="NoDelete", PolicyDocument=doc(deny("s3:Delete*")))
    results = simulate(ctx, role["Arn"], ["s3:DeleteObject", "s3:deleteobject", "s3:PutObject"])
    assert decisions(results) == {
        "s3:DeleteObject": "explicitDeny",
        "s3:deleteobject": "explicitDeny",
        "s3:PutObject": "allowed",
    }
    assert results[0]["MatchedStatements"] == [{"SourcePolicyId": "NoDelete", "SourcePolicyType": "role"}]


def test_simulate_resources(ctx: RequestContext) -> None:
    role = make_role(ctx)
    call(
        ctx,
        "PutRolePolicy",
        RoleName="Exec",
        PolicyName="p",
        PolicyDocument=doc(allow("s3:Get*", "arn:aws:s3:::data/*")),
    )
    one = simulate(ctx, role["Arn"], ["s3:GetObject"], ResourceArns=["arn:aws:s3:::data/train.csv"])
    assert one[0]["EvalDecision"] == "allowed" and one[0]["EvalResourceName"] == "arn:aws:s3:::data/train.csv"
    two = simulate(
        ctx, role["Arn"], ["s3:GetObject"], ResourceArns=["arn:aws:s3:::data/a", "arn:aws:s3:::other/b"]
    )
    assert len(two) == 1 and two[0]["EvalDecision"] == "implicitDeny"  # the most restrictive wins
    per_resource = {
        r["EvalResourceName"]: r["EvalResourceDecision"] for r in two[0]["ResourceSpecificResults"]
    }
    assert per_resource == {"arn:aws:s3:::data/a": "allowed", "arn:aws:s3:::other/b": "implicitDeny"}
    # Without a resource the simulation runs against "*", which any Resource pattern covers.
    assert simulate(ctx, role["Arn"], ["s3:GetObject"])[0]["EvalDecision"] == "allowed"


def test_simulate_conditions_and_context(ctx: RequestContext) -> None:
    role = make_role(ctx)
    statement = allow("s3:PutObject", Condition={"StringEquals": {"s3:x-amz-acl": "private"}})
    call(ctx, "PutRolePolicy", RoleName="Exec", PolicyName="p", PolicyDocument=doc(statement))
    missing = simulate(ctx, role["Arn"], ["s3:PutObject"])[0]
    assert missing["EvalDecision"] == "implicitDeny" and missing["MissingContextValues"] == ["s3:x-amz-acl"]
    entry = {"ContextKeyName": "s3:x-amz-acl", "ContextKeyValues": ["private"], "ContextKeyType": "string"}
    given = simulate(ctx, role["Arn"], ["s3:PutObject"], ContextEntries=[entry])[0]
    assert given["EvalDecision"] == "allowed" and given["MissingContextValues"] == []


def test_simulate_boundary_and_inputs(ctx: RequestContext, seeded: Database) -> None:
    role = make_role(ctx, PermissionsBoundary=s3_arn("AmazonS3ReadOnlyAccess"))
    call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=s3_arn("AdministratorAccess"))
    results = simulate(ctx, role["Arn"], ["s3:GetObject", "s3:PutObject"])
    assert decisions(results) == {"s3:GetObject": "allowed", "s3:PutObject": "implicitDeny"}
    assert results[1]["PermissionsBoundaryDecisionDetail"] == {"AllowedByPermissionsBoundary": False}
    wide = simulate(
        ctx, role["Arn"], ["s3:PutObject"], PermissionsBoundaryPolicyInputList=[doc(allow("s3:*"))]
    )
    assert wide[0]["EvalDecision"] == "allowed"
    extra = simulate(ctx, role["Arn"], ["s3:GetObject"], PolicyInputList=[doc(deny("s3:*"))])
    assert extra[0]["EvalDecision"] == "explicitDeny"
    assert extra[0]["MatchedStatements"] == [
        {"SourcePolicyId": "PolicyInputList.1", "SourcePolicyType": "none"}
    ]
    for exclusion in ({"PolicyArn": s3_arn("AdministratorAccess")}, {"PolicyType": "aws-managed"}):
        excluded = simulate(ctx, role["Arn"], ["s3:GetObject"], PolicyExclusionList=[exclusion])
        assert excluded[0]["EvalDecision"] == "implicitDeny"
    unbounded = simulate(
        ctx, role["Arn"], ["s3:PutObject"], PolicyExclusionList=[{"PolicyType": "permission-boundary"}]
    )
    assert (
        unbounded[0]["EvalDecision"] == "allowed" and "PermissionsBoundaryDecisionDetail" not in unbounded[0]
    )
    call(ctx, "PutRolePolicy", RoleName="Exec", PolicyName="NoGet", PolicyDocument=doc(deny("s3:GetObject")))
    inline_out = {
        "InlinePolicyIdentifier": {"PolicyName": "NoGet", "AttachmentType": "role", "AttachmentName": "Exec"}
    }
    for exclusion in (inline_out, {"PolicyType": "inline"}):
        assert (
            simulate(ctx, role["Arn"], ["s3:GetObject"], PolicyExclusionList=[exclusion])[0]["EvalDecision"]
            == "allowed"
        )
    assert simulate(ctx, role["Arn"], ["s3:GetObject"])[0]["EvalDecision"] == "explicitDeny"
    fails(
        ctx,
        "SimulatePrincipalPolicy",
        "InvalidInput",
        400,
        PolicySourceArn=role["Arn"],
        ActionNames=["s3:x"],
        PolicyInputList=["{"],
    )


def test_simulate_sources(ctx: RequestContext, database: Database) -> None:
    make_role(ctx)
    call(ctx, "PutRolePolicy", RoleName="Exec", PolicyName="p", PolicyDocument=doc(allow("sagemaker:*")))
    session_arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/Exec/botocore-session-1"
    assert simulate(ctx, session_arn, ["sagemaker:CreateModel"])[0]["EvalDecision"] == "allowed"
    call(ctx, "CreateUser", UserName="lee")
    call(
        ctx,
        "PutUserPolicy",
        UserName="lee",
        PolicyName="p",
        PolicyDocument=doc(allow("iam:GetUser", "arn:aws:iam::*:user/${aws:username}")),
    )
    user_arn = f"arn:aws:iam::{ACCOUNT}:user/lee"
    ctx_entry = {"ContextKeyName": "aws:username", "ContextKeyValues": ["lee"], "ContextKeyType": "string"}
    own = simulate(ctx, user_arn, ["iam:GetUser"], ResourceArns=[user_arn], ContextEntries=[ctx_entry])
    assert own[0]["EvalDecision"] == "allowed"
    other = simulate(
        ctx,
        user_arn,
        ["iam:GetUser"],
        ResourceArns=[f"arn:aws:iam::{ACCOUNT}:user/kim"],
        ContextEntries=[ctx_entry],
    )
    assert other[0]["EvalDecision"] == "implicitDeny"
    err = fails(
        ctx,
        "SimulatePrincipalPolicy",
        "NoSuchEntity",
        404,
        PolicySourceArn=f"arn:aws:iam::{ACCOUNT}:role/Nope",
        ActionNames=["s3:x"],
    )
    assert err.message == "The role with name Nope cannot be found."
    fails(
        ctx,
        "SimulatePrincipalPolicy",
        "InvalidInput",
        400,
        PolicySourceArn="arn:aws:s3:::bucket-name-here",
        ActionNames=["s3:x"],
    )
    page = call(
        ctx,
        "SimulatePrincipalPolicy",
        PolicySourceArn=user_arn,
        ActionNames=["s3:a", "s3:b", "s3:c"],
        MaxItems=2,
    )
    assert page["IsTruncated"] and len(page["EvaluationResults"]) == 2
    rest = call(
        ctx,
        "SimulatePrincipalPolicy",
        PolicySourceArn=user_arn,
        ActionNames=["s3:a", "s3:b", "s3:c"],
        Marker=page["Marker"],
    )
    assert [r["EvalActionName"] for r in rest["EvaluationResults"]] == ["s3:c"]
    with database.session() as session:
        stored = principal_policies(session, "role", "Exec", ACCOUNT)
    assert stored is not None and stored.arn.endswith(":role/Exec") and stored.boundary is None


def test_simulate_custom_policy_with_resource_policy(ctx: RequestContext) -> None:
    caller = f"arn:aws:iam::{ACCOUNT}:user/admin"
    bucket_policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": caller},
                    "Action": "s3:GetObject",
                    "Resource": "arn:aws:s3:::b/*",
                }
            ],
        }
    )
    result = call(
        ctx,
        "SimulateCustomPolicy",
        PolicyInputList=[doc(allow("s3:ListBucket"))],
        ActionNames=["s3:GetObject", "s3:ListBucket", "s3:PutObject"],
        ResourceArns=["arn:aws:s3:::b/k"],
        ResourcePolicy=bucket_policy,
        CallerArn=caller,
    )["EvaluationResults"]
    assert decisions(result) == {
        "s3:GetObject": "allowed",
        "s3:ListBucket": "allowed",
        "s3:PutObject": "implicitDeny",
    }


# --------------------------------------------------------------------------- the pure policy engine


def _source(document: str, kind: Any = "identity") -> PolicySource:
    return PolicySource(parse_policy(document, kind), "test", "none")


def _decide(document: str, action: str, resource: str = "*", **context: list[str]) -> str:
    return evaluate([_source(document)], Request(action, resource, context)).decision


def test_engine_wildcards_and_negations() -> None:
    assert _decide(doc(allow("*")), "anything:AtAll") == "allowed"
    assert _decide(doc(allow("s3:Get*")), "s3:GetObjectTagging") == "allowed"
    assert _decide(doc(allow("s3:Get?bject")), "s3:GetObject") == "allowed"
    assert _decide(doc(allow("s3:Get*")), "s3:PutObject") == "implicitDeny"
    not_action = doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
    assert (
        _decide(not_action, "s3:PutObject") == "allowed"
        and _decide(not_action, "iam:CreateUser") == "implicitDeny"
    )
    not_resource = doc(
        {"Effect": "Deny", "Action": "s3:*", "NotResource": "arn:aws:s3:::safe/*"}, allow("s3:*")
    )
    assert _decide(not_resource, "s3:GetObject", "arn:aws:s3:::safe/x") == "allowed"
    assert _decide(not_resource, "s3:GetObject", "arn:aws:s3:::other/x") == "explicitDeny"
    # Resource matching is case-sensitive, action matching is not.
    assert (
        _decide(doc(allow("S3:GETOBJECT", "arn:aws:s3:::Data/*")), "s3:GetObject", "arn:aws:s3:::data/x")
        == "implicitDeny"
    )


def test_engine_conditions() -> None:
    like = doc(allow("s3:*", Condition={"StringLike": {"s3:prefix": ["home/*", "shared/*"]}}))
    assert _decide(like, "s3:ListBucket", **{"s3:prefix": ["home/me"]}) == "allowed"
    assert _decide(like, "s3:ListBucket", **{"s3:prefix": ["etc/"]}) == "implicitDeny"
    negated = doc(allow("s3:*", Condition={"StringNotEquals": {"aws:RequestedRegion": "eu-west-1"}}))
    assert _decide(negated, "s3:GetObject") == "allowed"  # an absent key satisfies a negated operator
    assert _decide(negated, "s3:GetObject", **{"aws:requestedregion": ["eu-west-1"]}) == "implicitDeny"
    if_exists = doc(allow("s3:*", Condition={"NumericLessThanIfExists": {"s3:max-keys": "10"}}))
    assert _decide(if_exists, "s3:ListBucket") == "allowed"
    assert _decide(if_exists, "s3:ListBucket", **{"s3:max-keys": ["50"]}) == "implicitDeny"
    null = doc(deny("*", Condition={"Null": {"aws:MultiFactorAuthAge": "true"}}), allow("*"))
    assert _decide(null, "iam:DeleteUser") == "explicitDeny"
    assert _decide(null, "iam:DeleteUser", **{"aws:MultiFactorAuthAge": ["30"]}) == "allowed"
    all_values = doc(allow("*", Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}))
    assert _decide(all_values, "iam:TagRole", **{"aws:TagKeys": ["a"]}) == "allowed"
    assert _decide(all_values, "iam:TagRole", **{"aws:TagKeys": ["a", "c"]}) == "implicitDeny"
    any_value = doc(allow("*", Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": "c"}}))
    assert _decide(any_value, "iam:TagRole", **{"aws:TagKeys": ["a", "c"]}) == "allowed"
    assert _decide(any_value, "iam:TagRole") == "implicitDeny"
    misc = doc(
        allow(
            "*",
            Condition={
                "Bool": {"aws:SecureTransport": True},
                "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                "DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"},
                "ArnLike": {"aws:SourceArn": "arn:aws:sagemaker:*:*:training-job/*"},
            },
        )
    )
    good = {
        "aws:SecureTransport": ["true"],
        "aws:SourceIp": ["10.1.2.3"],
        "aws:CurrentTime": ["2025-06-01T00:00:00Z"],
        "aws:SourceArn": [f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/x"],
    }
    assert _decide(misc, "s3:GetObject", **good) == "allowed"
    assert _decide(misc, "s3:GetObject", **{**good, "aws:SourceIp": ["192.168.0.1"]}) == "implicitDeny"


def test_engine_variables_need_the_2012_version() -> None:
    statement = allow("s3:*", "arn:aws:s3:::home/${aws:username}/*")
    assert (
        _decide(doc(statement), "s3:GetObject", "arn:aws:s3:::home/ann/x", **{"aws:username": ["ann"]})
        == "allowed"
    )
    assert (
        _decide(doc(statement), "s3:GetObject", "arn:aws:s3:::home/bob/x", **{"aws:username": ["ann"]})
        == "implicitDeny"
    )
    old = doc(statement, version="2008-10-17")
    assert (
        _decide(old, "s3:GetObject", "arn:aws:s3:::home/ann/x", **{"aws:username": ["ann"]}) == "implicitDeny"
    )
    literal = doc(allow("s3:*", "arn:aws:s3:::b/${*}"))
    assert _decide(literal, "s3:GetObject", "arn:aws:s3:::b/*") == "allowed"
    assert _decide(literal, "s3:GetObject", "arn:aws:s3:::b/x") == "implicitDeny"


def test_engine_trust_policy_principals() -> None:
    role_principal = doc(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/path/Caller"},
            "Action": "sts:AssumeRole",
        }
    )
    source = _source(role_principal, "trust")
    session = Caller(f"arn:aws:sts::{ACCOUNT}:assumed-role/Caller/s", ACCOUNT)
    assert evaluate([source], Request("sts:AssumeRole", caller=session)).decision == "allowed"
    stranger = Caller(f"arn:aws:iam::{ACCOUNT}:user/other", ACCOUNT)
    assert evaluate([source], Request("sts:AssumeRole", caller=stranger)).decision == "implicitDeny"
    account = _source(
        doc({"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"}), "trust"
    )
    assert evaluate([account], Request("sts:AssumeRole", caller=stranger)).decision == "allowed"
    service = _source(TRUST, "trust")
    sm = Caller("", ACCOUNT, service="sagemaker.amazonaws.com")
    assert evaluate([service], Request("sts:AssumeRole", caller=sm)).decision == "allowed"
    assert evaluate([service], Request("sts:AssumeRole", caller=stranger)).decision == "implicitDeny"
    with pytest.raises(PolicyError):
        parse_policy(
            doc({"Effect": "Allow", "Principal": {"Robot": "x"}, "Action": "sts:AssumeRole"}), "trust"
        )


def test_engine_authorize_combinations() -> None:
    identity = [_source(doc(allow("s3:*")))]
    boundary = [_source(doc(allow("s3:Get*")))]
    assert authorize(Request("s3:GetObject"), identity, boundary).decision == "allowed"
    capped = authorize(Request("s3:PutObject"), identity, boundary)
    assert capped.decision == "implicitDeny" and capped.allowed_by_boundary is False
    bucket = _source(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:DeleteObject",
                        "Resource": "arn:aws:s3:::b/*",
                    }
                ],
            }
        ),
        "resource",
    )
    denied = authorize(Request("s3:DeleteObject", "arn:aws:s3:::b/k"), identity, None, bucket)
    assert denied.decision == "explicitDeny" and denied.matched[0].source is bucket
    assert authorize(Request("s3:GetObject", "arn:aws:s3:::b/k"), [], None, bucket).decision == "implicitDeny"

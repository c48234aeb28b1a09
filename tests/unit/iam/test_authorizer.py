"""The request path's authorizer over a real database: decisions, messages, caching and invalidation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sagestack.authz.actions import ServiceTable, parse_table
from sagestack.authz.authorizer import Authorizer
from sagestack.authz.generation import PolicyGeneration
from sagestack.aws.context import RequestFacts
from sagestack.aws.errors import AwsError
from sagestack.db.base import Database
from sagestack.services import Principal
from tests.unit.iam.support import ACCOUNT, allow, call, deny, doc

TABLE = parse_table({
    "service": "sagemaker",
    "denial": {"code": "AccessDeniedException", "status": 400},
    "operations": {
        "CreateTrainingJob": [
            {"action": "sagemaker:CreateTrainingJob",
             "resources": ["arn:${Partition}:sagemaker:${Region}:${Account}:training-job/${TrainingJobName}"],
             "conditions": {"sagemaker:InstanceTypes": ["ResourceConfig.InstanceType"],
                            "aws:RequestTag/${TagKey}": ["Tags"], "aws:TagKeys": ["Tags"]}},
            {"action": "iam:PassRole", "resources": ["${RoleArn}"], "when": "RoleArn",
             "context": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        ],
        "InvokeEndpoint": [
            {"action": "sagemaker:InvokeEndpoint",
             "resources": ["arn:${Partition}:sagemaker:${Region}:${Account}:endpoint/${EndpointName}"],
             "resource_tags": True},
        ],
        "ListTrainingJobs": [{"action": "sagemaker:ListTrainingJobs", "resources": ["*"]}],
        "GetCallerIdentity": [],
    },
})
FACTS = RequestFacts(source_ip="127.0.0.1", secure=False, region="us-east-1")


def tables(_service: str) -> ServiceTable:
    return TABLE


@pytest.fixture
def alice(ctx: Any) -> Principal:
    out = call(ctx, "CreateUser", UserName="alice")
    return Principal(ACCOUNT, out["User"]["Arn"], out["User"]["UserId"], "AKIAALICE", "user", "alice")


@pytest.fixture
def authorizer(database: Database) -> Authorizer:
    authz = Authorizer(database, ACCOUNT, PolicyGeneration(), tables=tables)
    authz.watch()
    return authz


def _denied(authz: Authorizer, who: Principal, operation: str, **params: Any) -> AwsError:
    with pytest.raises(AwsError) as caught:
        authz.authorize(who, "sagemaker", operation, params, FACTS)
    return caught.value


def test_a_user_without_policies_is_denied_with_awss_message(authorizer: Authorizer, alice: Principal) -> None:
    error = _denied(authorizer, alice, "CreateTrainingJob", TrainingJobName="Job-1")
    assert (error.code, error.status) == ("AccessDeniedException", 400)
    assert error.message == (
        f"User: {alice.arn} is not authorized to perform: sagemaker:CreateTrainingJob on resource: "
        f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/job-1 because no identity-based policy "
        "allows the sagemaker:CreateTrainingJob action"
    )


def test_an_inline_allow_takes_effect_at_once_and_a_delete_revokes_it(
        ctx: Any, authorizer: Authorizer, alice: Principal) -> None:
    _denied(authorizer, alice, "ListTrainingJobs")
    call(ctx, "PutUserPolicy", UserName="alice", PolicyName="p", PolicyDocument=doc(allow("sagemaker:List*")))
    authorizer.authorize(alice, "sagemaker", "ListTrainingJobs", {}, FACTS)
    call(ctx, "DeleteUserPolicy", UserName="alice", PolicyName="p")
    _denied(authorizer, alice, "ListTrainingJobs")


def test_explicit_deny_wins_and_says_so(ctx: Any, authorizer: Authorizer, alice: Principal) -> None:
    secret = deny("sagemaker:CreateTrainingJob", "arn:aws:sagemaker:*:*:training-job/secret*")
    call(ctx, "PutUserPolicy", UserName="alice", PolicyName="p", PolicyDocument=doc(allow("*"), secret))
    authorizer.authorize(alice, "sagemaker", "CreateTrainingJob", {"TrainingJobName": "open"}, FACTS)
    error = _denied(authorizer, alice, "CreateTrainingJob", TrainingJobName="Secret-2")
    assert error.message.endswith("with an explicit deny in an identity-based policy")


def test_pass_role_is_a_second_check(ctx: Any, authorizer: Authorizer, alice: Principal) -> None:
    call(ctx, "PutUserPolicy", UserName="alice", PolicyName="p", PolicyDocument=doc(allow("sagemaker:*")))
    role = f"arn:aws:iam::{ACCOUNT}:role/Exec"
    authorizer.authorize(alice, "sagemaker", "CreateTrainingJob", {"TrainingJobName": "j"}, FACTS)
    error = _denied(authorizer, alice, "CreateTrainingJob", TrainingJobName="j", RoleArn=role)
    assert f"perform: iam:PassRole on resource: {role} because" in error.message


def test_a_permissions_boundary_caps_an_admin_like_policy(ctx: Any, authorizer: Authorizer,
                                                          alice: Principal) -> None:
    call(ctx, "PutUserPolicy", UserName="alice", PolicyName="all", PolicyDocument=doc(allow("*")))
    boundary = call(ctx, "CreatePolicy", PolicyName="only-list",
                    PolicyDocument=doc(allow("sagemaker:List*")))["Policy"]["Arn"]
    call(ctx, "PutUserPermissionsBoundary", UserName="alice", PermissionsBoundary=boundary)
    authorizer.authorize(alice, "sagemaker", "ListTrainingJobs", {}, FACTS)
    error = _denied(authorizer, alice, "CreateTrainingJob", TrainingJobName="j")
    assert error.message.endswith("because no permissions boundary allows the sagemaker:CreateTrainingJob action")


def test_condition_keys_from_the_request(ctx: Any, authorizer: Authorizer, alice: Principal) -> None:
    only_small = allow("sagemaker:CreateTrainingJob", Condition={
        "StringLike": {"sagemaker:InstanceTypes": "ml.m5.*"},
        "ForAllValues:StringEquals": {"aws:TagKeys": ["team"]},
        "IpAddress": {"aws:SourceIp": "127.0.0.0/8"},
    })
    call(ctx, "PutUserPolicy", UserName="alice", PolicyName="p", PolicyDocument=doc(only_small))
    small = {"TrainingJobName": "j", "ResourceConfig": {"InstanceType": "ml.m5.large"},
             "Tags": [{"Key": "team", "Value": "a"}]}
    authorizer.authorize(alice, "sagemaker", "CreateTrainingJob", small, FACTS)
    _denied(authorizer, alice, "CreateTrainingJob", **{**small, "ResourceConfig": {"InstanceType": "ml.p4d.24xlarge"}})
    _denied(authorizer, alice, "CreateTrainingJob", **{**small, "Tags": [{"Key": "other", "Value": "b"}]})
    with pytest.raises(AwsError):
        authorizer.authorize(alice, "sagemaker", "CreateTrainingJob", small,
                             RequestFacts(source_ip="10.1.2.3", region="us-east-1"))


def test_resource_tags_decide_and_a_tag_change_takes_effect(ctx: Any, database: Database,
                                                            authorizer: Authorizer, alice: Principal) -> None:
    from sagestack.logic import tags as tag_store

    call(ctx, "PutUserPolicy", UserName="alice", PolicyName="p", PolicyDocument=doc(
        allow("sagemaker:InvokeEndpoint", Condition={"StringEquals": {"aws:ResourceTag/team": "a"}})))
    arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/ep"
    _denied(authorizer, alice, "InvokeEndpoint", EndpointName="ep")
    with database.transaction() as session:
        tag_store.put_tags(session, arn, [{"Key": "team", "Value": "a"}])
    authorizer.authorize(alice, "sagemaker", "InvokeEndpoint", {"EndpointName": "ep"}, FACTS)


def test_admin_and_operations_that_need_no_permission(authorizer: Authorizer, alice: Principal) -> None:
    admin = Principal(ACCOUNT, f"arn:aws:iam::{ACCOUNT}:user/admin", "AIDA", "AKIA", "user", "admin", True)
    authorizer.authorize(admin, "sagemaker", "CreateTrainingJob", {"TrainingJobName": "j"}, FACTS)
    authorizer.authorize(alice, "sagemaker", "GetCallerIdentity", {}, FACTS)


def test_decisions_are_cached_until_a_policy_changes(ctx: Any, authorizer: Authorizer, alice: Principal) -> None:
    call(ctx, "PutUserPolicy", UserName="alice", PolicyName="p", PolicyDocument=doc(allow("sagemaker:*")))
    authorizer.authorize(alice, "sagemaker", "InvokeEndpoint", {"EndpointName": "ep"}, FACTS)
    cached = len(authorizer._current.decisions)
    authorizer.authorize(alice, "sagemaker", "InvokeEndpoint", {"EndpointName": "ep"}, FACTS)
    assert len(authorizer._current.decisions) == cached == 1
    before = authorizer.generation.current
    call(ctx, "PutUserPolicy", UserName="alice", PolicyName="p", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [deny("sagemaker:*")]}))
    assert authorizer.generation.current > before
    _denied(authorizer, alice, "InvokeEndpoint", EndpointName="ep")


def test_pass_role_carries_the_service_it_is_passed_to(ctx: Any, authorizer: Authorizer, alice: Principal) -> None:
    call(ctx, "PutUserPolicy", UserName="alice", PolicyName="p", PolicyDocument=doc(
        allow("sagemaker:*"),
        allow("iam:PassRole", Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}})))
    role = f"arn:aws:iam::{ACCOUNT}:role/Exec"
    authorizer.authorize(alice, "sagemaker", "CreateTrainingJob", {"TrainingJobName": "j", "RoleArn": role}, FACTS)


def test_an_action_without_resources_needs_a_star_resource(ctx: Any, authorizer: Authorizer,
                                                          alice: Principal) -> None:
    call(ctx, "PutUserPolicy", UserName="alice", PolicyName="p", PolicyDocument=doc(
        allow("sagemaker:*", "arn:aws:sagemaker:*:*:flow-definition/*")))
    _denied(authorizer, alice, "ListTrainingJobs")
    call(ctx, "PutUserPolicy", UserName="alice", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sagemaker:*", "NotResource": "arn:aws:sagemaker:*:*:domain/*"}]}))
    authorizer.authorize(alice, "sagemaker", "ListTrainingJobs", {}, FACTS)

"""IAM groups over a real server: boto3 and the AWS CLI, with AWS's errors on the wire."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sagestack.testing.server_process import ServerProcess


def _unique(prefix: str) -> str:
    # The server is shared by the tests of a worker: every test names its own entities.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    err = excinfo.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"], err["Error"].get("Message", "")


def _document(*actions: str, effect: str = "Allow") -> str:
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": effect, "Action": list(actions), "Resource": "*"}]}
    )


def test_group_lifecycle(server: ServerProcess) -> None:
    iam = server.client("iam")
    group, user = _unique("devs"), _unique("lee")
    created = iam.create_group(GroupName=group, Path="/eng/")["Group"]
    assert created["GroupId"].startswith("AGPA") and created["Arn"].endswith(f":group/eng/{group}")
    with pytest.raises(ClientError) as info:
        iam.create_group(GroupName=group.upper())
    assert _error(info) == (409, "EntityAlreadyExists", f"Group with name {group.upper()} already exists.")

    iam.create_user(UserName=user)
    iam.add_user_to_group(GroupName=group, UserName=user)
    got = iam.get_group(GroupName=group)
    assert got["Group"]["GroupId"] == created["GroupId"]
    assert [u["UserName"] for u in got["Users"]] == [user]
    assert [g["GroupName"] for g in iam.list_groups_for_user(UserName=user)["Groups"]] == [group]
    assert group in [g["GroupName"] for g in iam.list_groups(PathPrefix="/eng/")["Groups"]]

    with pytest.raises(ClientError) as info:
        iam.delete_user(UserName=user)
    assert _error(info) == (409, "DeleteConflict", "Cannot delete entity, must remove users from group first.")
    with pytest.raises(ClientError) as info:
        iam.delete_group(GroupName=group)
    assert _error(info) == (409, "DeleteConflict", "Cannot delete entity, must remove users from group first.")

    renamed = _unique("devs2")
    iam.update_group(GroupName=group, NewGroupName=renamed, NewPath="/ops/")
    got = iam.get_group(GroupName=renamed)
    assert got["Group"]["Arn"].endswith(f":group/ops/{renamed}") and got["Users"][0]["UserName"] == user
    with pytest.raises(ClientError) as info:
        iam.get_group(GroupName=group)
    assert _error(info) == (404, "NoSuchEntity", f"The group with name {group} cannot be found.")

    iam.remove_user_from_group(GroupName=renamed, UserName=user)
    iam.delete_user(UserName=user)
    iam.delete_group(GroupName=renamed)
    assert renamed not in [g["GroupName"] for g in iam.list_groups()["Groups"]]


def test_get_group_paginator(server: ServerProcess) -> None:
    iam = server.client("iam")
    group = _unique("many")
    iam.create_group(GroupName=group)
    users = sorted(_unique(f"u{i}") for i in range(5))
    for user in users:
        iam.create_user(UserName=user)
        iam.add_user_to_group(GroupName=group, UserName=user)
    pages = list(iam.get_paginator("get_group").paginate(GroupName=group, PaginationConfig={"PageSize": 2}))
    assert [len(p["Users"]) for p in pages] == [2, 2, 1]
    assert [u["UserName"] for p in pages for u in p["Users"]] == users


def test_group_policies_reach_members(server: ServerProcess) -> None:
    iam = server.client("iam")
    group, user = _unique("readers"), _unique("ann")
    iam.create_group(GroupName=group)
    iam.create_user(UserName=user)
    iam.add_user_to_group(GroupName=group, UserName=user)
    iam.put_group_policy(GroupName=group, PolicyName="read", PolicyDocument=_document("s3:Get*"))
    assert iam.list_group_policies(GroupName=group)["PolicyNames"] == ["read"]
    got = iam.get_group_policy(GroupName=group, PolicyName="read")  # botocore decodes the document
    assert got["PolicyDocument"]["Statement"][0]["Action"] == ["s3:Get*"]
    policy = iam.create_policy(PolicyName=_unique("nodelete"), PolicyDocument=_document("s3:Delete*", effect="Deny"))
    arn = policy["Policy"]["Arn"]
    iam.attach_group_policy(GroupName=group, PolicyArn=arn)
    assert iam.list_attached_group_policies(GroupName=group)["AttachedPolicies"][0]["PolicyArn"] == arn

    user_arn = iam.get_user(UserName=user)["User"]["Arn"]
    results = iam.simulate_principal_policy(
        PolicySourceArn=user_arn, ActionNames=["s3:GetObject", "s3:DeleteObject", "s3:PutObject"]
    )["EvaluationResults"]
    assert [r["EvalDecision"] for r in results] == ["allowed", "explicitDeny", "implicitDeny"]
    assert results[0]["MatchedStatements"][0]["SourcePolicyType"] == "group"
    group_arn = iam.get_group(GroupName=group)["Group"]["Arn"]
    on_group = iam.simulate_principal_policy(PolicySourceArn=group_arn, ActionNames=["s3:GetObject"])
    assert on_group["EvaluationResults"][0]["EvalDecision"] == "allowed"

    entities = iam.list_entities_for_policy(PolicyArn=arn)
    assert [g["GroupName"] for g in entities["PolicyGroups"]] == [group]
    assert entities["PolicyUsers"] == [] and entities["PolicyRoles"] == []
    with pytest.raises(ClientError) as info:
        iam.delete_policy(PolicyArn=arn)
    assert _error(info) == (409, "DeleteConflict", "Cannot delete a policy attached to entities.")
    with pytest.raises(ClientError) as info:
        iam.delete_group(GroupName=group)
    assert _error(info)[1] == "DeleteConflict"
    with pytest.raises(ClientError) as info:
        iam.get_group_policy(GroupName=group, PolicyName="none")
    assert _error(info) == (404, "NoSuchEntity", "The group policy with name none cannot be found.")

    iam.detach_group_policy(GroupName=group, PolicyArn=arn)
    iam.delete_policy(PolicyArn=arn)
    iam.delete_group_policy(GroupName=group, PolicyName="read")
    iam.remove_user_from_group(GroupName=group, UserName=user)
    iam.delete_group(GroupName=group)


def test_bad_group_input_is_refused_on_the_wire(server: ServerProcess) -> None:
    iam = server.client("iam")
    with pytest.raises(ClientError) as info:
        iam.create_group(GroupName="bad name")
    status, code, _ = _error(info)
    assert (status, code) == (400, "ValidationError")
    with pytest.raises(ClientError) as info:
        iam.add_user_to_group(GroupName=_unique("none"), UserName="admin")
    assert _error(info)[:2] == (404, "NoSuchEntity")


def _aws(server: ServerProcess, *args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "awscli", "iam", *args, "--output", "json"],
        env=server.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout) if result.stdout.strip() else None


def test_aws_cli_create_group(server: ServerProcess) -> None:
    group = _unique("cli")
    created = _aws(server, "create-group", "--group-name", group, "--path", "/cli/")
    assert created["Group"]["GroupName"] == group and created["Group"]["GroupId"].startswith("AGPA")
    assert server.client("iam").get_group(GroupName=group)["Group"]["Path"] == "/cli/"
    server.client("iam").delete_group(GroupName=group)

"""IAM handlers called directly on a temporary SQLite database (simulation and the policy engine: test_iam_simulate)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest

import sagestack.services.iam  # noqa: F401  (registers the handlers)
from sagestack.authz.policy import (
    parse_policy,
)
from sagestack.db.base import Database
from sagestack.db.models.identity import Installation, SessionCredential
from sagestack.db.models.tags import ResourceTag
from sagestack.identity import CredentialStore
from sagestack.services import RequestContext
from sagestack.services.iam import (
    BUILTIN_POLICIES,
    role_by_arn,
    seed_managed_policies,
)
from sagestack.services.iam import managed as managed_module
from tests.unit.iam.support import (
    ACCOUNT,
    ASSUMED,
    TRUST,
    allow,
    call,
    decode,
    doc,
    fails,
    make_ctx,
    make_policy,
    make_role,
    s3_arn,
)

# --------------------------------------------------------------------------- users


def test_create_and_get_user(ctx: RequestContext) -> None:
    user = call(ctx, "CreateUser", UserName="alice", Path="/team/", Tags=[{"Key": "k", "Value": "v"}])["User"]
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/team/alice"
    assert re.fullmatch(r"AIDA[A-Z0-9]{17}", user["UserId"])
    assert user["Tags"] == [{"Key": "k", "Value": "v"}]
    got = call(ctx, "GetUser", UserName="ALICE")["User"]  # names match case-insensitively
    assert got["UserName"] == "alice" and got["UserId"] == user["UserId"]
    assert got["CreateDate"].tzinfo is not None


def test_create_user_errors(ctx: RequestContext) -> None:
    call(ctx, "CreateUser", UserName="bob")
    err = fails(ctx, "CreateUser", "EntityAlreadyExists", 409, UserName="Bob")
    assert err.message == "User with name Bob already exists."
    fails(ctx, "CreateUser", "ValidationError", 400, UserName="bad name!")
    fails(ctx, "CreateUser", "ValidationError", 400, UserName="x" * 65)
    fails(ctx, "CreateUser", "ValidationError", 400, UserName="p", Path="no-slash")
    err = fails(ctx, "GetUser", "NoSuchEntity", 404, UserName="nobody")
    assert err.message == "The user with name nobody cannot be found."


def test_get_user_defaults_to_caller(ctx: RequestContext, database: Database) -> None:
    assert call(ctx, "GetUser")["User"]["UserName"] == "admin"
    err = fails(make_ctx(database, ASSUMED), "GetUser", "ValidationError", 400)
    assert "non-User credentials" in err.message


def test_list_users_paths_and_pages(ctx: RequestContext) -> None:
    for name, path in (("u1", "/a/"), ("u2", "/a/"), ("u3", "/b/"), ("u4", "/a/x/")):
        call(ctx, "CreateUser", UserName=name, Path=path)
    names = [u["UserName"] for u in call(ctx, "ListUsers", PathPrefix="/a/")["Users"]]
    assert names == ["u1", "u2", "u4"]
    seen, marker = [], None
    while True:
        params: dict[str, Any] = {"MaxItems": 2}
        if marker:
            params["Marker"] = marker
        page = call(ctx, "ListUsers", **params)
        seen += [u["UserName"] for u in page["Users"]]
        if not page["IsTruncated"]:
            assert "Marker" not in page
            break
        marker = page["Marker"]
    assert seen == ["admin", "u1", "u2", "u3", "u4"]
    fails(ctx, "ListUsers", "ValidationError", 400, Marker="%%%")


def test_update_user_renames_everything(ctx: RequestContext, seeded: Database) -> None:
    call(ctx, "CreateUser", UserName="carol", Tags=[{"Key": "team", "Value": "ml"}])
    key = call(ctx, "CreateAccessKey", UserName="carol")["AccessKey"]
    call(ctx, "PutUserPolicy", UserName="carol", PolicyName="p", PolicyDocument=doc(allow("s3:*")))
    call(ctx, "AttachUserPolicy", UserName="carol", PolicyArn=s3_arn("AmazonS3ReadOnlyAccess"))
    call(ctx, "UpdateUser", UserName="carol", NewUserName="carla", NewPath="/ops/")
    fails(ctx, "GetUser", "NoSuchEntity", 404, UserName="carol")
    user = call(ctx, "GetUser", UserName="carla")["User"]
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/ops/carla"
    assert user["Tags"] == [{"Key": "team", "Value": "ml"}]
    keys = call(ctx, "ListAccessKeys", UserName="carla")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [key["AccessKeyId"]]
    assert call(ctx, "ListUserPolicies", UserName="carla")["PolicyNames"] == ["p"]
    attached = call(ctx, "ListAttachedUserPolicies", UserName="carla")["AttachedPolicies"]
    assert [a["PolicyName"] for a in attached] == ["AmazonS3ReadOnlyAccess"]
    call(ctx, "CreateUser", UserName="dave")
    fails(ctx, "UpdateUser", "EntityAlreadyExists", 409, UserName="carla", NewUserName="DAVE")
    fails(ctx, "UpdateUser", "NoSuchEntity", 404, UserName="ghost", NewPath="/x/")


def test_delete_user_conflicts(ctx: RequestContext, seeded: Database) -> None:
    call(ctx, "CreateUser", UserName="erin", Tags=[{"Key": "a", "Value": "b"}])
    key = call(ctx, "CreateAccessKey", UserName="erin")["AccessKey"]["AccessKeyId"]
    err = fails(ctx, "DeleteUser", "DeleteConflict", 409, UserName="erin")
    assert err.message == "Cannot delete entity, must delete access keys first."
    call(ctx, "DeleteAccessKey", UserName="erin", AccessKeyId=key)
    call(ctx, "PutUserPolicy", UserName="erin", PolicyName="p", PolicyDocument=doc(allow("s3:*")))
    err = fails(ctx, "DeleteUser", "DeleteConflict", 409, UserName="erin")
    assert err.message == "Cannot delete entity, must delete policies first."
    call(ctx, "DeleteUserPolicy", UserName="erin", PolicyName="p")
    call(ctx, "AttachUserPolicy", UserName="erin", PolicyArn=s3_arn("AmazonS3FullAccess"))
    err = fails(ctx, "DeleteUser", "DeleteConflict", 409, UserName="erin")
    assert err.message == "Cannot delete entity, must detach all policies first."
    call(ctx, "DetachUserPolicy", UserName="erin", PolicyArn=s3_arn("AmazonS3FullAccess"))
    call(ctx, "DeleteUser", UserName="erin")
    fails(ctx, "DeleteUser", "NoSuchEntity", 404, UserName="erin")
    with seeded.session() as session:
        assert session.query(ResourceTag).count() == 0
    fails(ctx, "DeleteUser", "DeleteConflict", 409, UserName="admin")


def test_user_tags(ctx: RequestContext) -> None:
    call(ctx, "CreateUser", UserName="frank")
    call(ctx, "TagUser", UserName="frank", Tags=[{"Key": "Env", "Value": "dev"}, {"Key": "b", "Value": ""}])
    call(ctx, "TagUser", UserName="frank", Tags=[{"Key": "env", "Value": "prod"}])  # keys ignore case
    assert call(ctx, "ListUserTags", UserName="frank")["Tags"] == [
        {"Key": "env", "Value": "prod"},
        {"Key": "b", "Value": ""},
    ]
    page = call(ctx, "ListUserTags", UserName="frank", MaxItems=1)
    assert page["IsTruncated"] and len(page["Tags"]) == 1
    rest = call(ctx, "ListUserTags", UserName="frank", Marker=page["Marker"])
    assert rest["Tags"] == [{"Key": "b", "Value": ""}]
    call(ctx, "UntagUser", UserName="frank", TagKeys=["ENV", "missing"])
    assert call(ctx, "ListUserTags", UserName="frank")["Tags"] == [{"Key": "b", "Value": ""}]
    dup = [{"Key": "x", "Value": "1"}, {"Key": "X", "Value": "2"}]
    fails(ctx, "TagUser", "InvalidInput", 400, UserName="frank", Tags=dup)
    fails(ctx, "TagUser", "InvalidInput", 400, UserName="frank", Tags=[{"Key": "aws:x", "Value": "1"}])
    many = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    fails(ctx, "TagUser", "LimitExceeded", 409, UserName="frank", Tags=many)
    fails(ctx, "TagUser", "NoSuchEntity", 404, UserName="ghost", Tags=[{"Key": "a", "Value": "b"}])
    fails(ctx, "ListUserTags", "NoSuchEntity", 404, UserName="ghost")
    fails(ctx, "UntagUser", "NoSuchEntity", 404, UserName="ghost", TagKeys=["a"])


def test_user_permissions_boundary(ctx: RequestContext, seeded: Database) -> None:
    call(ctx, "CreateUser", UserName="gina", PermissionsBoundary=s3_arn("AmazonS3ReadOnlyAccess"))
    user = call(ctx, "GetUser", UserName="gina")["User"]
    assert user["PermissionsBoundary"]["PermissionsBoundaryArn"] == s3_arn("AmazonS3ReadOnlyAccess")
    call(ctx, "DeleteUserPermissionsBoundary", UserName="gina")
    assert "PermissionsBoundary" not in call(ctx, "GetUser", UserName="gina")["User"]
    call(ctx, "PutUserPermissionsBoundary", UserName="gina", PermissionsBoundary=s3_arn("AmazonS3FullAccess"))
    missing = f"arn:aws:iam::{ACCOUNT}:policy/Nope"
    err = fails(
        ctx, "PutUserPermissionsBoundary", "NoSuchEntity", 404, UserName="gina", PermissionsBoundary=missing
    )
    assert missing in err.message
    fails(ctx, "CreateUser", "NoSuchEntity", 404, UserName="h", PermissionsBoundary=missing)


# --------------------------------------------------------------------------- access keys


def test_access_key_lifecycle(ctx: RequestContext) -> None:
    call(ctx, "CreateUser", UserName="kim")
    first = call(ctx, "CreateAccessKey", UserName="kim")["AccessKey"]
    assert re.fullmatch(r"AKIA[A-Z0-9]{16}", first["AccessKeyId"])
    assert len(first["SecretAccessKey"]) == 40 and first["Status"] == "Active"
    second = call(ctx, "CreateAccessKey", UserName="kim")["AccessKey"]
    err = fails(ctx, "CreateAccessKey", "LimitExceeded", 409, UserName="kim")
    assert err.message == "Cannot exceed quota for AccessKeysPerUser: 2"
    listed = call(ctx, "ListAccessKeys", UserName="kim")["AccessKeyMetadata"]
    assert {k["AccessKeyId"] for k in listed} == {first["AccessKeyId"], second["AccessKeyId"]}
    assert all("SecretAccessKey" not in k for k in listed)
    call(ctx, "UpdateAccessKey", UserName="kim", AccessKeyId=first["AccessKeyId"], Status="Inactive")
    statuses = {
        k["AccessKeyId"]: k["Status"]
        for k in call(ctx, "ListAccessKeys", UserName="kim")["AccessKeyMetadata"]
    }
    assert statuses[first["AccessKeyId"]] == "Inactive"
    # An inactive key still counts against the quota.
    fails(ctx, "CreateAccessKey", "LimitExceeded", 409, UserName="kim")
    fails(
        ctx,
        "UpdateAccessKey",
        "ValidationError",
        400,
        UserName="kim",
        AccessKeyId=first["AccessKeyId"],
        Status="Expired",
    )
    call(ctx, "DeleteAccessKey", UserName="kim", AccessKeyId=first["AccessKeyId"])
    err = fails(ctx, "DeleteAccessKey", "NoSuchEntity", 404, UserName="kim", AccessKeyId=first["AccessKeyId"])
    assert err.message == f"The Access Key with id {first['AccessKeyId']} cannot be found."
    # A key is only reachable through its own user.
    fails(
        ctx,
        "UpdateAccessKey",
        "NoSuchEntity",
        404,
        UserName="admin",
        AccessKeyId=second["AccessKeyId"],
        Status="Inactive",
    )
    fails(ctx, "CreateAccessKey", "NoSuchEntity", 404, UserName="ghost")
    fails(ctx, "ListAccessKeys", "NoSuchEntity", 404, UserName="ghost")


def test_access_keys_default_to_caller(ctx: RequestContext, database: Database) -> None:
    key = call(ctx, "CreateAccessKey")["AccessKey"]
    assert key["UserName"] == "admin"
    assert [k["AccessKeyId"] for k in call(ctx, "ListAccessKeys")["AccessKeyMetadata"]] == [
        key["AccessKeyId"]
    ]
    fails(make_ctx(database, ASSUMED), "CreateAccessKey", "ValidationError", 400)


def test_access_key_last_used(ctx: RequestContext, database: Database) -> None:
    key = call(ctx, "CreateAccessKey")["AccessKey"]["AccessKeyId"]
    never = call(ctx, "GetAccessKeyLastUsed", AccessKeyId=key)
    assert never == {"UserName": "admin", "AccessKeyLastUsed": {"ServiceName": "N/A", "Region": "N/A"}}
    store = CredentialStore(database, ACCOUNT)
    store.note_use(key, "sagemaker", "us-east-1")
    store.flush_uses()
    used = call(ctx, "GetAccessKeyLastUsed", AccessKeyId=key)["AccessKeyLastUsed"]
    assert used["ServiceName"] == "sagemaker" and used["Region"] == "us-east-1"
    assert (datetime.now(UTC) - used["LastUsedDate"]).total_seconds() < 60
    fails(ctx, "GetAccessKeyLastUsed", "AccessDenied", 403, AccessKeyId="AKIAAAAAAAAAAAAAAAAA")


# --------------------------------------------------------------------------- roles


def test_create_and_get_role(ctx: RequestContext) -> None:
    role = make_role(
        ctx,
        "SageMakerExec",
        Path="/service-role/",
        Description="runs jobs",
        MaxSessionDuration=7200,
        Tags=[{"Key": "team", "Value": "ml"}],
    )
    assert role["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/service-role/SageMakerExec"
    assert re.fullmatch(r"AROA[A-Z0-9]{17}", role["RoleId"])
    assert role["Tags"] == [{"Key": "team", "Value": "ml"}]
    got = call(ctx, "GetRole", RoleName="SageMakerExec")["Role"]
    # The trust policy travels URL-encoded, exactly as submitted.
    assert "%22" in got["AssumeRolePolicyDocument"]
    assert unquote(got["AssumeRolePolicyDocument"]) == TRUST
    assert got["Description"] == "runs jobs" and got["MaxSessionDuration"] == 7200
    assert got["RoleLastUsed"] == {}
    assert got["Tags"] == [{"Key": "team", "Value": "ml"}]


def test_create_role_errors(ctx: RequestContext) -> None:
    make_role(ctx, "Exec")
    err = fails(
        ctx, "CreateRole", "EntityAlreadyExists", 409, RoleName="exec", AssumeRolePolicyDocument=TRUST
    )
    assert err.message == "Role with name exec already exists."
    err = fails(ctx, "GetRole", "NoSuchEntity", 404, RoleName="Missing")
    assert err.message == "The role with name Missing cannot be found."
    for bad in (100, 50000):
        err = fails(
            ctx,
            "CreateRole",
            "ValidationError",
            400,
            RoleName="R",
            AssumeRolePolicyDocument=TRUST,
            MaxSessionDuration=bad,
        )
        assert "maxSessionDuration" in err.message
    bad_docs = {
        "{not json": "This policy contains invalid Json",
        doc({"Effect": "Allow", "Action": "sts:AssumeRole"}): "Missing required field Principal",
        doc({"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole", "Resource": "*"}): (
            "Has prohibited field Resource"
        ),
        doc({"Effect": "Maybe", "Principal": "*", "Action": "sts:AssumeRole"}): "Syntax errors in policy.",
    }
    for document, message in bad_docs.items():
        err = fails(
            ctx,
            "CreateRole",
            "MalformedPolicyDocument",
            400,
            RoleName="R2",
            AssumeRolePolicyDocument=document,
        )
        assert err.message == message
    big = doc(
        *[
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/r{i:04d}"},
                "Action": "sts:AssumeRole",
            }
            for i in range(40)
        ]
    )
    fails(ctx, "CreateRole", "LimitExceeded", 409, RoleName="R3", AssumeRolePolicyDocument=big)


def test_list_roles(ctx: RequestContext) -> None:
    make_role(ctx, "b-role")
    make_role(ctx, "a-role", Path="/service-role/")
    make_role(ctx, "C-role", Tags=[{"Key": "x", "Value": "y"}])
    roles = call(ctx, "ListRoles")["Roles"]
    assert [r["RoleName"] for r in roles] == ["a-role", "b-role", "C-role"]
    assert all("Tags" not in r and "AssumeRolePolicyDocument" in r for r in roles)
    assert [r["RoleName"] for r in call(ctx, "ListRoles", PathPrefix="/service-role/")["Roles"]] == ["a-role"]
    first = call(ctx, "ListRoles", MaxItems=2)
    assert first["IsTruncated"] and len(first["Roles"]) == 2
    second = call(ctx, "ListRoles", MaxItems=2, Marker=first["Marker"])
    assert [r["RoleName"] for r in second["Roles"]] == ["C-role"] and not second["IsTruncated"]


def test_update_role(ctx: RequestContext) -> None:
    make_role(ctx)
    call(ctx, "UpdateRole", RoleName="Exec", Description="new", MaxSessionDuration=43200)
    role = call(ctx, "GetRole", RoleName="Exec")["Role"]
    assert role["Description"] == "new" and role["MaxSessionDuration"] == 43200
    fails(ctx, "UpdateRole", "ValidationError", 400, RoleName="Exec", MaxSessionDuration=43201)
    fails(ctx, "UpdateRole", "NoSuchEntity", 404, RoleName="Nope", Description="x")
    described = call(ctx, "UpdateRoleDescription", RoleName="Exec", Description="again")["Role"]
    assert described["Description"] == "again"
    trust2 = doc(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}
    )
    call(ctx, "UpdateAssumeRolePolicy", RoleName="Exec", PolicyDocument=trust2)
    assert unquote(call(ctx, "GetRole", RoleName="Exec")["Role"]["AssumeRolePolicyDocument"]) == trust2
    fails(ctx, "UpdateAssumeRolePolicy", "MalformedPolicyDocument", 400, RoleName="Exec", PolicyDocument="[]")
    fails(ctx, "UpdateAssumeRolePolicy", "NoSuchEntity", 404, RoleName="Nope", PolicyDocument=trust2)


def test_delete_role_conflicts(ctx: RequestContext, seeded: Database) -> None:
    make_role(ctx, Tags=[{"Key": "a", "Value": "b"}])
    call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=s3_arn("AmazonS3FullAccess"))
    err = fails(ctx, "DeleteRole", "DeleteConflict", 409, RoleName="Exec")
    assert err.message == "Cannot delete entity, must detach all policies first."
    call(ctx, "DetachRolePolicy", RoleName="Exec", PolicyArn=s3_arn("AmazonS3FullAccess"))
    call(ctx, "PutRolePolicy", RoleName="Exec", PolicyName="inline", PolicyDocument=doc(allow("s3:*")))
    err = fails(ctx, "DeleteRole", "DeleteConflict", 409, RoleName="Exec")
    assert err.message == "Cannot delete entity, must delete policies first."
    call(ctx, "DeleteRolePolicy", RoleName="Exec", PolicyName="inline")
    with seeded.transaction() as session:
        session.add(
            SessionCredential(
                access_key_id="ASIAAAAAAAAAAAAAAAAA",
                secret_access_key="s",
                session_token="t",
                role_name="Exec",
                session_name="s",
                expiration=datetime(2100, 1, 1, tzinfo=UTC),
            )
        )
    call(ctx, "DeleteRole", RoleName="Exec")
    fails(ctx, "GetRole", "NoSuchEntity", 404, RoleName="Exec")
    fails(ctx, "DeleteRole", "NoSuchEntity", 404, RoleName="Exec")
    with seeded.session() as session:
        assert session.query(SessionCredential).count() == 0
        assert session.query(ResourceTag).count() == 0


def test_role_tags(ctx: RequestContext) -> None:
    make_role(ctx)
    call(ctx, "TagRole", RoleName="Exec", Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    assert call(ctx, "ListRoleTags", RoleName="Exec")["Tags"] == [
        {"Key": "a", "Value": "1"},
        {"Key": "b", "Value": "2"},
    ]
    call(ctx, "UntagRole", RoleName="Exec", TagKeys=["a"])
    assert call(ctx, "ListRoleTags", RoleName="Exec") == {
        "Tags": [{"Key": "b", "Value": "2"}],
        "IsTruncated": False,
    }
    assert call(ctx, "GetRole", RoleName="Exec")["Role"]["Tags"] == [{"Key": "b", "Value": "2"}]
    fails(ctx, "TagRole", "NoSuchEntity", 404, RoleName="Nope", Tags=[{"Key": "a", "Value": "1"}])
    fails(
        ctx,
        "TagRole",
        "InvalidInput",
        400,
        RoleName="Exec",
        Tags=[{"Key": "a", "Value": "1"}, {"Key": "A", "Value": "2"}],
    )
    fails(ctx, "UntagRole", "NoSuchEntity", 404, RoleName="Nope", TagKeys=["a"])
    fails(ctx, "ListRoleTags", "NoSuchEntity", 404, RoleName="Nope")


def test_role_boundary_and_instance_profiles(ctx: RequestContext, seeded: Database) -> None:
    make_role(ctx, PermissionsBoundary=s3_arn("AmazonS3FullAccess"))
    got = call(ctx, "GetRole", RoleName="Exec")["Role"]
    assert got["PermissionsBoundary"] == {
        "PermissionsBoundaryType": "PermissionsBoundaryPolicy",
        "PermissionsBoundaryArn": s3_arn("AmazonS3FullAccess"),
    }
    policy = call(ctx, "GetPolicy", PolicyArn=s3_arn("AmazonS3FullAccess"))["Policy"]
    assert policy["PermissionsBoundaryUsageCount"] == 1
    fails(
        ctx,
        "PutRolePermissionsBoundary",
        "NoSuchEntity",
        404,
        RoleName="Exec",
        PermissionsBoundary=f"arn:aws:iam::{ACCOUNT}:policy/x",
    )
    call(ctx, "DeleteRolePermissionsBoundary", RoleName="Exec")
    assert "PermissionsBoundary" not in call(ctx, "GetRole", RoleName="Exec")["Role"]
    call(
        ctx,
        "PutRolePermissionsBoundary",
        RoleName="Exec",
        PermissionsBoundary=s3_arn("AmazonS3ReadOnlyAccess"),
    )
    assert call(ctx, "ListInstanceProfilesForRole", RoleName="Exec") == {
        "InstanceProfiles": [],
        "IsTruncated": False,
    }
    fails(ctx, "ListInstanceProfilesForRole", "NoSuchEntity", 404, RoleName="Nope")


def test_role_by_arn(ctx: RequestContext, database: Database) -> None:
    make_role(ctx, "Exec", Path="/service-role/")
    found = role_by_arn(database, f"arn:aws:iam::{ACCOUNT}:role/service-role/Exec")
    assert found is not None and found.name == "Exec"
    assert role_by_arn(database, f"arn:aws:iam::{ACCOUNT}:role/Exec") is None  # path differs
    assert role_by_arn(database, f"arn:aws:iam::{ACCOUNT}:user/service-role/Exec") is None
    assert role_by_arn(database, "not-an-arn") is None
    with database.transaction() as session:
        session.add(Installation(id=1, account_id=ACCOUNT))
    assert role_by_arn(database, f"arn:aws:iam::{ACCOUNT}:role/service-role/Exec") is not None
    assert role_by_arn(database, "arn:aws:iam::999999999999:role/service-role/Exec") is None


# --------------------------------------------------------------------------- managed policies


def test_create_and_get_policy(ctx: RequestContext) -> None:
    document = doc(allow("s3:GetObject", "arn:aws:s3:::data/*"))
    policy = make_policy(
        ctx, "ReadData", document, Path="/app/", Description="read", Tags=[{"Key": "a", "Value": "b"}]
    )
    assert policy["Arn"] == f"arn:aws:iam::{ACCOUNT}:policy/app/ReadData"
    assert re.fullmatch(r"ANPA[A-Z0-9]{17}", policy["PolicyId"])
    assert policy["DefaultVersionId"] == "v1" and policy["AttachmentCount"] == 0
    got = call(ctx, "GetPolicy", PolicyArn=policy["Arn"])["Policy"]
    assert got["Description"] == "read" and got["Tags"] == [{"Key": "a", "Value": "b"}]
    version = call(ctx, "GetPolicyVersion", PolicyArn=policy["Arn"], VersionId="v1")["PolicyVersion"]
    assert unquote(version["Document"]) == document and version["IsDefaultVersion"] is True
    err = fails(
        ctx, "CreatePolicy", "EntityAlreadyExists", 409, PolicyName="readdata", PolicyDocument=document
    )
    assert err.message == "A policy called readdata already exists. Duplicate names are not allowed."
    missing = f"arn:aws:iam::{ACCOUNT}:policy/Missing"
    err = fails(ctx, "GetPolicy", "NoSuchEntity", 404, PolicyArn=missing)
    assert err.message == f"Policy {missing} does not exist or is not attachable."
    fails(ctx, "GetPolicy", "InvalidInput", 400, PolicyArn="not-an-arn-at-all-really")
    fails(ctx, "CreatePolicy", "ValidationError", 400, PolicyName="p", PolicyDocument=document, Path="bad")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("nope", "This policy contains invalid Json"),
        (doc({"Effect": "Allow", "Action": "s3:*"}), "Policy statement must contain resources."),
        (doc({"Effect": "Allow", "Resource": "*"}), "Policy statement must contain actions."),
        (doc({**allow("s3:*"), "Principal": "*"}), "Policy document should not specify a principal."),
        (
            doc(allow("GetObject")),
            "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.",
        ),
        (doc(allow("s3:*", "bucket")), 'Resource bucket must be in ARN format or "*".'),
        (doc(allow("s3:*"), version="2020-01-01"), "The policy failed legacy parsing"),
        (
            doc({"Effect": "Allow", "Action": "s3:*", "NotAction": "s3:Get*", "Resource": "*"}),
            "Syntax errors in policy.",
        ),
        (
            doc({**allow("s3:*"), "Sid": "a"}, {**allow("s3:*"), "Sid": "a"}),
            "Statement IDs (SID) in a single policy must be unique.",
        ),
        (
            doc({**allow("s3:*"), "Condition": {"StringFoo": {"a:b": "c"}}}),
            "Invalid Condition type : StringFoo",
        ),
        (json.dumps({"Statement": []}), "Syntax errors in policy."),
    ],
)
def test_create_policy_rejects_malformed(ctx: RequestContext, document: str, message: str) -> None:
    err = fails(
        ctx, "CreatePolicy", "MalformedPolicyDocument", 400, PolicyName="bad", PolicyDocument=document
    )
    assert err.message == message


def test_policy_size_limit(ctx: RequestContext) -> None:
    document = doc(allow([f"s3:GetObject{i:04d}" for i in range(400)]))
    err = fails(ctx, "CreatePolicy", "LimitExceeded", 409, PolicyName="big", PolicyDocument=document)
    assert err.message == "Cannot exceed quota for PolicySize: 6144"


def test_list_policies_scopes(ctx: RequestContext, seeded: Database) -> None:
    local = make_policy(ctx, "Local1", doc(allow("s3:*")), Path="/app/")
    make_policy(ctx, "Local2", doc(allow("s3:*")))
    all_names = [p["PolicyName"] for p in call(ctx, "ListPolicies", MaxItems=1000)["Policies"]]
    assert {"Local1", "Local2", "AmazonS3FullAccess", "AmazonSageMakerFullAccess"} <= set(all_names)
    assert all_names == sorted(all_names, key=str.lower)
    locals_ = [p["PolicyName"] for p in call(ctx, "ListPolicies", Scope="Local")["Policies"]]
    assert locals_ == ["Local1", "Local2"]
    aws = [p["Arn"] for p in call(ctx, "ListPolicies", Scope="AWS")["Policies"]]
    assert all(a.startswith("arn:aws:iam::aws:policy/") for a in aws) and len(aws) == len(BUILTIN_POLICIES)
    assert [p["PolicyName"] for p in call(ctx, "ListPolicies", PathPrefix="/app/")["Policies"]] == ["Local1"]
    assert call(ctx, "ListPolicies", OnlyAttached=True)["Policies"] == []
    make_role(ctx)
    call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=local["Arn"])
    attached = call(ctx, "ListPolicies", OnlyAttached=True)["Policies"]
    assert [(p["PolicyName"], p["AttachmentCount"]) for p in attached] == [("Local1", 1)]
    pages, marker = [], None
    while True:
        page = call(ctx, "ListPolicies", MaxItems=3, **({"Marker": marker} if marker else {}))
        pages += [p["PolicyName"] for p in page["Policies"]]
        if not page["IsTruncated"]:
            break
        marker = page["Marker"]
    assert pages == all_names


def test_policy_versions(ctx: RequestContext) -> None:
    arn = make_policy(ctx, "Versioned", doc(allow("s3:GetObject")))["Arn"]
    v2 = call(ctx, "CreatePolicyVersion", PolicyArn=arn, PolicyDocument=doc(allow("s3:PutObject")))[
        "PolicyVersion"
    ]
    assert v2["VersionId"] == "v2" and v2["IsDefaultVersion"] is False
    assert call(ctx, "GetPolicy", PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v1"
    v3 = call(ctx, "CreatePolicyVersion", PolicyArn=arn, PolicyDocument=doc(allow("s3:*")), SetAsDefault=True)
    assert v3["PolicyVersion"]["IsDefaultVersion"] is True
    assert call(ctx, "GetPolicy", PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v3"
    versions = call(ctx, "ListPolicyVersions", PolicyArn=arn)["Versions"]
    assert [(v["VersionId"], v["IsDefaultVersion"]) for v in versions] == [
        ("v3", True),
        ("v2", False),
        ("v1", False),
    ]
    call(ctx, "CreatePolicyVersion", PolicyArn=arn, PolicyDocument=doc(allow("s3:List*")))
    call(ctx, "CreatePolicyVersion", PolicyArn=arn, PolicyDocument=doc(allow("s3:List*")))
    err = fails(
        ctx, "CreatePolicyVersion", "LimitExceeded", 409, PolicyArn=arn, PolicyDocument=doc(allow("s3:*"))
    )
    assert "up to 5 versions" in err.message
    err = fails(ctx, "DeletePolicyVersion", "DeleteConflict", 409, PolicyArn=arn, VersionId="v3")
    assert err.message == "Cannot delete the default version of a policy."
    call(ctx, "DeletePolicyVersion", PolicyArn=arn, VersionId="v1")
    fails(ctx, "GetPolicyVersion", "NoSuchEntity", 404, PolicyArn=arn, VersionId="v1")
    fails(ctx, "DeletePolicyVersion", "NoSuchEntity", 404, PolicyArn=arn, VersionId="v1")
    # Version ids are never reused.
    v6 = call(ctx, "CreatePolicyVersion", PolicyArn=arn, PolicyDocument=doc(allow("s3:*")))["PolicyVersion"]
    assert v6["VersionId"] == "v6"
    call(ctx, "SetDefaultPolicyVersion", PolicyArn=arn, VersionId="v2")
    default = call(ctx, "GetPolicyVersion", PolicyArn=arn, VersionId="v2")["PolicyVersion"]
    assert (
        default["IsDefaultVersion"]
        and decode(default["Document"])["Statement"][0]["Action"] == "s3:PutObject"
    )
    fails(ctx, "SetDefaultPolicyVersion", "NoSuchEntity", 404, PolicyArn=arn, VersionId="v9")
    fails(ctx, "CreatePolicyVersion", "MalformedPolicyDocument", 400, PolicyArn=arn, PolicyDocument="{}")
    err = fails(ctx, "DeletePolicy", "DeleteConflict", 409, PolicyArn=arn)
    assert "more than one version" in err.message
    page = call(ctx, "ListPolicyVersions", PolicyArn=arn, MaxItems=2)
    assert page["IsTruncated"] and len(page["Versions"]) == 2


def test_delete_policy(ctx: RequestContext, seeded: Database) -> None:
    arn = make_policy(ctx, "Temp", doc(allow("s3:*")), Tags=[{"Key": "a", "Value": "b"}])["Arn"]
    make_role(ctx)
    call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=arn)
    err = fails(ctx, "DeletePolicy", "DeleteConflict", 409, PolicyArn=arn)
    assert err.message == "Cannot delete a policy attached to entities."
    call(ctx, "DetachRolePolicy", RoleName="Exec", PolicyArn=arn)
    call(ctx, "DeletePolicy", PolicyArn=arn)
    fails(ctx, "GetPolicy", "NoSuchEntity", 404, PolicyArn=arn)
    fails(ctx, "DeletePolicy", "NoSuchEntity", 404, PolicyArn=arn)
    # AWS managed policies cannot be changed from the account.
    aws = s3_arn("AmazonS3FullAccess")
    fails(ctx, "DeletePolicy", "AccessDenied", 403, PolicyArn=aws)
    fails(ctx, "CreatePolicyVersion", "AccessDenied", 403, PolicyArn=aws, PolicyDocument=doc(allow("*")))
    fails(ctx, "TagPolicy", "AccessDenied", 403, PolicyArn=aws, Tags=[{"Key": "a", "Value": "b"}])


def test_policy_tags(ctx: RequestContext) -> None:
    arn = make_policy(ctx, "Tagged", doc(allow("s3:*")))["Arn"]
    call(ctx, "TagPolicy", PolicyArn=arn, Tags=[{"Key": "a", "Value": "1"}])
    assert call(ctx, "ListPolicyTags", PolicyArn=arn)["Tags"] == [{"Key": "a", "Value": "1"}]
    call(ctx, "UntagPolicy", PolicyArn=arn, TagKeys=["a"])
    assert call(ctx, "ListPolicyTags", PolicyArn=arn)["Tags"] == []
    fails(ctx, "ListPolicyTags", "NoSuchEntity", 404, PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/none")


# --------------------------------------------------------------------------- attachments


def test_role_attachments(ctx: RequestContext, seeded: Database) -> None:
    make_role(ctx)
    arn = s3_arn("AmazonS3ReadOnlyAccess")
    call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=arn)
    call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=arn)  # a second attach changes nothing
    call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=s3_arn("AmazonSageMakerFullAccess"))
    assert call(ctx, "GetPolicy", PolicyArn=arn)["Policy"]["AttachmentCount"] == 1
    attached = call(ctx, "ListAttachedRolePolicies", RoleName="Exec")
    assert attached["AttachedPolicies"] == [
        {"PolicyName": "AmazonS3ReadOnlyAccess", "PolicyArn": arn},
        {"PolicyName": "AmazonSageMakerFullAccess", "PolicyArn": s3_arn("AmazonSageMakerFullAccess")},
    ]
    assert not attached["IsTruncated"]
    missing = f"arn:aws:iam::{ACCOUNT}:policy/Missing"
    err = fails(ctx, "AttachRolePolicy", "NoSuchEntity", 404, RoleName="Exec", PolicyArn=missing)
    assert err.message == f"Policy {missing} does not exist or is not attachable."
    fails(ctx, "AttachRolePolicy", "NoSuchEntity", 404, RoleName="Nope", PolicyArn=arn)
    call(ctx, "DetachRolePolicy", RoleName="Exec", PolicyArn=arn)
    assert call(ctx, "GetPolicy", PolicyArn=arn)["Policy"]["AttachmentCount"] == 0
    err = fails(ctx, "DetachRolePolicy", "NoSuchEntity", 404, RoleName="Exec", PolicyArn=arn)
    assert err.message == f"Policy {arn} was not found."
    fails(ctx, "ListAttachedRolePolicies", "NoSuchEntity", 404, RoleName="Nope")
    entities = call(ctx, "ListEntitiesForPolicy", PolicyArn=s3_arn("AmazonSageMakerFullAccess"))
    assert [r["RoleName"] for r in entities["PolicyRoles"]] == ["Exec"] and entities["PolicyUsers"] == []


def test_attachment_quota(ctx: RequestContext) -> None:
    make_role(ctx)
    for i in range(10):
        arn = make_policy(ctx, f"P{i}", doc(allow("s3:*")))["Arn"]
        call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=arn)
    extra = make_policy(ctx, "P10", doc(allow("s3:*")))["Arn"]
    err = fails(ctx, "AttachRolePolicy", "LimitExceeded", 409, RoleName="Exec", PolicyArn=extra)
    assert err.message == "Cannot exceed quota for PoliciesPerRole: 10"
    page = call(ctx, "ListAttachedRolePolicies", RoleName="Exec", MaxItems=4)
    assert page["IsTruncated"] and len(page["AttachedPolicies"]) == 4


def test_user_attachments(ctx: RequestContext, seeded: Database) -> None:
    call(ctx, "CreateUser", UserName="ivy", Path="/eng/")
    arn = s3_arn("AmazonS3FullAccess")
    call(ctx, "AttachUserPolicy", UserName="ivy", PolicyArn=arn)
    listed = call(ctx, "ListAttachedUserPolicies", UserName="ivy")["AttachedPolicies"]
    assert listed == [{"PolicyName": "AmazonS3FullAccess", "PolicyArn": arn}]
    assert (
        call(ctx, "ListAttachedUserPolicies", UserName="ivy", PathPrefix="/other/")["AttachedPolicies"] == []
    )
    entities = call(ctx, "ListEntitiesForPolicy", PolicyArn=arn, EntityFilter="User", PathPrefix="/eng/")
    assert entities["PolicyUsers"][0]["UserName"] == "ivy"
    fails(
        ctx,
        "AttachUserPolicy",
        "NoSuchEntity",
        404,
        UserName="ivy",
        PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/x",
    )
    fails(ctx, "AttachUserPolicy", "NoSuchEntity", 404, UserName="ghost", PolicyArn=arn)
    call(ctx, "DetachUserPolicy", UserName="ivy", PolicyArn=arn)
    fails(ctx, "DetachUserPolicy", "NoSuchEntity", 404, UserName="ivy", PolicyArn=arn)
    fails(ctx, "ListAttachedUserPolicies", "NoSuchEntity", 404, UserName="ghost")


def test_role_inline_policies(ctx: RequestContext) -> None:
    make_role(ctx)
    first = doc(allow("s3:GetObject"))
    call(ctx, "PutRolePolicy", RoleName="Exec", PolicyName="zeta", PolicyDocument=first)
    call(ctx, "PutRolePolicy", RoleName="Exec", PolicyName="alpha", PolicyDocument=first)
    second = doc(allow("s3:PutObject"))
    call(ctx, "PutRolePolicy", RoleName="Exec", PolicyName="zeta", PolicyDocument=second)  # replaces
    got = call(ctx, "GetRolePolicy", RoleName="Exec", PolicyName="zeta")
    assert got["RoleName"] == "Exec" and got["PolicyName"] == "zeta"
    assert unquote(got["PolicyDocument"]) == second
    assert call(ctx, "ListRolePolicies", RoleName="Exec")["PolicyNames"] == ["alpha", "zeta"]
    page = call(ctx, "ListRolePolicies", RoleName="Exec", MaxItems=1)
    assert page["PolicyNames"] == ["alpha"] and page["IsTruncated"]
    call(ctx, "DeleteRolePolicy", RoleName="Exec", PolicyName="alpha")
    err = fails(ctx, "GetRolePolicy", "NoSuchEntity", 404, RoleName="Exec", PolicyName="alpha")
    assert err.message == "The role policy with name alpha cannot be found."
    fails(ctx, "DeleteRolePolicy", "NoSuchEntity", 404, RoleName="Exec", PolicyName="alpha")
    fails(
        ctx,
        "PutRolePolicy",
        "MalformedPolicyDocument",
        400,
        RoleName="Exec",
        PolicyName="x",
        PolicyDocument="{",
    )
    fails(ctx, "PutRolePolicy", "NoSuchEntity", 404, RoleName="Nope", PolicyName="x", PolicyDocument=first)
    fails(ctx, "ListRolePolicies", "NoSuchEntity", 404, RoleName="Nope")
    big = doc(allow([f"s3:GetObject{i:04d}" for i in range(600)]))
    err = fails(
        ctx, "PutRolePolicy", "LimitExceeded", 409, RoleName="Exec", PolicyName="big", PolicyDocument=big
    )
    assert err.message == "Maximum policy size of 10240 bytes exceeded for role Exec"


def test_user_inline_policies(ctx: RequestContext) -> None:
    call(ctx, "CreateUser", UserName="jo")
    document = doc(allow("sagemaker:*"))
    call(ctx, "PutUserPolicy", UserName="jo", PolicyName="sm", PolicyDocument=document)
    got = call(ctx, "GetUserPolicy", UserName="jo", PolicyName="sm")
    assert got["UserName"] == "jo" and decode(got["PolicyDocument"]) == json.loads(document)
    assert call(ctx, "ListUserPolicies", UserName="jo")["PolicyNames"] == ["sm"]
    call(ctx, "DeleteUserPolicy", UserName="jo", PolicyName="sm")
    err = fails(ctx, "GetUserPolicy", "NoSuchEntity", 404, UserName="jo", PolicyName="sm")
    assert err.message == "The user policy with name sm cannot be found."
    fails(ctx, "DeleteUserPolicy", "NoSuchEntity", 404, UserName="jo", PolicyName="sm")
    fails(
        ctx,
        "PutUserPolicy",
        "MalformedPolicyDocument",
        400,
        UserName="jo",
        PolicyName="x",
        PolicyDocument=doc({"Effect": "Allow"}),
    )
    big = doc(allow([f"s3:GetObject{i:03d}" for i in range(150)]))
    fails(ctx, "PutUserPolicy", "LimitExceeded", 409, UserName="jo", PolicyName="big", PolicyDocument=big)
    fails(ctx, "ListUserPolicies", "NoSuchEntity", 404, UserName="ghost")


# --------------------------------------------------------------------------- seeding


def test_seed_is_idempotent(database: Database, ctx: RequestContext) -> None:
    seed_managed_policies(database)
    first = {p["Arn"]: p["PolicyId"] for p in call(ctx, "ListPolicies", Scope="AWS")["Policies"]}
    seed_managed_policies(database)
    second = {p["Arn"]: p["PolicyId"] for p in call(ctx, "ListPolicies", Scope="AWS")["Policies"]}
    assert first == second
    for name in (
        "AmazonS3FullAccess",
        "AmazonS3ReadOnlyAccess",
        "AmazonSageMakerFullAccess",
        "CloudWatchLogsFullAccess",
    ):
        policy = call(ctx, "GetPolicy", PolicyArn=s3_arn(name))["Policy"]
        assert policy["Path"] == "/" and re.fullmatch(r"ANPA[A-Z0-9]{17}", policy["PolicyId"])
        version_id = next(b.version_id for b in BUILTIN_POLICIES if b.arn == policy["Arn"])
        assert policy["DefaultVersionId"] == version_id  # AWS's version id, e.g. v2, not v1
        version = call(ctx, "GetPolicyVersion", PolicyArn=policy["Arn"], VersionId=version_id)["PolicyVersion"]
        parse_policy(unquote(version["Document"]))


def test_seed_updates_changed_documents(database: Database, ctx: RequestContext, monkeypatch: Any) -> None:
    seed_managed_policies(database)
    original = next(b for b in managed_module.BUILTIN_POLICIES if b.name == "AmazonS3FullAccess")
    number = original.version_number
    changed = managed_module.BuiltinPolicy(
        original.name, original.description, doc(allow("s3:*")), version_id=f"v{number + 1}"
    )
    monkeypatch.setattr(managed_module, "BUILTIN_POLICIES", (changed,))
    seed_managed_policies(database)
    policy = call(ctx, "GetPolicy", PolicyArn=changed.arn)["Policy"]
    assert policy["DefaultVersionId"] == f"v{number + 1}"
    for _ in range(6):  # older versions are pruned to stay within five
        monkeypatch.setattr(
            managed_module,
            "BUILTIN_POLICIES",
            (
                managed_module.BuiltinPolicy(
                    original.name, "d", doc(allow(f"s3:A{_}")), version_id=f"v{number + 2 + _}"
                ),
            ),
        )
        seed_managed_policies(database)
    assert len(call(ctx, "ListPolicyVersions", PolicyArn=changed.arn)["Versions"]) == 5

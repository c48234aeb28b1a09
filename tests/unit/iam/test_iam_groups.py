"""IAM groups: CRUD, memberships, group policies, what members inherit, and who uses a policy."""

from __future__ import annotations

import re
from typing import Any

from sagestack.db.base import Database
from sagestack.services import RequestContext
from sagestack.services.iam import principal_policies
from tests.unit.iam.support import ACCOUNT, allow, call, decode, deny, doc, fails, make_policy, make_role


def make_group(ctx: RequestContext, name: str = "devs", **params: Any) -> dict[str, Any]:
    return call(ctx, "CreateGroup", GroupName=name, **params)["Group"]


def all_pages(ctx: RequestContext, op: str, key: str, **params: Any) -> list[Any]:
    """Every item of a paged IAM list, two at a time."""
    seen: list[Any] = []
    marker = None
    while True:
        extra = {"Marker": marker} if marker else {}
        page = call(ctx, op, MaxItems=2, **params, **extra)
        assert len(page[key]) <= 2
        seen += page[key]
        if not page["IsTruncated"]:
            assert "Marker" not in page
            return seen
        marker = page["Marker"]


# --------------------------------------------------------------------------- groups


def test_create_and_get_group(ctx: RequestContext) -> None:
    group = make_group(ctx, "Devs", Path="/eng/")
    assert group["Arn"] == f"arn:aws:iam::{ACCOUNT}:group/eng/Devs"
    assert re.fullmatch(r"AGPA[A-Z0-9]{17}", group["GroupId"])
    assert group["Path"] == "/eng/" and group["CreateDate"].tzinfo is not None
    got = call(ctx, "GetGroup", GroupName="devs")  # names match case-insensitively
    assert got["Group"] == group and got["Users"] == [] and got["IsTruncated"] is False
    assert make_group(ctx, "g" * 128)["GroupName"] == "g" * 128  # groups take longer names than users


def test_create_group_errors(ctx: RequestContext) -> None:
    make_group(ctx, "ops")
    err = fails(ctx, "CreateGroup", "EntityAlreadyExists", 409, GroupName="OPS")
    assert err.message == "Group with name OPS already exists."
    fails(ctx, "CreateGroup", "ValidationError", 400, GroupName="bad name")
    fails(ctx, "CreateGroup", "ValidationError", 400, GroupName="g" * 129)
    fails(ctx, "CreateGroup", "ValidationError", 400, GroupName="x", Path="no-slash")
    err = fails(ctx, "GetGroup", "NoSuchEntity", 404, GroupName="nobody")
    assert err.message == "The group with name nobody cannot be found."


def test_list_groups_paths_and_pages(ctx: RequestContext) -> None:
    for name, path in (("g3", "/a/"), ("g1", "/a/"), ("G2", "/b/"), ("g4", "/a/x/"), ("g5", "/a/")):
        make_group(ctx, name, Path=path)
    names = [g["GroupName"] for g in call(ctx, "ListGroups", PathPrefix="/a/")["Groups"]]
    assert names == ["g1", "g3", "g4", "g5"]
    assert [g["GroupName"] for g in all_pages(ctx, "ListGroups", "Groups")] == ["g1", "G2", "g3", "g4", "g5"]
    fails(ctx, "ListGroups", "ValidationError", 400, Marker="not-a-marker")
    fails(ctx, "ListGroups", "ValidationError", 400, PathPrefix="a/")


def test_get_group_pages_its_users(ctx: RequestContext) -> None:
    make_group(ctx)
    boundary = make_policy(ctx, "Cap", doc(allow("s3:*")))["Arn"]
    for name in ("u3", "u1", "U2", "u5", "u4"):
        call(ctx, "CreateUser", UserName=name, Path="/team/", PermissionsBoundary=boundary)
        call(ctx, "AddUserToGroup", GroupName="devs", UserName=name)
    call(ctx, "CreateUser", UserName="outsider")
    users = all_pages(ctx, "GetGroup", "Users", GroupName="devs")
    assert [u["UserName"] for u in users] == ["u1", "U2", "u3", "u4", "u5"]
    assert users[0]["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/team/u1"
    assert all("PermissionsBoundary" not in u and "Tags" not in u for u in users)  # as ListUsers shows them
    page = call(ctx, "GetGroup", GroupName="devs", MaxItems=3)
    assert page["Group"]["GroupName"] == "devs" and page["IsTruncated"] and len(page["Users"]) == 3


def test_memberships(ctx: RequestContext) -> None:
    for group in ("b", "a", "c"):
        make_group(ctx, group)
    call(ctx, "CreateUser", UserName="lee")
    for group in ("b", "a", "c"):
        call(ctx, "AddUserToGroup", GroupName=group, UserName="LEE")
    call(ctx, "AddUserToGroup", GroupName="a", UserName="lee")  # a second add changes nothing
    assert [g["GroupName"] for g in all_pages(ctx, "ListGroupsForUser", "Groups", UserName="lee")] == [
        "a",
        "b",
        "c",
    ]
    listed = call(ctx, "ListGroupsForUser", UserName="lee")["Groups"][0]
    assert listed == call(ctx, "GetGroup", GroupName="a")["Group"]
    call(ctx, "RemoveUserFromGroup", GroupName="b", UserName="lee")
    call(ctx, "RemoveUserFromGroup", GroupName="b", UserName="lee")  # not a member: AWS says nothing
    assert [g["GroupName"] for g in call(ctx, "ListGroupsForUser", UserName="lee")["Groups"]] == ["a", "c"]
    assert [u["UserName"] for u in call(ctx, "GetGroup", GroupName="a")["Users"]] == ["lee"]
    assert call(ctx, "GetGroup", GroupName="b")["Users"] == []
    err = fails(ctx, "AddUserToGroup", "NoSuchEntity", 404, GroupName="zz", UserName="lee")
    assert err.message == "The group with name zz cannot be found."
    err = fails(ctx, "AddUserToGroup", "NoSuchEntity", 404, GroupName="a", UserName="ghost")
    assert err.message == "The user with name ghost cannot be found."
    fails(ctx, "RemoveUserFromGroup", "NoSuchEntity", 404, GroupName="zz", UserName="lee")
    fails(ctx, "RemoveUserFromGroup", "NoSuchEntity", 404, GroupName="a", UserName="ghost")
    err = fails(ctx, "ListGroupsForUser", "NoSuchEntity", 404, UserName="ghost")
    assert err.message == "The user with name ghost cannot be found."


def test_groups_per_user_quota(ctx: RequestContext) -> None:
    call(ctx, "CreateUser", UserName="busy")
    for i in range(10):
        make_group(ctx, f"g{i}")
        call(ctx, "AddUserToGroup", GroupName=f"g{i}", UserName="busy")
    make_group(ctx, "g10")
    err = fails(ctx, "AddUserToGroup", "LimitExceeded", 409, GroupName="g10", UserName="busy")
    assert err.message == "Cannot exceed quota for GroupsPerUser: 10"


def test_update_group_moves_members_and_policies(ctx: RequestContext) -> None:
    make_group(ctx, "old", Path="/a/")
    make_group(ctx, "taken")
    call(ctx, "CreateUser", UserName="kim")
    call(ctx, "AddUserToGroup", GroupName="old", UserName="kim")
    arn = make_policy(ctx, "Read", doc(allow("s3:Get*")))["Arn"]
    call(ctx, "AttachGroupPolicy", GroupName="old", PolicyArn=arn)
    call(ctx, "PutGroupPolicy", GroupName="old", PolicyName="inline", PolicyDocument=doc(allow("sqs:*")))
    err = fails(ctx, "UpdateGroup", "EntityAlreadyExists", 409, GroupName="old", NewGroupName="TAKEN")
    assert err.message == "Group with name TAKEN already exists."
    call(ctx, "UpdateGroup", GroupName="old", NewGroupName="new", NewPath="/b/")
    fails(ctx, "GetGroup", "NoSuchEntity", 404, GroupName="old")
    got = call(ctx, "GetGroup", GroupName="new")
    assert got["Group"]["Arn"] == f"arn:aws:iam::{ACCOUNT}:group/b/new"
    assert [u["UserName"] for u in got["Users"]] == ["kim"]
    assert [g["GroupName"] for g in call(ctx, "ListGroupsForUser", UserName="kim")["Groups"]] == ["new"]
    assert call(ctx, "ListAttachedGroupPolicies", GroupName="new")["AttachedPolicies"][0]["PolicyArn"] == arn
    assert call(ctx, "ListGroupPolicies", GroupName="new")["PolicyNames"] == ["inline"]
    call(ctx, "UpdateGroup", GroupName="new", NewGroupName="New")  # a change of case only
    call(ctx, "UpdateGroup", GroupName="New", NewPath="/c/")
    assert call(ctx, "GetGroup", GroupName="new")["Group"]["Arn"] == f"arn:aws:iam::{ACCOUNT}:group/c/New"
    fails(ctx, "UpdateGroup", "NoSuchEntity", 404, GroupName="ghost", NewPath="/x/")
    fails(ctx, "UpdateGroup", "ValidationError", 400, GroupName="New", NewGroupName="bad name")


def test_user_rename_keeps_memberships(ctx: RequestContext) -> None:
    make_group(ctx)
    call(ctx, "CreateUser", UserName="ann")
    call(ctx, "AddUserToGroup", GroupName="devs", UserName="ann")
    call(ctx, "UpdateUser", UserName="ann", NewUserName="anna")
    assert [u["UserName"] for u in call(ctx, "GetGroup", GroupName="devs")["Users"]] == ["anna"]
    assert len(call(ctx, "ListGroupsForUser", UserName="anna")["Groups"]) == 1


def test_delete_group_conflicts(ctx: RequestContext) -> None:
    make_group(ctx)
    call(ctx, "CreateUser", UserName="sam")
    call(ctx, "AddUserToGroup", GroupName="devs", UserName="sam")
    err = fails(ctx, "DeleteGroup", "DeleteConflict", 409, GroupName="devs")
    assert err.message == "Cannot delete entity, must remove users from group first."
    call(ctx, "RemoveUserFromGroup", GroupName="devs", UserName="sam")
    call(ctx, "PutGroupPolicy", GroupName="devs", PolicyName="p", PolicyDocument=doc(allow("s3:*")))
    err = fails(ctx, "DeleteGroup", "DeleteConflict", 409, GroupName="devs")
    assert err.message == "Cannot delete entity, must delete policies first."
    call(ctx, "DeleteGroupPolicy", GroupName="devs", PolicyName="p")
    arn = make_policy(ctx, "P", doc(allow("s3:*")))["Arn"]
    call(ctx, "AttachGroupPolicy", GroupName="devs", PolicyArn=arn)
    err = fails(ctx, "DeleteGroup", "DeleteConflict", 409, GroupName="devs")
    assert err.message == "Cannot delete entity, must detach all policies first."
    call(ctx, "DetachGroupPolicy", GroupName="devs", PolicyArn=arn)
    call(ctx, "DeleteGroup", GroupName="devs")
    fails(ctx, "GetGroup", "NoSuchEntity", 404, GroupName="devs")
    fails(ctx, "DeleteGroup", "NoSuchEntity", 404, GroupName="devs")
    make_group(ctx)  # the name is free again
    assert call(ctx, "GetGroup", GroupName="devs")["Users"] == []


def test_delete_user_in_a_group(ctx: RequestContext) -> None:
    make_group(ctx)
    call(ctx, "CreateUser", UserName="max")
    call(ctx, "AddUserToGroup", GroupName="devs", UserName="max")
    err = fails(ctx, "DeleteUser", "DeleteConflict", 409, UserName="max")
    assert err.message == "Cannot delete entity, must remove users from group first."
    call(ctx, "RemoveUserFromGroup", GroupName="devs", UserName="max")
    call(ctx, "DeleteUser", UserName="max")
    fails(ctx, "GetUser", "NoSuchEntity", 404, UserName="max")


# --------------------------------------------------------------------------- group policies


def test_group_inline_policies(ctx: RequestContext) -> None:
    make_group(ctx)
    document = doc(allow("s3:GetObject"))
    call(ctx, "PutGroupPolicy", GroupName="devs", PolicyName="read", PolicyDocument=document)
    got = call(ctx, "GetGroupPolicy", GroupName="DEVS", PolicyName="read")
    assert got["GroupName"] == "devs" and got["PolicyName"] == "read"
    assert decode(got["PolicyDocument"]) == decode(document)
    call(ctx, "PutGroupPolicy", GroupName="devs", PolicyName="READ", PolicyDocument=doc(allow("s3:*")))
    assert (
        decode(call(ctx, "GetGroupPolicy", GroupName="devs", PolicyName="read")["PolicyDocument"])["Statement"][0][
            "Action"
        ]
        == "s3:*"
    )  # names match case-insensitively: the policy was replaced
    for name in ("c", "b", "a"):
        call(ctx, "PutGroupPolicy", GroupName="devs", PolicyName=name, PolicyDocument=document)
    assert all_pages(ctx, "ListGroupPolicies", "PolicyNames", GroupName="devs") == ["a", "b", "c", "read"]
    err = fails(ctx, "GetGroupPolicy", "NoSuchEntity", 404, GroupName="devs", PolicyName="none")
    assert err.message == "The group policy with name none cannot be found."
    fails(ctx, "DeleteGroupPolicy", "NoSuchEntity", 404, GroupName="devs", PolicyName="none")
    call(ctx, "DeleteGroupPolicy", GroupName="devs", PolicyName="a")
    assert call(ctx, "ListGroupPolicies", GroupName="devs")["PolicyNames"] == ["b", "c", "read"]
    fails(ctx, "PutGroupPolicy", "MalformedPolicyDocument", 400, GroupName="devs", PolicyName="x", PolicyDocument="{}")
    err = fails(ctx, "PutGroupPolicy", "NoSuchEntity", 404, GroupName="ghost", PolicyName="x", PolicyDocument=document)
    assert err.message == "The group with name ghost cannot be found."
    fails(ctx, "ListGroupPolicies", "NoSuchEntity", 404, GroupName="ghost")
    fails(ctx, "GetGroupPolicy", "NoSuchEntity", 404, GroupName="ghost", PolicyName="read")


def test_group_inline_size_quota(ctx: RequestContext) -> None:
    make_group(ctx)
    big = doc(allow([f"s3:Get{'x' * 40}{i}" for i in range(110)]))
    err = fails(ctx, "PutGroupPolicy", "LimitExceeded", 409, GroupName="devs", PolicyName="big", PolicyDocument=big)
    assert err.message == "Maximum policy size of 5120 bytes exceeded for group devs"


def test_group_attachments(ctx: RequestContext) -> None:
    make_group(ctx)
    arns = [make_policy(ctx, f"P{i}", doc(allow("s3:*")), Path="/x/" if i % 2 else "/")["Arn"] for i in range(10)]
    for arn in arns:
        call(ctx, "AttachGroupPolicy", GroupName="devs", PolicyArn=arn)
    call(ctx, "AttachGroupPolicy", GroupName="devs", PolicyArn=arns[0])  # a second attach changes nothing
    assert call(ctx, "GetPolicy", PolicyArn=arns[0])["Policy"]["AttachmentCount"] == 1
    listed = all_pages(ctx, "ListAttachedGroupPolicies", "AttachedPolicies", GroupName="devs")
    assert [p["PolicyName"] for p in listed] == [f"P{i}" for i in range(10)]
    under = call(ctx, "ListAttachedGroupPolicies", GroupName="devs", PathPrefix="/x/")["AttachedPolicies"]
    assert [p["PolicyName"] for p in under] == ["P1", "P3", "P5", "P7", "P9"]
    extra = make_policy(ctx, "P10", doc(allow("s3:*")))["Arn"]
    err = fails(ctx, "AttachGroupPolicy", "LimitExceeded", 409, GroupName="devs", PolicyArn=extra)
    assert err.message == "Cannot exceed quota for PoliciesPerGroup: 10"
    missing = f"arn:aws:iam::{ACCOUNT}:policy/Missing"
    err = fails(ctx, "AttachGroupPolicy", "NoSuchEntity", 404, GroupName="devs", PolicyArn=missing)
    assert err.message == f"Policy {missing} does not exist or is not attachable."
    fails(ctx, "AttachGroupPolicy", "NoSuchEntity", 404, GroupName="ghost", PolicyArn=arns[0])
    call(ctx, "DetachGroupPolicy", GroupName="devs", PolicyArn=arns[0])
    err = fails(ctx, "DetachGroupPolicy", "NoSuchEntity", 404, GroupName="devs", PolicyArn=arns[0])
    assert err.message == f"Policy {arns[0]} was not found."
    fails(ctx, "ListAttachedGroupPolicies", "NoSuchEntity", 404, GroupName="ghost")


def test_delete_policy_attached_to_a_group(ctx: RequestContext) -> None:
    make_group(ctx)
    arn = make_policy(ctx, "P", doc(allow("s3:*")))["Arn"]
    call(ctx, "AttachGroupPolicy", GroupName="devs", PolicyArn=arn)
    err = fails(ctx, "DeletePolicy", "DeleteConflict", 409, PolicyArn=arn)
    assert err.message == "Cannot delete a policy attached to entities."
    call(ctx, "DetachGroupPolicy", GroupName="devs", PolicyArn=arn)
    call(ctx, "DeletePolicy", PolicyArn=arn)


# --------------------------------------------------------------------------- what members get


def test_principal_policies_include_the_users_groups(ctx: RequestContext, database: Database) -> None:
    make_group(ctx, "readers")
    make_group(ctx, "writers")
    call(ctx, "CreateUser", UserName="lee")
    for group in ("readers", "writers"):
        call(ctx, "AddUserToGroup", GroupName=group, UserName="lee")
    shared = make_policy(ctx, "Shared", doc(allow("sqs:*")))["Arn"]
    call(ctx, "AttachUserPolicy", UserName="lee", PolicyArn=shared)
    call(ctx, "AttachGroupPolicy", GroupName="readers", PolicyArn=shared)  # taken once
    call(ctx, "PutGroupPolicy", GroupName="readers", PolicyName="read", PolicyDocument=doc(allow("s3:Get*")))
    call(ctx, "PutUserPolicy", UserName="lee", PolicyName="own", PolicyDocument=doc(allow("sns:*")))
    with database.session() as session:
        stored = principal_policies(session, "user", "LEE", ACCOUNT)
        assert stored is not None
        assert sorted((s.source_id, s.source_type) for s in stored.identity) == [
            ("Shared", "user-managed"),
            ("own", "user"),
            ("read", "group"),
        ]
        group = principal_policies(session, "group", "readers", ACCOUNT)
        assert group is not None and group.boundary is None
        assert group.arn == f"arn:aws:iam::{ACCOUNT}:group/readers"
        assert sorted(s.source_id for s in group.identity) == ["Shared", "read"]
        assert principal_policies(session, "group", "ghost", ACCOUNT) is None
    call(ctx, "RemoveUserFromGroup", GroupName="readers", UserName="lee")
    with database.session() as session:
        stored = principal_policies(session, "user", "lee", ACCOUNT)
        assert stored is not None and {s.source_type for s in stored.identity} == {"user-managed", "user"}


def test_simulate_user_with_group_policies(ctx: RequestContext) -> None:
    make_group(ctx)
    call(ctx, "CreateUser", UserName="lee")
    call(ctx, "AddUserToGroup", GroupName="devs", UserName="lee")
    call(ctx, "PutGroupPolicy", GroupName="devs", PolicyName="read", PolicyDocument=doc(allow("s3:Get*")))
    deny_arn = make_policy(ctx, "NoSecrets", doc(deny("s3:GetObject", "arn:aws:s3:::secret/*")))["Arn"]
    call(ctx, "AttachGroupPolicy", GroupName="devs", PolicyArn=deny_arn)
    user = f"arn:aws:iam::{ACCOUNT}:user/lee"
    results = call(
        ctx,
        "SimulatePrincipalPolicy",
        PolicySourceArn=user,
        ActionNames=["s3:GetObject", "s3:PutObject"],
        ResourceArns=["arn:aws:s3:::public/a"],
    )["EvaluationResults"]
    assert [r["EvalDecision"] for r in results] == ["allowed", "implicitDeny"]
    assert results[0]["MatchedStatements"] == [{"SourcePolicyId": "read", "SourcePolicyType": "group"}]
    secret = call(
        ctx,
        "SimulatePrincipalPolicy",
        PolicySourceArn=user,
        ActionNames=["s3:GetObject"],
        ResourceArns=["arn:aws:s3:::secret/a"],
    )["EvaluationResults"][0]
    assert secret["EvalDecision"] == "explicitDeny"
    assert secret["MatchedStatements"] == [{"SourcePolicyId": "NoSecrets", "SourcePolicyType": "user-managed"}]


def test_simulate_group_arn(ctx: RequestContext) -> None:
    group = make_group(ctx, "ops", Path="/teams/")
    call(ctx, "PutGroupPolicy", GroupName="ops", PolicyName="logs", PolicyDocument=doc(allow("logs:*")))
    results = call(
        ctx, "SimulatePrincipalPolicy", PolicySourceArn=group["Arn"], ActionNames=["logs:PutLogEvents", "s3:Get"]
    )["EvaluationResults"]
    assert [r["EvalDecision"] for r in results] == ["allowed", "implicitDeny"]
    assert results[0]["MatchedStatements"] == [{"SourcePolicyId": "logs", "SourcePolicyType": "group"}]
    assert "PermissionsBoundaryDecisionDetail" not in results[0]
    err = fails(
        ctx,
        "SimulatePrincipalPolicy",
        "NoSuchEntity",
        404,
        PolicySourceArn=f"arn:aws:iam::{ACCOUNT}:group/nope",
        ActionNames=["s3:x"],
    )
    assert err.message == "The group with name nope cannot be found."


# --------------------------------------------------------------------------- who uses a policy


def test_list_entities_for_policy(ctx: RequestContext) -> None:
    arn = make_policy(ctx, "P", doc(allow("s3:*")))["Arn"]
    cap = make_policy(ctx, "Cap", doc(allow("s3:*")))["Arn"]
    role = make_role(ctx, "Exec", Path="/svc/")
    call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=arn)
    for name, path in (("u2", "/a/"), ("u1", "/b/")):
        user = call(ctx, "CreateUser", UserName=name, Path=path)["User"]
        call(ctx, "AttachUserPolicy", UserName=name, PolicyArn=arn)
    call(ctx, "CreateUser", UserName="bounded", PermissionsBoundary=arn)
    call(ctx, "CreateUser", UserName="other", PermissionsBoundary=cap)
    groups = {}
    for name in ("g2", "g1"):
        groups[name] = make_group(ctx, name, Path="/a/")
        call(ctx, "AttachGroupPolicy", GroupName=name, PolicyArn=arn)
    everything = call(ctx, "ListEntitiesForPolicy", PolicyArn=arn)
    assert everything["PolicyGroups"] == [
        {"GroupName": "g1", "GroupId": groups["g1"]["GroupId"]},
        {"GroupName": "g2", "GroupId": groups["g2"]["GroupId"]},
    ]
    assert everything["PolicyRoles"] == [{"RoleName": "Exec", "RoleId": role["RoleId"]}]
    # Without PolicyUsageFilter a boundary use counts too, as AWS lists it.
    assert [u["UserName"] for u in everything["PolicyUsers"]] == ["bounded", "u1", "u2"]
    assert user["UserId"] in {u["UserId"] for u in everything["PolicyUsers"]}
    attached = call(ctx, "ListEntitiesForPolicy", PolicyArn=arn, PolicyUsageFilter="PermissionsPolicy")
    assert [u["UserName"] for u in attached["PolicyUsers"]] == ["u1", "u2"]
    bounds = call(ctx, "ListEntitiesForPolicy", PolicyArn=arn, PolicyUsageFilter="PermissionsBoundary")
    assert [u["UserName"] for u in bounds["PolicyUsers"]] == ["bounded"]
    assert bounds["PolicyGroups"] == [] and bounds["PolicyRoles"] == []
    only_groups = call(ctx, "ListEntitiesForPolicy", PolicyArn=arn, EntityFilter="Group")
    assert [g["GroupName"] for g in only_groups["PolicyGroups"]] == ["g1", "g2"]
    assert only_groups["PolicyUsers"] == [] and only_groups["PolicyRoles"] == []
    roles = call(ctx, "ListEntitiesForPolicy", PolicyArn=arn, EntityFilter="Role")
    assert [r["RoleName"] for r in roles["PolicyRoles"]] == ["Exec"] and roles["PolicyUsers"] == []
    none = call(ctx, "ListEntitiesForPolicy", PolicyArn=arn, EntityFilter="LocalManagedPolicy")
    assert none["PolicyUsers"] == none["PolicyRoles"] == none["PolicyGroups"] == []
    under_a = call(ctx, "ListEntitiesForPolicy", PolicyArn=arn, PathPrefix="/a/")
    assert [u["UserName"] for u in under_a["PolicyUsers"]] == ["u2"]
    assert len(under_a["PolicyGroups"]) == 2 and under_a["PolicyRoles"] == []
    # Pages run across the three lists: 2 groups, 1 role, 3 users.
    seen: list[str] = []
    marker = None
    while True:
        page = call(ctx, "ListEntitiesForPolicy", PolicyArn=arn, MaxItems=4, **({"Marker": marker} if marker else {}))
        seen += [g["GroupName"] for g in page["PolicyGroups"]] + [r["RoleName"] for r in page["PolicyRoles"]]
        seen += [u["UserName"] for u in page["PolicyUsers"]]
        if not page["IsTruncated"]:
            break
        marker = page["Marker"]
    assert sorted(seen) == sorted(["g1", "g2", "Exec", "bounded", "u1", "u2"]) and len(seen) == 6
    err = fails(ctx, "ListEntitiesForPolicy", "NoSuchEntity", 404, PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/none")
    assert err.message == f"Policy arn:aws:iam::{ACCOUNT}:policy/none does not exist or is not attachable."
    fails(ctx, "ListEntitiesForPolicy", "InvalidInput", 400, PolicyArn="not-an-arn")
    fails(ctx, "ListEntitiesForPolicy", "ValidationError", 400, PolicyArn=arn, PathPrefix="/a")


def test_list_attached_user_and_role_policies_page(ctx: RequestContext) -> None:
    make_role(ctx)
    call(ctx, "CreateUser", UserName="pat")
    for i in range(5):
        arn = make_policy(ctx, f"P{i}", doc(allow("s3:*")))["Arn"]
        call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=arn)
        call(ctx, "AttachUserPolicy", UserName="pat", PolicyArn=arn)
    expected = [f"P{i}" for i in range(5)]
    roles = all_pages(ctx, "ListAttachedRolePolicies", "AttachedPolicies", RoleName="Exec")
    users = all_pages(ctx, "ListAttachedUserPolicies", "AttachedPolicies", UserName="pat")
    assert [p["PolicyName"] for p in roles] == [p["PolicyName"] for p in users] == expected

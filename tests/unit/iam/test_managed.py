"""The AWS managed policies: AWS's real documents kept as data, seeded under AWS's version ids."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from sagestack.authz.policy import PolicySource, Request, authorize, parse_policy
from sagestack.authz.principals import principal_policies
from sagestack.db.base import Database
from sagestack.services import RequestContext
from sagestack.services.iam import BUILTIN_POLICIES, seed_managed_policies
from sagestack.services.iam import managed as managed_module
from sagestack.services.iam.managed import MANAGED_POLICY_DIR, BuiltinPolicy, load_builtin_policies
from tests.unit.iam.support import ACCOUNT, call, doc, make_role, s3_arn

DATA_FILES = sorted(p for p in Path(str(MANAGED_POLICY_DIR)).glob("*.json"))

REQUIRED = {
    "AdministratorAccess",
    "AmazonSageMakerFullAccess",
    "AmazonSageMakerReadOnly",
    "AmazonS3FullAccess",
    "AmazonS3ReadOnlyAccess",
    "CloudWatchLogsReadOnlyAccess",
    "CloudWatchReadOnlyAccess",
    "IAMReadOnlyAccess",
    "CloudWatchLogsFullAccess",
    "CloudWatchFullAccess",
    "IAMFullAccess",
}

ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/Exec"


def data(name: str) -> dict[str, Any]:
    return json.loads((Path(str(MANAGED_POLICY_DIR)) / f"{name}.json").read_text())


def source(name: str) -> PolicySource:
    return PolicySource(parse_policy(data(name)["Document"], "identity"), name, "aws-managed", s3_arn(name))


def decision(policy: str, action: str, resource: str = "*", **context: str | list[str]) -> str:
    values = {k: [v] if isinstance(v, str) else v for k, v in context.items()}
    return authorize(Request(action, resource, values), [source(policy)]).decision


# --------------------------------------------------------------------------- the data files


def test_every_required_policy_is_there() -> None:
    assert {p.stem for p in DATA_FILES} >= REQUIRED
    assert {b.name for b in BUILTIN_POLICIES} == {p.stem for p in DATA_FILES}


@pytest.mark.parametrize("path", DATA_FILES, ids=lambda p: p.stem)
def test_data_file_is_an_aws_policy_our_validator_accepts(path: Path) -> None:
    entry = json.loads(path.read_text())
    assert list(entry) == ["PolicyName", "Path", "Description", "DefaultVersionId", "Document"]
    assert entry["PolicyName"] == path.stem
    assert entry["Path"].startswith("/") and entry["Path"].endswith("/")
    assert entry["Description"] and entry["DefaultVersionId"].startswith("v")
    assert isinstance(entry["Document"], dict) and entry["Document"]["Version"] == "2012-10-17"
    parsed = parse_policy(entry["Document"], "identity")
    assert parsed.statements


def test_builtin_policies_carry_the_files() -> None:
    by_name = {b.name: b for b in BUILTIN_POLICIES}
    sagemaker = by_name["AmazonSageMakerFullAccess"]
    entry = data("AmazonSageMakerFullAccess")
    assert json.loads(sagemaker.document) == entry["Document"]
    assert sagemaker.version_id == entry["DefaultVersionId"]
    assert sagemaker.description == entry["Description"]
    assert sagemaker.path == "/" and sagemaker.arn == "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"
    assert by_name["AdministratorAccess"].description == "Provides full access to AWS services and resources."


def test_a_broken_data_file_is_refused(tmp_path: Path) -> None:
    good = data("AmazonS3ReadOnlyAccess")
    (tmp_path / "AmazonS3ReadOnlyAccess.json").write_text(json.dumps(good))
    assert [b.name for b in load_builtin_policies(tmp_path)] == ["AmazonS3ReadOnlyAccess"]
    (tmp_path / "Other.json").write_text(json.dumps(good))
    with pytest.raises(ValueError, match="holds PolicyName"):
        load_builtin_policies(tmp_path)
    (tmp_path / "Other.json").unlink()
    bad = {**good, "Document": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*"}]}}
    (tmp_path / "AmazonS3ReadOnlyAccess.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="must contain resources"):
        load_builtin_policies(tmp_path)
    (tmp_path / "AmazonS3ReadOnlyAccess.json").write_text(json.dumps({**good, "DefaultVersionId": "1"}))
    with pytest.raises(ValueError, match="DefaultVersionId"):
        load_builtin_policies(tmp_path)


# --------------------------------------------------------------------------- what they allow


def test_sagemaker_full_access_allows_what_the_sdk_role_check_looks_for() -> None:
    job = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/x"
    assert decision("AmazonSageMakerFullAccess", "sagemaker:CreateTrainingJob", job) == "allowed"
    assert decision("AmazonSageMakerFullAccess", "ecr:GetAuthorizationToken") == "allowed"
    assert decision("AmazonSageMakerFullAccess", "ec2:CreateNetworkInterface") == "allowed"
    assert decision("AmazonSageMakerFullAccess", "logs:PutLogEvents") == "allowed"
    bucket = "arn:aws:s3:::sagemaker-us-east-1-123456789012/train/data.csv"
    assert decision("AmazonSageMakerFullAccess", "s3:GetObject", bucket) == "allowed"
    assert decision("AmazonSageMakerFullAccess", "s3:GetObject", "arn:aws:s3:::other/data.csv") == "implicitDeny"
    assert decision("AmazonSageMakerFullAccess", "iam:CreateRole", ROLE_ARN) == "implicitDeny"
    # Domains, user profiles and apps are outside "sagemaker:*" (NotResource in AWS's document).
    domain = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:domain/d-abc"
    assert decision("AmazonSageMakerFullAccess", "sagemaker:DeleteDomain", domain) == "implicitDeny"


def test_sagemaker_full_access_passes_roles_only_to_sagemaker() -> None:
    passed = "iam:PassedToService"
    name = "AmazonSageMakerFullAccess"
    assert decision(name, "iam:PassRole", ROLE_ARN, **{passed: "sagemaker.amazonaws.com"}) == "allowed"
    assert decision(name, "iam:PassRole", ROLE_ARN, **{passed: "ec2.amazonaws.com"}) == "implicitDeny"
    assert decision(name, "iam:PassRole", ROLE_ARN) == "implicitDeny"  # no iam:PassedToService at all
    # The real document also lets roles named *AmazonSageMaker* go to Glue, RoboMaker and Step Functions.
    sm_role = f"arn:aws:iam::{ACCOUNT}:role/AmazonSageMaker-ExecutionRole"
    assert decision(name, "iam:PassRole", sm_role, **{passed: "glue.amazonaws.com"}) == "allowed"
    assert decision(name, "iam:PassRole", ROLE_ARN, **{passed: "glue.amazonaws.com"}) == "implicitDeny"


def test_s3_read_only_reads_and_does_not_write() -> None:
    obj = "arn:aws:s3:::bucket/key"
    assert decision("AmazonS3ReadOnlyAccess", "s3:GetObject", obj) == "allowed"
    assert decision("AmazonS3ReadOnlyAccess", "s3:ListBucket", "arn:aws:s3:::bucket") == "allowed"
    assert decision("AmazonS3ReadOnlyAccess", "s3:PutObject", obj) == "implicitDeny"
    assert decision("AmazonS3ReadOnlyAccess", "s3:DeleteObject", obj) == "implicitDeny"
    assert decision("AmazonS3FullAccess", "s3:PutObject", obj) == "allowed"


def test_read_only_and_admin_policies() -> None:
    assert decision("AdministratorAccess", "iam:DeleteRole", ROLE_ARN) == "allowed"
    assert decision("IAMReadOnlyAccess", "iam:GetRole", ROLE_ARN) == "allowed"
    assert decision("IAMReadOnlyAccess", "iam:DeleteRole", ROLE_ARN) == "implicitDeny"
    assert decision("IAMFullAccess", "iam:DeleteRole", ROLE_ARN) == "allowed"
    assert decision("AmazonSageMakerReadOnly", "sagemaker:DescribeTrainingJob") == "allowed"
    assert decision("AmazonSageMakerReadOnly", "sagemaker:CreateTrainingJob") == "implicitDeny"
    assert decision("CloudWatchLogsReadOnlyAccess", "logs:GetLogEvents") == "allowed"
    assert decision("CloudWatchLogsReadOnlyAccess", "logs:PutLogEvents") == "implicitDeny"
    assert decision("CloudWatchLogsFullAccess", "logs:PutLogEvents") == "allowed"
    assert decision("CloudWatchReadOnlyAccess", "cloudwatch:GetMetricData") == "allowed"
    assert decision("CloudWatchReadOnlyAccess", "cloudwatch:PutMetricData") == "implicitDeny"
    assert decision("CloudWatchFullAccess", "cloudwatch:PutMetricData") == "allowed"


# --------------------------------------------------------------------------- seeding


def test_seeded_policies_show_aws_versions_and_descriptions(seeded: Database, ctx: RequestContext) -> None:
    for builtin in BUILTIN_POLICIES:
        policy = call(ctx, "GetPolicy", PolicyArn=builtin.arn)["Policy"]
        entry = data(builtin.name)
        assert policy["DefaultVersionId"] == entry["DefaultVersionId"]
        assert policy["Description"] == entry["Description"] and policy["Path"] == entry["Path"]
        versions = call(ctx, "ListPolicyVersions", PolicyArn=builtin.arn)["Versions"]
        assert [(v["VersionId"], v["IsDefaultVersion"]) for v in versions] == [(entry["DefaultVersionId"], True)]
        got = call(ctx, "GetPolicyVersion", PolicyArn=builtin.arn, VersionId=entry["DefaultVersionId"])
        assert json.loads(unquote(got["PolicyVersion"]["Document"])) == entry["Document"]


def test_seeded_sagemaker_full_access_on_a_role(seeded: Database, ctx: RequestContext) -> None:
    make_role(ctx)
    call(ctx, "AttachRolePolicy", RoleName="Exec", PolicyArn=s3_arn("AmazonSageMakerFullAccess"))
    with seeded.transaction() as session:
        policies = principal_policies(session, "role", "Exec", ACCOUNT)
    assert policies is not None

    def check(action: str, resource: str = "*", **context: str) -> str:
        values = {k: [v] for k, v in context.items()}
        return authorize(Request(action, resource, values), policies.identity, policies.boundary).decision

    job = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/x"
    assert check("sagemaker:CreateTrainingJob", job) == "allowed"
    assert check("ecr:GetAuthorizationToken") == "allowed"
    assert check("ec2:CreateNetworkInterface") == "allowed"
    assert check("iam:PassRole", ROLE_ARN, **{"iam:PassedToService": "sagemaker.amazonaws.com"}) == "allowed"
    assert check("iam:PassRole", ROLE_ARN, **{"iam:PassedToService": "lambda.amazonaws.com"}) == "implicitDeny"


def test_seeding_twice_changes_nothing(seeded: Database, ctx: RequestContext) -> None:
    before = call(ctx, "ListPolicies", Scope="AWS", MaxItems=1000)["Policies"]
    seed_managed_policies(seeded)
    after = call(ctx, "ListPolicies", Scope="AWS", MaxItems=1000)["Policies"]
    assert after == before
    arn = s3_arn("AmazonSageMakerFullAccess")
    assert len(call(ctx, "ListPolicyVersions", PolicyArn=arn)["Versions"]) == 1


def test_an_older_installation_moves_to_aws_documents(
    database: Database, ctx: RequestContext, monkeypatch: Any
) -> None:
    # Before the documents were AWS's, every policy was seeded as v1 with a short document.
    old = tuple(
        BuiltinPolicy(b.name, "old", doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}))
        for b in BUILTIN_POLICIES
    )
    monkeypatch.setattr(managed_module, "BUILTIN_POLICIES", old)
    seed_managed_policies(database)
    assert call(ctx, "GetPolicy", PolicyArn=s3_arn("AmazonS3ReadOnlyAccess"))["Policy"]["DefaultVersionId"] == "v1"
    monkeypatch.undo()
    seed_managed_policies(database)
    for builtin in BUILTIN_POLICIES:
        policy = call(ctx, "GetPolicy", PolicyArn=builtin.arn)["Policy"]
        assert policy["DefaultVersionId"] == builtin.version_id and policy["Description"] == builtin.description
        got = call(ctx, "GetPolicyVersion", PolicyArn=builtin.arn, VersionId=builtin.version_id)
        assert json.loads(unquote(got["PolicyVersion"]["Document"])) == json.loads(builtin.document)
        versions = [v["VersionId"] for v in call(ctx, "ListPolicyVersions", PolicyArn=builtin.arn)["Versions"]]
        # AdministratorAccess is v1 at AWS too: its old v1 document is replaced in place.
        assert versions == ([builtin.version_id] if builtin.version_id == "v1" else [builtin.version_id, "v1"])
    # The next AWS update takes the next id.
    s3 = next(b for b in BUILTIN_POLICIES if b.name == "AmazonS3ReadOnlyAccess")
    newer = BuiltinPolicy(s3.name, s3.description, doc({"Effect": "Allow", "Action": "s3:*", "Resource": "*"}))
    newer = dataclasses.replace(newer, version_id="v4")
    monkeypatch.setattr(managed_module, "BUILTIN_POLICIES", (newer,))
    seed_managed_policies(database)
    versions = [v["VersionId"] for v in call(ctx, "ListPolicyVersions", PolicyArn=s3.arn)["Versions"]]
    assert versions == ["v4", "v3", "v1"]

"""IAM authorization on every request, over a real server with boto3 and the AWS CLI.

A user is what its policies make it: nothing without one, read-only with AmazonS3ReadOnlyAccess,
capped by a permissions boundary, stopped by an explicit Deny, refused a role it may not pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.model import Shape

from sagestack import services
from sagestack.aws.catalog import ServiceCatalog
from sagestack.testing.server_process import ServerProcess

DENIED = {"AccessDenied", "AccessDeniedException"}
#: Operations AWS lets anyone with valid credentials make.
NO_PERMISSION_NEEDED = {("sts", "GetCallerIdentity")}
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


class User:
    """An IAM user of the server and clients that sign as it."""

    def __init__(self, server: ServerProcess, name: str) -> None:
        self.server, self.name = server, name
        iam = server.client("iam")
        self.arn = iam.create_user(UserName=name)["User"]["Arn"]
        key = iam.create_access_key(UserName=name)["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]

    def client(self, service: str, **config: Any) -> Any:
        return self.server.client(service, aws_access_key_id=self.key_id, aws_secret_access_key=self.secret,
                                  config=Config(retries={"max_attempts": 1}, **config))


@pytest.fixture
def user(server: ServerProcess) -> Iterator[User]:
    yield User(server, f"u-{uuid.uuid4().hex[:10]}")


def _denied(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    error = excinfo.value.response["Error"]
    assert error["Code"] in DENIED, error
    return error["Message"]


# ---------------------------------------------------------------- every operation


def _value(shape: Shape, depth: int = 0) -> Any:
    """A small value of the shape: required members only, simple strings."""
    kind, meta = shape.type_name, shape.metadata
    if kind == "structure":
        return {name: _value(member, depth + 1) for name, member in shape.members.items()
                if name in shape.required_members and depth < 6}
    if kind == "list":
        return [_value(shape.member, depth + 1)]
    if kind == "map":
        return {"k": _value(shape.value, depth + 1)}
    if kind == "string":
        if meta.get("enum"):
            return meta["enum"][0]
        return "abc" + "x" * max(0, meta.get("min", 0) - 3)
    if kind in ("integer", "long", "short", "byte"):
        return max(1, meta.get("min", 1))
    if kind in ("float", "double"):
        return 1.0
    if kind == "boolean":
        return True
    if kind == "timestamp":
        return datetime(2024, 1, 1, tzinfo=UTC)
    if kind == "blob":
        return b"abc"
    raise AssertionError(kind)


def _implemented() -> list[tuple[str, str]]:
    services.load_all()
    catalog = ServiceCatalog()
    return [(service, name) for service in catalog.SERVICES
            for name in catalog.model(service).operation_names if services.lookup(service, name)]


def test_a_user_without_policies_is_denied_every_operation(server: ServerProcess, user: User) -> None:
    session = botocore.session.get_session()
    wrong = []
    for service, name in _implemented():
        client = user.client(service, parameter_validation=False)
        model = session.get_service_model(service).operation_model(name)
        params = _value(model.input_shape) if model.input_shape is not None else {}
        method = getattr(client, botocore.xform_name(name))
        try:
            method(**params)
            outcome = "succeeded"
        except ClientError as exc:
            error = exc.response["Error"]
            status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
            # A HEAD answer has no body: its status is all a client sees.
            denied = error.get("Code") in DENIED or (model.http.get("method") == "HEAD" and status == 403)
            outcome = "denied" if denied and status < 500 else f"{status} {error.get('Code')}"
        expected = "succeeded" if (service, name) in NO_PERMISSION_NEEDED else "denied"
        if outcome != expected:
            wrong.append(f"{service} {name}: {outcome}")
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- policies that decide


def test_s3_read_only_access_reads_and_does_not_write(server: ServerProcess, user: User) -> None:
    admin_s3 = server.client("s3")
    bucket = f"ro-{uuid.uuid4().hex[:8]}"
    admin_s3.create_bucket(Bucket=bucket)
    admin_s3.put_object(Bucket=bucket, Key="data.csv", Body=b"1,2\n")
    server.client("iam").attach_user_policy(UserName=user.name,
                                            PolicyArn="arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess")
    s3 = user.client("s3")
    assert s3.get_object(Bucket=bucket, Key="data.csv")["Body"].read() == b"1,2\n"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["data.csv"]
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="new.csv", Body=b"x")
    message = _denied(excinfo)
    assert message == (f'User: {user.arn} is not authorized to perform: s3:PutObject on resource: '
                       f'"arn:aws:s3:::{bucket}/new.csv" because no identity-based policy allows the '
                       's3:PutObject action')
    with pytest.raises(ClientError) as excinfo:
        s3.delete_object(Bucket=bucket, Key="data.csv")
    _denied(excinfo)
    assert admin_s3.head_object(Bucket=bucket, Key="data.csv")["ContentLength"] == 4
    with pytest.raises(ClientError) as excinfo:
        user.client("sagemaker").list_training_jobs()
    _denied(excinfo)


def test_a_detached_policy_stops_allowing_at_the_next_request(server: ServerProcess, user: User) -> None:
    iam = server.client("iam")
    arn = "arn:aws:iam::aws:policy/AmazonSageMakerReadOnly"
    iam.attach_user_policy(UserName=user.name, PolicyArn=arn)
    sagemaker = user.client("sagemaker")
    sagemaker.list_training_jobs()
    iam.detach_user_policy(UserName=user.name, PolicyArn=arn)
    with pytest.raises(ClientError) as excinfo:
        sagemaker.list_training_jobs()
    _denied(excinfo)


def test_a_permissions_boundary_limits_an_admin_like_policy(server: ServerProcess, user: User) -> None:
    iam = server.client("iam")
    iam.put_user_policy(UserName=user.name, PolicyName="everything", PolicyDocument=_doc(
        {"Effect": "Allow", "Action": "*", "Resource": "*"}))
    boundary = iam.create_policy(PolicyName=f"b-{user.name}", PolicyDocument=_doc(
        {"Effect": "Allow", "Action": ["s3:List*", "s3:Get*"], "Resource": "*"}))["Policy"]["Arn"]
    iam.put_user_permissions_boundary(UserName=user.name, PermissionsBoundary=boundary)
    user.client("s3").list_buckets()
    with pytest.raises(ClientError) as excinfo:
        user.client("s3").create_bucket(Bucket=f"nope-{uuid.uuid4().hex[:8]}")
    assert "because no permissions boundary allows the s3:CreateBucket action" in _denied(excinfo)
    with pytest.raises(ClientError) as excinfo:
        user.client("iam").attach_user_policy(UserName=user.name,
                                              PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    _denied(excinfo)


def test_explicit_deny_beats_allow(server: ServerProcess, user: User) -> None:
    iam = server.client("iam")
    iam.put_user_policy(UserName=user.name, PolicyName="allow", PolicyDocument=_doc(
        {"Effect": "Allow", "Action": "logs:*", "Resource": "*"}))
    iam.put_user_policy(UserName=user.name, PolicyName="deny", PolicyDocument=_doc(
        {"Effect": "Deny", "Action": "logs:CreateLogGroup", "Resource": "*"}))
    logs = user.client("logs")
    logs.describe_log_groups()
    with pytest.raises(ClientError) as excinfo:
        logs.create_log_group(logGroupName=f"/denied/{user.name}")
    assert _denied(excinfo).endswith("with an explicit deny in an identity-based policy")
    names = [g["logGroupName"] for g in server.client("logs").describe_log_groups(
        logGroupNamePrefix="/denied/")["logGroups"]]
    assert f"/denied/{user.name}" not in names


def test_an_explicit_deny_in_a_group_policy_beats_the_users_allow(server: ServerProcess, user: User) -> None:
    iam = server.client("iam")
    group = f"g-{user.name}"
    iam.create_group(GroupName=group)
    iam.add_user_to_group(GroupName=group, UserName=user.name)
    iam.attach_user_policy(UserName=user.name, PolicyArn="arn:aws:iam::aws:policy/AmazonS3FullAccess")
    bucket = f"grp-{uuid.uuid4().hex[:8]}"
    s3 = user.client("s3")
    s3.create_bucket(Bucket=bucket)
    iam.put_group_policy(GroupName=group, PolicyName="no-delete", PolicyDocument=_doc(
        {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"}))
    with pytest.raises(ClientError) as excinfo:
        s3.delete_bucket(Bucket=bucket)
    assert _denied(excinfo).endswith("with an explicit deny in an identity-based policy")
    iam.remove_user_from_group(GroupName=group, UserName=user.name)
    s3.delete_bucket(Bucket=bucket)  # out of the group, the user's own Allow decides again


def test_without_pass_role_no_training_job_starts(server: ServerProcess, user: User) -> None:
    iam = server.client("iam")
    role = iam.create_role(RoleName=f"r-{user.name}", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    iam.put_user_policy(UserName=user.name, PolicyName="all-but-pass", PolicyDocument=_doc(
        {"Effect": "Allow", "NotAction": "iam:PassRole", "Resource": "*"}))
    job = f"j-{user.name}"
    with pytest.raises(ClientError) as excinfo:
        user.client("sagemaker").create_training_job(
            TrainingJobName=job, RoleArn=role,
            AlgorithmSpecification={"TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/"
                                                     "sagemaker-xgboost:1.7-1", "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": "s3://nowhere/out"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            StoppingCondition={"MaxRuntimeInSeconds": 60})
    assert f"perform: iam:PassRole on resource: {role}" in _denied(excinfo)
    with pytest.raises(ClientError) as excinfo:
        server.client("sagemaker").describe_training_job(TrainingJobName=job)
    assert excinfo.value.response["Error"]["Code"] == "ValidationException"  # nothing was created


def test_the_aws_cli_reports_the_denial(server: ServerProcess, user: User) -> None:
    env = server.subprocess_env({"AWS_ACCESS_KEY_ID": user.key_id, "AWS_SECRET_ACCESS_KEY": user.secret})
    done = subprocess.run([sys.executable, "-m", "awscli", "sagemaker", "list-endpoints"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "AccessDeniedException" in done.stderr
    assert f"User: {user.arn} is not authorized to perform: sagemaker:ListEndpoints" in done.stderr


def test_the_runtime_port_authorizes_too(server: ServerProcess, user: User) -> None:
    runtime = user.client("sagemaker-runtime")
    with pytest.raises(ClientError) as excinfo:
        runtime.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"1,2", ContentType="text/csv")
    assert "sagemaker:InvokeEndpoint on resource: arn:aws:sagemaker:" in _denied(excinfo)
    server.client("iam").put_user_policy(UserName=user.name, PolicyName="invoke", PolicyDocument=_doc(
        {"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint", "Resource": "*"}))
    with pytest.raises(ClientError) as excinfo:
        runtime.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"1,2", ContentType="text/csv")
    assert excinfo.value.response["Error"]["Code"] == "ValidationError"  # allowed: past authorization


# ---------------------------------------------------------------- work runs as its role


def _csv_bucket(server: ServerProcess, name: str) -> str:
    """A bucket with a small binary-classification training set under data/train/."""
    rows = "\n".join(f"{i % 2},{i % 7},{(i * 3) % 11},{i % 5}" for i in range(200))
    server.client("s3").create_bucket(Bucket=name)
    server.client("s3").put_object(Bucket=name, Key="data/train/train.csv", Body=rows.encode())
    return name


def _job(name: str, role: str, data_bucket: str, output_bucket: str) -> dict[str, Any]:
    from tests.integration.training_support import channel, training_request

    return training_request(name, role, output_bucket, [channel("train", f"s3://{data_bucket}/data/train")],
                            hyperparameters={"objective": "binary:logistic", "num_round": "5"})


def test_a_role_for_specific_buckets_decides_what_a_job_reads_and_writes(server: ServerProcess,
                                                                        tmp_path: Any) -> None:
    from tests.integration.training_support import unique, wait_for_job

    bucket_a, bucket_b = _csv_bucket(server, unique("bucket-a")), _csv_bucket(server, unique("bucket-b"))
    made = subprocess.run([sys.executable, "-m", "sagestack", "role", "create", "--buckets", bucket_a,
                           "--data-dir", str(server.data_dir)], env=server.subprocess_env(), capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    role = made.stdout.strip()
    name = role.rsplit("/", 1)[1]
    assert role.startswith("arn:aws:iam::") and ":role/service-role/AmazonSageMaker-ExecutionRole-" in role
    iam = server.client("iam")
    attached = [p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]]
    assert "AmazonSageMakerFullAccess" in attached
    assert any(p.startswith("AmazonSageMaker-ExecutionPolicy-") for p in attached)

    sm = server.client("sagemaker")
    ok = unique("from-a")
    sm.create_training_job(**_job(ok, role, bucket_a, bucket_a))
    done = wait_for_job(sm, ok)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")

    refused = unique("from-b")
    sm.create_training_job(**_job(refused, role, bucket_b, bucket_a))
    failed = wait_for_job(sm, refused, timeout=30)
    assert failed["TrainingJobStatus"] == "Failed"
    # AmazonSageMakerFullAccess lets the role list any bucket; reading bucket-b's objects is what fails.
    assert failed["FailureReason"].startswith(f"ClientError: Data download failed:Could not download s3://{bucket_b}/")
    assert "AccessDenied (403)" in failed["FailureReason"] and "s3:GetObject" in failed["FailureReason"]

    no_output = unique("to-b")
    sm.create_training_job(**_job(no_output, role, bucket_a, bucket_b))
    failed = wait_for_job(sm, no_output, timeout=60)
    assert failed["TrainingJobStatus"] == "Failed"
    assert f"s3://{bucket_b}/output/{no_output}/output/model.tar.gz" in failed["FailureReason"]
    assert "AccessDenied" in failed["FailureReason"]
    assert "Contents" not in server.client("s3").list_objects_v2(Bucket=bucket_b, Prefix="output/")


def test_a_role_that_may_not_write_logs_gets_none(server: ServerProcess) -> None:
    """The platform writes a job's logs and metrics for its role, so only where the role could itself."""
    from sagestack.authz.role_templates import execution_role_template
    from tests.integration.training_support import unique, wait_for_job

    bucket = _csv_bucket(server, unique("quiet"))
    iam = server.client("iam")
    template = execution_role_template([bucket], datetime.now(UTC))
    name = unique("s3-only")
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=template.trust_policy)["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="s3", PolicyDocument=template.s3_policy)
    sm = server.client("sagemaker")
    job = unique("quiet-job")
    sm.create_training_job(**_job(job, role, bucket, bucket))
    assert wait_for_job(sm, job)["TrainingJobStatus"] == "Completed"
    try:
        streams = server.client("logs").describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                                             logStreamNamePrefix=job)["logStreams"]
    except ClientError as exc:  # no job of this server has written logs yet
        assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
        streams = []
    assert streams == []


def test_assume_role_follows_the_trust_policy(server: ServerProcess, user: User) -> None:
    """A trust policy naming the user lets it in by itself; one naming the account leaves it to the user's policies."""
    iam = server.client("iam")
    account = server.client("sts").get_caller_identity()["Account"]

    def role(principal: str) -> str:
        trust = _doc({"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"})
        return iam.create_role(RoleName=f"t-{uuid.uuid4().hex[:10]}", AssumeRolePolicyDocument=trust)["Role"]["Arn"]

    sts = user.client("sts")
    named = role(user.arn)
    session = sts.assume_role(RoleArn=named, RoleSessionName="s1")["AssumedRoleUser"]["Arn"]
    assert session.endswith(f":assumed-role/{named.rsplit('/', 1)[1]}/s1")
    delegated = role(f"arn:aws:iam::{account}:root")
    with pytest.raises(ClientError) as excinfo:
        sts.assume_role(RoleArn=delegated, RoleSessionName="s1")
    assert f"perform: sts:AssumeRole on resource: {delegated}" in _denied(excinfo)
    iam.put_user_policy(UserName=user.name, PolicyName="assume", PolicyDocument=_doc(
        {"Effect": "Allow", "Action": "sts:AssumeRole",
         "Resource": [delegated, f"arn:aws:iam::{account}:role/sandbox/*"]}))
    sts.assume_role(RoleArn=delegated, RoleSessionName="s1")
    elsewhere = f"arn:aws:iam::{account}:role/sandbox/{delegated.rsplit('/', 1)[1]}"
    with pytest.raises(ClientError) as excinfo:  # the path is part of a role's name
        sts.assume_role(RoleArn=elsewhere, RoleSessionName="s1")
    _denied(excinfo)
    with pytest.raises(ClientError) as excinfo:  # the user's policy does not open a role that does not trust it
        sts.assume_role(RoleArn=server.client("iam").create_role(
            RoleName=f"t-{uuid.uuid4().hex[:10]}", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"], RoleSessionName="s1")
    _denied(excinfo)


def test_a_bucket_policy_naming_the_user_grants_and_naming_the_account_does_not(server: ServerProcess,
                                                                               user: User) -> None:
    admin_s3 = server.client("s3")
    account = server.client("sts").get_caller_identity()["Account"]
    bucket = f"bp-{uuid.uuid4().hex[:8]}"
    admin_s3.create_bucket(Bucket=bucket)
    admin_s3.put_object(Bucket=bucket, Key="k", Body=b"v")

    def policy(principal: str) -> None:
        admin_s3.put_bucket_policy(Bucket=bucket, Policy=_doc({
            "Effect": "Allow", "Principal": {"AWS": principal}, "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*"}))

    s3 = user.client("s3")
    policy(f"arn:aws:iam::{account}:root")
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="k")
    _denied(excinfo)
    policy(user.arn)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    admin_s3.delete_bucket_policy(Bucket=bucket)
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="k")
    _denied(excinfo)


def test_a_training_jobs_processes_hold_its_roles_session_until_it_ends(server: ServerProcess) -> None:
    import json as jsonlib
    import time

    from tests.integration.training_support import execution_role, unique, wait_for_job

    bucket = _csv_bucket(server, unique("creds"))
    role = execution_role(server, [bucket])
    sm = server.client("sagemaker")
    job = unique("creds-job")
    request = _job(job, role, bucket, bucket)
    request["HyperParameters"]["num_round"] = "3000"  # long enough to look at it while it runs
    sm.create_training_job(**request)
    credentials = server.data_dir / "jobs" / job / ".credentials"
    deadline = time.monotonic() + 60
    while not (credentials / "credentials.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    held = jsonlib.loads((credentials / "credentials.json").read_text())
    assert oct((credentials / "credentials.json").stat().st_mode & 0o777) == "0o600"
    assert "credential_process" in (credentials / "aws-config").read_text()
    as_job = server.client("sts", aws_access_key_id=held["AccessKeyId"], aws_secret_access_key=held["SecretAccessKey"],
                           aws_session_token=held["SessionToken"])
    assert as_job.get_caller_identity()["Arn"].endswith(f":assumed-role/{role.rsplit('/', 1)[1]}/SageMaker")
    assert wait_for_job(sm, job)["TrainingJobStatus"] == "Completed"
    with pytest.raises(ClientError) as excinfo:  # revoked with the job, not at its expiry
        as_job.get_caller_identity()
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_malformed_policies_are_refused_with_the_problem_named(server: ServerProcess, user: User) -> None:
    iam = server.client("iam")
    for document, words in (
        ("{not json", "This policy contains invalid Json"),
        (_doc({"Effect": "Allow", "Action": "s3:GetObject"}), "Policy statement must contain resources."),
        (_doc({"Effect": "Maybe", "Action": "s3:GetObject", "Resource": "*"}), "Syntax errors in policy."),
    ):
        with pytest.raises(ClientError) as excinfo:
            iam.put_user_policy(UserName=user.name, PolicyName="bad", PolicyDocument=document)
        error = excinfo.value.response["Error"]
        assert (excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"], error["Code"]) == (
            400, "MalformedPolicyDocument"), error
        assert words in error["Message"], error
    assert iam.list_user_policies(UserName=user.name)["PolicyNames"] == []


def test_a_job_whose_role_is_deleted_while_it_runs_fails_with_a_reason(server: ServerProcess) -> None:
    import time

    from tests.integration.training_support import execution_role, unique, wait_for_job

    bucket = _csv_bucket(server, unique("gone"))
    role = execution_role(server, [bucket])
    name = role.rsplit("/", 1)[1]
    sm, iam = server.client("sagemaker"), server.client("iam")
    job = unique("orphan")
    request = _job(job, role, bucket, bucket)
    request["HyperParameters"]["num_round"] = "3000"
    sm.create_training_job(**request)
    deadline = time.monotonic() + 60
    while sm.describe_training_job(TrainingJobName=job)["SecondaryStatus"] != "Training":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
    for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=name, PolicyName=policy)
    iam.delete_role(RoleName=name)
    done = wait_for_job(sm, job, timeout=120)
    assert done["TrainingJobStatus"] == "Failed"
    assert done["FailureReason"].startswith(f"ClientError: Failed to upload the training artifacts to s3://{bucket}/")
    assert "AccessDenied" in done["FailureReason"]

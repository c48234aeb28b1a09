"""Bucket policies: the stores' policy rows/files, PutBucketPolicy's checks, and IsPublic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

import sagestack.db.models  # noqa: F401 - registers every table
from sagestack.aws.errors import AwsError
from sagestack.db.base import Base, Database
from sagestack.services.s3.policy import MESSAGES, check_policy, is_public
from sagestack.storage import LocalObjectStore, ObjectStore
from sagestack.storage.policy_files import PolicyFiles

OWNER = "123456789012"
BUCKET = "bkt"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def store(db: Database, tmp_path: Path) -> LocalObjectStore:
    s = LocalObjectStore(db, tmp_path / "objects")
    s.create_bucket(BUCKET, "us-east-1", OWNER)
    return s


def _code(excinfo: pytest.ExceptionInfo[AwsError]) -> tuple[int, str, str]:
    return excinfo.value.status, excinfo.value.code, excinfo.value.message


# ---------------------------------------------------------------- the embedded store


def test_policy_lifecycle_in_the_embedded_store(store: LocalObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    assert store.bucket_policy(BUCKET) is None
    with pytest.raises(AwsError) as excinfo:
        store.get_bucket_policy(BUCKET)
    assert _code(excinfo) == (404, "NoSuchBucketPolicy", "The bucket policy does not exist")
    store.put_bucket_policy(BUCKET, '{"a": 1}')
    assert store.get_bucket_policy(BUCKET) == store.bucket_policy(BUCKET) == '{"a": 1}'
    store.put_bucket_policy(BUCKET, '{"b": 2}')  # replaces
    assert store.bucket_policy(BUCKET) == '{"b": 2}'
    assert store.get_bucket(BUCKET).name == BUCKET  # bucket reads are unaffected
    store.delete_bucket_policy(BUCKET)
    store.delete_bucket_policy(BUCKET)  # none is fine
    assert store.bucket_policy(BUCKET) is None


def test_policy_calls_on_a_missing_bucket(store: LocalObjectStore) -> None:
    assert store.bucket_policy("nope") is None
    for call in (lambda: store.put_bucket_policy("nope", "{}"), lambda: store.get_bucket_policy("nope"),
                 lambda: store.delete_bucket_policy("nope")):
        with pytest.raises(AwsError) as excinfo:
            call()
        assert _code(excinfo)[:2] == (404, "NoSuchBucket")


def test_a_deleted_buckets_policy_goes_with_it(store: LocalObjectStore) -> None:
    store.put_bucket_policy(BUCKET, "{}")
    store.delete_bucket(BUCKET)
    assert store.bucket_policy(BUCKET) is None
    store.create_bucket(BUCKET, "us-east-1", OWNER)
    assert store.bucket_policy(BUCKET) is None


def test_bucket_policy_is_one_indexed_lookup(store: LocalObjectStore, db: Database) -> None:
    store.put_bucket_policy(BUCKET, "{}")
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert store.bucket_policy(BUCKET) == "{}"
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(statements) == 1 and "WHERE s3_buckets.name = ?" in statements[0]
    with db.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statements[0], (BUCKET,)).fetchall()
    assert any("USING INDEX" in str(row) for row in plan), plan


def test_bucket_reads_do_not_load_the_policy(store: LocalObjectStore, db: Database) -> None:
    store.put_bucket_policy(BUCKET, "{}")
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store.get_bucket(BUCKET)
    store.list_buckets()
    assert statements and not any("policy" in s for s in statements)


# ---------------------------------------------------------------- the external store's files


def test_policy_files_are_atomic_and_tidy(tmp_path: Path) -> None:
    files = PolicyFiles(tmp_path / "p")
    assert files.read(BUCKET) is None
    files.write(BUCKET, '{"x": "é"}')
    files.write(BUCKET, '{"x": "ü"}')
    assert files.read(BUCKET) == '{"x": "ü"}'
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [f"{BUCKET}.json"]
    (tmp_path / "p" / ".dead.tmp").write_text("half")
    assert files.remove_temp_files() == 1
    files.delete(BUCKET)
    files.delete(BUCKET)
    assert files.read(BUCKET) is None
    assert files.read("../etc/passwd") is None


# ---------------------------------------------------------------- PutBucketPolicy's checks


def _doc(**statement: Any) -> str:
    base: dict[str, Any] = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                            "Resource": f"arn:aws:s3:::{BUCKET}/*"}
    base.update(statement)
    return json.dumps({"Version": "2012-10-17", "Statement": [{k: v for k, v in base.items() if v is not None}]})


def _malformed(document: str) -> str:
    with pytest.raises(AwsError) as excinfo:
        check_policy(document, BUCKET)
    status, code, message = _code(excinfo)
    assert (status, code) == (400, "MalformedPolicy")
    return message


def test_a_good_policy_passes() -> None:
    policy = check_policy(_doc(Action=["s3:GetObject", "s3:List*"], Resource=[
        f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]), BUCKET)
    assert policy.statements[0].action == ("s3:GetObject", "s3:List*")
    check_policy(_doc(Principal={"AWS": "arn:aws:iam::123456789012:root"}, Action="s3:*",
                      Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}), BUCKET)
    check_policy(_doc(Action="*", Resource=f"arn:aws:s3:::{BUCKET}*"), BUCKET)


@pytest.mark.parametrize(("document", "message"), [
    ("not json", MESSAGES["first_byte"]),
    (" {}", MESSAGES["first_byte"]),
    ("", MESSAGES["first_byte"]),
    ('{"Statement": [', MESSAGES["json"]),
    ('{"Statement": [], "Statement": []}', "Statement/policy already has instance of Statement"),
    ('{"Version": "2012-10-17"}', MESSAGES["no_statement"]),
    ('{"Statement": []}', MESSAGES["empty_statement"]),
    ('{"Version": "2020-01-01", "Statement": []}', MESSAGES["version"]),
    ('{"Statement": [], "Extra": 1}', "Unknown field Extra"),
    (_doc(Principal=None), "Missing required field Principal"),
    (_doc(Effect=None), "Missing required field Effect"),
    (_doc(Effect="Maybe"), "Invalid effect: Maybe"),
    (_doc(Action=None), "Missing required field Action"),
    (_doc(Resource=None), "Missing required field Resource"),
    (_doc(Action="s3:ListObjects"), MESSAGES["action"]),
    (_doc(Action="iam:CreateUser"), MESSAGES["action"]),
    (_doc(Action="s3:Nope*"), MESSAGES["action"]),
    (_doc(Resource="arn:aws:s3:::other-bucket/*"), MESSAGES["resource"]),
    (_doc(Resource="*"), MESSAGES["resource"]),
    (_doc(Resource="arn:aws:iam::123456789012:root"), MESSAGES["resource"]),
    (_doc(Action="s3:ListBucket"), MESSAGES["mismatch"]),
    (_doc(Action="s3:GetObject", Resource=f"arn:aws:s3:::{BUCKET}"), MESSAGES["mismatch"]),
    (_doc(Principal={"AWS": "someone"}), MESSAGES["principal"]),
    (_doc(Principal={"Robot": "x"}), MESSAGES["principal"]),
    (_doc(Condition={"StringFuzzy": {"aws:SourceVpc": "vpc-1"}}), "Invalid Condition type : StringFuzzy"),
    (_doc(Condition={"StringEquals": {"aws:NoSuchKey": "x"}}), MESSAGES["condition_key"]),
    (_doc(Condition={"IpAddress": {"aws:SourceIp": "not-an-ip"}}), MESSAGES["ip"]),
])
def test_malformed_policies(document: str, message: str) -> None:
    assert _malformed(document) == message


def test_size_limit_counts_the_document_without_whitespace() -> None:
    resources = [f"arn:aws:s3:::{BUCKET}/prefix-{i:05d}/*" for i in range(700)]  # ~24 KB
    assert _malformed(_doc(Resource=resources)) == "Policy exceeds the maximum allowed document size."
    small = [f"arn:aws:s3:::{BUCKET}/p{i:04d}/*" for i in range(500)]  # ~12 KB, ~30 KB pretty-printed
    pretty = json.dumps(json.loads(_doc(Resource=small)), indent=40)
    assert len(pretty.encode()) > 20 * 1024
    check_policy(pretty, BUCKET)


# ---------------------------------------------------------------- IsPublic


@pytest.mark.parametrize(("statement", "public"), [
    ({}, True),
    ({"Principal": {"AWS": "*"}}, True),
    ({"Principal": {"AWS": ["arn:aws:iam::123456789012:root", "*"]}}, True),
    ({"Principal": {"AWS": "arn:aws:iam::123456789012:root"}}, False),
    ({"Principal": {"AWS": "123456789012"}}, False),
    ({"Principal": {"Service": "cloudtrail.amazonaws.com"}}, False),
    ({"Principal": {"Federated": "graph.facebook.com"}}, True),
    ({"Effect": "Deny"}, False),
    ({"Condition": {"StringEquals": {"aws:SourceVpc": "vpc-91237329"}}}, False),
    ({"Condition": {"StringLike": {"aws:SourceVpc": "vpc-*"}}}, True),
    ({"Condition": {"StringEqualsIfExists": {"aws:SourceVpc": "vpc-1"}}}, True),
    ({"Condition": {"StringNotEquals": {"aws:SourceVpc": "vpc-1"}}}, True),
    ({"Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}}, False),
    ({"Condition": {"StringEquals": {"aws:PrincipalAccount": "123456789012"}}}, False),
    ({"Condition": {"StringEquals": {"aws:PrincipalAccount": "${aws:username}"}}}, True),
    ({"Condition": {"StringEquals": {"aws:UserAgent": "curl"}}}, True),
    ({"Condition": {"Bool": {"aws:SecureTransport": "true"}}}, True),
    ({"Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}}, False),
    ({"Condition": {"IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "0.0.0.0/1"]}}}, True),
    ({"Condition": {"IpAddress": {"aws:SourceIp": "12.0.0.0/7"}}}, True),
    ({"Condition": {"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}}, False),
    ({"Condition": {"IpAddress": {"aws:SourceIp": "2001:db8::/31"}}}, True),
    ({"Condition": {"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}}}, True),
    ({"Condition": {"StringEquals": {"aws:userid": "AROAEXAMPLE:*"}}}, True),
    ({"Condition": {"StringEquals": {"aws:userid": "AIDAEXAMPLE"}}}, False),
    ({"Condition": {"ArnLike": {"s3:DataAccessPointArn": "arn:aws:s3:us-west-2:123456789012:accesspoint/*"}}},
     False),
    ({"Condition": {"ArnLike": {"s3:DataAccessPointArn": "arn:aws:s3:us-west-2:*:accesspoint/*"}}}, True),
])
def test_is_public(statement: dict[str, Any], public: bool) -> None:
    base: dict[str, Any] = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                            "Resource": f"arn:aws:s3:::{BUCKET}/*", **statement}
    assert is_public(check_policy(json.dumps({"Statement": [base]}), BUCKET)) is public


def test_one_public_statement_makes_the_policy_public() -> None:
    fixed = {"Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"}, "Action": "s3:PutObject",
             "Resource": f"arn:aws:s3:::{BUCKET}/*"}
    anyone = {**fixed, "Principal": "*"}
    assert not is_public(check_policy(json.dumps({"Statement": [fixed]}), BUCKET))
    assert is_public(check_policy(json.dumps({"Statement": [fixed, anyone]}), BUCKET))

"""The IAM unit tests' harness: a temporary database, request contexts, calling and failing helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import botocore.session
import pytest
from botocore.validate import ParamValidator

import sagestack.services.iam  # noqa: F401  (registers the handlers)
from sagestack.aws.errors import AwsError
from sagestack.db.base import Database
from sagestack.services import Principal, RequestContext, lookup

ACCOUNT = "123456789012"
MODEL = botocore.session.get_session().get_service_model("iam")

TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sagemaker.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def doc(*statements: dict[str, Any], version: str = "2012-10-17") -> str:
    return json.dumps({"Version": version, "Statement": list(statements)})


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


# --------------------------------------------------------------------------- harness


@dataclass
class FakePlatform:
    db: Database
    account_id: str = ACCOUNT


ADMIN = Principal(
    account_id=ACCOUNT,
    arn=f"arn:aws:iam::{ACCOUNT}:user/admin",
    user_id="AIDAADMINADMINADMIN1",
    access_key_id="AKIAADMINADMINADMIN1",
    kind="user",
    name="admin",
    is_admin=True,
)
ASSUMED = Principal(
    account_id=ACCOUNT,
    arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/Exec/s1",
    user_id="AROAEXAMPLEEXAMPLE12:s1",
    access_key_id="ASIAEXAMPLEEXAMPLE12",
    kind="assumed-role",
    name="Exec",
)


def make_ctx(database: Database, principal: Principal) -> RequestContext:
    return RequestContext(
        service="iam",
        operation="Test",
        region="us-east-1",
        request_id="req-1",
        principal=principal,
        platform=FakePlatform(database),  # type: ignore[arg-type]
    )


_TYPES = {
    "string": str,
    "integer": int,
    "long": int,
    "boolean": bool,
    "timestamp": datetime,
    "list": list,
    "map": dict,
    "structure": dict,
}


def check_shape(value: Any, shape: Any, where: str) -> None:
    """The handler's answer must fit botocore's output shape (names, types, required)."""
    assert isinstance(value, _TYPES[shape.type_name]), f"{where}: {value!r} is not {shape.type_name}"
    if shape.type_name == "structure":
        for key, item in value.items():
            assert key in shape.members, f"{where}: unknown member {key}"
            check_shape(item, shape.members[key], f"{where}.{key}")
        for key in shape.required_members:
            assert key in value, f"{where}: missing required {key}"
    elif shape.type_name == "list":
        for i, item in enumerate(value):
            check_shape(item, shape.member, f"{where}[{i}]")
    elif shape.type_name == "string" and shape.enum:
        assert value in shape.enum, f"{where}: {value!r} not in {shape.enum}"


def call(ctx: RequestContext, op: str, validate: bool = True, **params: Any) -> dict[str, Any]:
    model = MODEL.operation_model(op)
    if validate:
        report = ParamValidator().validate(params, model.input_shape)
        assert not report.has_errors(), report.generate_report()
    handler = lookup("iam", op)
    assert handler is not None, op
    result = handler(ctx, params)
    if model.output_shape is None:
        assert result is None
        return {}
    check_shape(result, model.output_shape, op)
    return result


def fails(ctx: RequestContext, op: str, code: str, status: int, **params: Any) -> AwsError:
    with pytest.raises(AwsError) as info:
        call(ctx, op, validate=False, **params)
    assert info.value.code == code, info.value
    assert info.value.status == status
    # Every error an IAM client can see must be one the operation's model knows of
    # (or a generic AWS error code such as ValidationError/AccessDenied).
    known = {e.metadata["error"]["code"] for e in MODEL.operation_model(op).error_shapes}
    assert code in known | {"ValidationError", "AccessDenied"}, code
    return info.value


def decode(document: str) -> Any:
    return json.loads(unquote(document))


def make_role(ctx: RequestContext, name: str = "Exec", **params: Any) -> dict[str, Any]:
    return call(ctx, "CreateRole", RoleName=name, AssumeRolePolicyDocument=TRUST, **params)["Role"]


def make_policy(ctx: RequestContext, name: str, document: str, **params: Any) -> dict[str, Any]:
    return call(ctx, "CreatePolicy", PolicyName=name, PolicyDocument=document, **params)["Policy"]


def s3_arn(name: str) -> str:
    return f"arn:aws:iam::aws:policy/{name}"

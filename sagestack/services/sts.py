"""AWS STS: who am I, and temporary credentials for roles."""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import delete

from sagestack.arns import iam_arn, resource_arn
from sagestack.authz.policy import Caller
from sagestack.authz.roles import trust_allows
from sagestack.aws.errors import AwsError
from sagestack.db.base import utcnow
from sagestack.db.models.identity import IamRole, SessionCredential
from sagestack.identity import random_id, random_secret
from sagestack.services import RequestContext, operation


@operation("sts")
def get_caller_identity(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    principal = ctx.principal
    return {"UserId": principal.user_id, "Account": principal.account_id, "Arn": principal.arn}


def _role_name_of(arn: str, account_id: str) -> str:
    """``arn:aws:iam::<account>:role[/path/]<name>`` -> name."""
    prefix = iam_arn(account_id, "role", "/", "")
    if not arn.startswith(prefix):
        raise AwsError("ValidationError", f"{arn} is not a role ARN of account {account_id}.", 400)
    return arn[len(prefix):].rsplit("/", 1)[-1]


@operation("sts")
def assume_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    role_arn = params["RoleArn"]
    session_name = params["RoleSessionName"]
    for unsupported in ("Policy", "PolicyArns"):
        if params.get(unsupported):
            # Session policies would narrow the session's permissions; ignoring them would grant more.
            raise AwsError("ValidationError", f"sagestack does not support session policies yet: remove {unsupported} "
                           "and give the role itself the narrower policy.", 400)
    name = _role_name_of(role_arn, ctx.account_id)
    duration = params.get("DurationSeconds", 3600)
    db = ctx.platform.db
    with db.transaction() as session:
        role = session.get(IamRole, name)
        if role is not None and iam_arn(ctx.account_id, "role", role.path, role.name) != role_arn:
            role = None  # the path is part of the name: role/a/R does not name role/R
        caller = Caller(arn=ctx.principal.arn, account_id=ctx.account_id)
        # The gateway has checked the caller's own policies; the role's trust policy must let it in too.
        if role is None or not trust_allows(role.assume_role_policy_document, role_arn, caller):
            raise AwsError(
                "AccessDenied",
                f"User: {ctx.principal.arn} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                403,
            )
        if duration > role.max_session_duration:
            raise AwsError(
                "ValidationError",
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
                400,
            )
        now = utcnow()
        # Expired sessions are of no use to anyone; sweep them while we hold the write lock.
        session.execute(delete(SessionCredential).where(SessionCredential.expiration < now - timedelta(days=1)))
        credential = SessionCredential(
            access_key_id=random_id("ASIA"),
            secret_access_key=random_secret(),
            session_token=base64.b64encode(secrets.token_bytes(192)).decode(),
            role_name=name,
            session_name=session_name,
            expiration=now + timedelta(seconds=duration),
            created=now,
        )
        session.add(credential)
        role_id = role.role_id
    return {
        "Credentials": {
            "AccessKeyId": credential.access_key_id,
            "SecretAccessKey": credential.secret_access_key,
            "SessionToken": credential.session_token,
            "Expiration": credential.expiration,
        },
        "AssumedRoleUser": {
            "AssumedRoleId": f"{role_id}:{session_name}",
            "Arn": resource_arn("sts", "", ctx.account_id, f"assumed-role/{name}/{session_name}"),
        },
        "PackedPolicySize": 0,
    }

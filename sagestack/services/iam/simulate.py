"""SimulatePrincipalPolicy / SimulateCustomPolicy over the stored policies.

The stored policies come from :mod:`sagestack.authz.principals` and are evaluated by
:func:`sagestack.authz.policy.authorize`, the same code that decides real requests.
"""

from __future__ import annotations

from typing import Any

from sagestack.authz.policy import (
    Caller,
    Evaluation,
    PolicyError,
    PolicyKind,
    PolicySource,
    Request,
    authorize,
    parse_policy,
)
from sagestack.authz.principals import principal_policies
from sagestack.aws.errors import AwsError
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.iam.common import (
    ENTITIES,
    SERVICE,
    db,
    invalid_input,
    paginate_in_order,
    split_arn,
)

_SEVERITY = {"allowed": 0, "implicitDeny": 1, "explicitDeny": 2}


# --------------------------------------------------------------------------- request parsing


def _source_principal(arn: str) -> tuple[str, str]:
    """("user"|"role"|"group", name) named by PolicySourceArn.

    An STS assumed-role ARN is taken as its role, since tools often pass the
    caller identity straight through.
    """
    if arn.startswith("arn:aws:sts::") and ":assumed-role/" in arn:
        parts = arn.split(":assumed-role/", 1)[1].split("/")
        if len(parts) >= 2 and parts[0]:
            return "role", parts[0]
    parts = split_arn(arn)
    if parts is None or parts[1] not in ("user", "role", "group"):
        raise invalid_input(f"Invalid ARN: {arn}")
    return parts[1], parts[3]


def _input_sources(documents: list[str], label: str, kind: PolicyKind = "identity") -> list[PolicySource]:
    out = []
    for i, document in enumerate(documents, start=1):
        try:
            out.append(PolicySource(parse_policy(document, kind), f"{label}.{i}", "none"))
        except PolicyError as exc:
            raise invalid_input(f"{label}.{i}: {exc}") from None
    return out


def _context(entries: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {e["ContextKeyName"].lower(): list(e.get("ContextKeyValues") or []) for e in entries}


_INLINE_TYPES = ("user", "role", "group")


def _excluded(source: PolicySource, exclusions: list[dict[str, Any]], principal_type: str, name: str) -> bool:
    """PolicyExclusionList: each item names a policy type, a managed ARN or one inline policy."""
    for item in exclusions:
        policy_type = item.get("PolicyType")
        if policy_type == "inline" and source.source_type in _INLINE_TYPES:
            return True
        if policy_type in ("aws-managed", "user-managed") and source.source_type == policy_type:
            return True
        if item.get("PolicyArn") and item["PolicyArn"] == source.arn:
            return True
        ident = item.get("InlinePolicyIdentifier")
        if (
            ident
            and source.source_type == principal_type == ident.get("AttachmentType")
            and ident.get("PolicyName") == source.source_id
            and ident.get("AttachmentName", "").lower() == name.lower()
        ):
            return True
    return False


def _boundary_excluded(exclusions: list[dict[str, Any]]) -> bool:
    return any(item.get("PolicyType") == "permission-boundary" for item in exclusions)


# --------------------------------------------------------------------------- results


def _statement_shapes(evaluation: Evaluation) -> list[dict[str, Any]]:
    return [
        {"SourcePolicyId": m.source.source_id, "SourcePolicyType": m.source.source_type}
        for m in evaluation.matched
    ]


def _result(action: str, resources: list[str], explicit: bool, evals: list[Evaluation]) -> dict[str, Any]:
    """One EvaluationResult per action; the top-level decision is the most restrictive."""
    worst = max(evals, key=lambda e: _SEVERITY[e.decision])
    decisive = [e for e in evals if e.decision == worst.decision]
    out: dict[str, Any] = {
        "EvalActionName": action,
        "EvalResourceName": resources[0] if len(resources) == 1 else "*",
        "EvalDecision": worst.decision,
        "MatchedStatements": [s for e in decisive for s in _statement_shapes(e)],
        "MissingContextValues": sorted({k for e in evals for k in e.missing_context}),
    }
    if worst.allowed_by_boundary is not None:
        out["PermissionsBoundaryDecisionDetail"] = {
            "AllowedByPermissionsBoundary": all(e.allowed_by_boundary for e in evals)
        }
    if explicit:
        out["EvalDecisionDetails"] = {}
        out["ResourceSpecificResults"] = [
            {
                "EvalResourceName": resource,
                "EvalResourceDecision": e.decision,
                "MatchedStatements": _statement_shapes(e),
                "MissingContextValues": e.missing_context,
            }
            for resource, e in zip(resources, evals, strict=True)
        ]
    return out


def _simulate(
    params: dict[str, Any],
    identity: list[PolicySource],
    boundary: list[PolicySource] | None,
    caller: Caller,
) -> dict[str, Any]:
    explicit = bool(params.get("ResourceArns"))
    resources = list(params.get("ResourceArns") or ["*"])
    resource_policy = None
    if params.get("ResourcePolicy"):
        resource_policy = _input_sources([params["ResourcePolicy"]], "ResourcePolicy", "resource")[0]
        resource_policy = PolicySource(resource_policy.policy, "ResourcePolicy", "resource")
    context = _context(params.get("ContextEntries") or [])
    results = []
    for action in params["ActionNames"]:
        evals = [
            authorize(Request(action, resource, context, caller), identity, boundary, resource_policy)
            for resource in resources
        ]
        results.append(_result(action, resources, explicit, evals))
    page, extra = paginate_in_order(results, params)
    return {"EvaluationResults": page, **extra}


@operation(SERVICE)
def simulate_principal_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    principal_type, name = _source_principal(params["PolicySourceArn"])
    with db(ctx).session() as session:
        try:
            stored = principal_policies(session, principal_type, name, ctx.account_id)
        except PolicyError as exc:  # a stored document IAM would not have accepted
            raise _evaluation_error(str(exc)) from None
    if stored is None:
        raise ENTITIES[principal_type].not_found(name)
    exclusions = params.get("PolicyExclusionList") or []
    identity = [s for s in stored.identity if not _excluded(s, exclusions, principal_type, name)]
    identity += _input_sources(params.get("PolicyInputList") or [], "PolicyInputList")
    boundary = None if _boundary_excluded(exclusions) else stored.boundary
    if params.get("PermissionsBoundaryPolicyInputList"):
        boundary = _input_sources(
            params["PermissionsBoundaryPolicyInputList"], "PermissionsBoundaryPolicyInputList"
        )
    # A group is no caller: without CallerArn its simulation has none (as SimulateCustomPolicy).
    default_caller = "" if principal_type == "group" else stored.arn
    caller = Caller(arn=params.get("CallerArn") or default_caller, account_id=ctx.account_id)
    return _simulate(params, identity, boundary, caller)


@operation(SERVICE)
def simulate_custom_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    identity = _input_sources(params["PolicyInputList"], "PolicyInputList")
    boundary = None
    if params.get("PermissionsBoundaryPolicyInputList"):
        boundary = _input_sources(
            params["PermissionsBoundaryPolicyInputList"], "PermissionsBoundaryPolicyInputList"
        )
    caller = Caller(arn=params.get("CallerArn") or "", account_id=ctx.account_id)
    return _simulate(params, identity, boundary, caller)


def _evaluation_error(message: str) -> AwsError:
    return AwsError("PolicyEvaluation", message, 500, sender_fault=False)

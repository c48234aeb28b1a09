"""IAM policy documents: parse, validate and evaluate. Pure: no database, no HTTP.

IAM uses it to reject malformed documents (CreatePolicy, PutRolePolicy,
CreateRole's trust policy...) and to answer SimulatePrincipalPolicy; request
authorization can reuse :func:`authorize` as is.

Evaluation follows the documented IAM logic for one account: an explicit Deny
in any policy wins; otherwise the request is allowed when an identity policy
allows it (and the permissions boundary, if any, allows it too) or a
resource-based policy allows it for the caller; otherwise it is implicitly
denied. Service control policies, session policies and cross-account rules do
not exist on a one-account installation and are not modelled.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from sagestack.arns import resource_arn

PolicyKind = Literal["identity", "trust", "resource"]
Decision = Literal["allowed", "explicitDeny", "implicitDeny"]

VERSIONS = ("2012-10-17", "2008-10-17")
#: Only this version understands ${...} policy variables; older documents treat them as text.
VARIABLES_VERSION = "2012-10-17"

SYNTAX_ERROR = "Syntax errors in policy."
STATEMENT_KEYS = {
    "Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction",
    "Resource", "NotResource", "Condition",
}  # fmt: skip
_PRINCIPAL_TYPES = {"AWS", "Service", "Federated", "CanonicalUser"}
_SID_RE = re.compile(r"[0-9A-Za-z]*")


class PolicyError(ValueError):
    """A document IAM rejects as MalformedPolicyDocument; ``str()`` is the message."""


@dataclass(frozen=True)
class Condition:
    #: As written, e.g. "ForAnyValue:StringLike" or "StringEqualsIfExists".
    operator: str
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Statement:
    effect: str
    sid: str | None = None
    #: Exactly one of action / not_action is set; likewise for resources and principals
    #: (both None when the element is absent, e.g. Resource in a trust policy).
    action: tuple[str, ...] | None = None
    not_action: tuple[str, ...] | None = None
    resource: tuple[str, ...] | None = None
    not_resource: tuple[str, ...] | None = None
    principal: Mapping[str, tuple[str, ...]] | None = None
    not_principal: Mapping[str, tuple[str, ...]] | None = None
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]
    version: str | None = None
    id: str | None = None


# --------------------------------------------------------------------------- parsing


def parse_policy(document: str | Mapping[str, Any], kind: PolicyKind = "identity") -> Policy:
    """Parse and validate a policy document the way IAM does before storing it.

    ``kind`` selects the grammar: identity policies must not name a Principal and
    need a Resource; trust (assume-role) policies need a Principal and must not
    name a Resource; resource-based policies need both.
    """
    doc = _load(document)
    if not isinstance(doc, dict) or set(doc) - {"Version", "Id", "Statement"}:
        raise PolicyError(SYNTAX_ERROR)
    version = doc.get("Version")
    if version is not None and version not in VERSIONS:
        raise PolicyError("The policy failed legacy parsing")
    raw = doc.get("Statement")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise PolicyError(SYNTAX_ERROR)
    statements = tuple(_parse_statement(item, kind) for item in raw)
    sids = [s.sid for s in statements if s.sid]
    if len(sids) != len(set(sids)):
        raise PolicyError("Statement IDs (SID) in a single policy must be unique.")
    policy_id = doc.get("Id")
    if policy_id is not None and not isinstance(policy_id, str):
        raise PolicyError(SYNTAX_ERROR)
    return Policy(statements=statements, version=version, id=policy_id)


def _load(document: str | Mapping[str, Any]) -> Any:
    if not isinstance(document, str):
        return document
    try:
        return json.loads(document)
    except ValueError:
        raise PolicyError("This policy contains invalid Json") from None


def _parse_statement(raw: Any, kind: PolicyKind) -> Statement:
    if not isinstance(raw, dict) or set(raw) - STATEMENT_KEYS:
        raise PolicyError(SYNTAX_ERROR)
    effect = raw.get("Effect")
    if effect is None:
        raise PolicyError("Missing required field Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(SYNTAX_ERROR)
    action, not_action = _parse_actions(raw)
    resource, not_resource = _parse_resources(raw, kind)
    principal, not_principal = _parse_principals(raw, kind)
    return Statement(
        effect=effect,
        sid=_parse_sid(raw.get("Sid"), kind),
        action=action,
        not_action=not_action,
        resource=resource,
        not_resource=not_resource,
        principal=principal,
        not_principal=not_principal,
        conditions=_parse_conditions(raw.get("Condition")),
    )


def _parse_sid(sid: Any, kind: PolicyKind) -> str | None:
    if sid is None:
        return None
    if not isinstance(sid, str):
        raise PolicyError(SYNTAX_ERROR)
    # Identity policies restrict Sids to letters and digits; other kinds accept any text.
    if kind == "identity" and not _SID_RE.fullmatch(sid):
        raise PolicyError(
            "Statement IDs (SID) must be alpha-numeric. "
            "Check that your input satisfies the regular expression [0-9A-Za-z]*"
        )
    return sid


def _string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PolicyError(SYNTAX_ERROR)


def _pair(raw: Mapping[str, Any], name: str) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """The Foo / NotFoo element pair; a statement may carry one of them, not both."""
    if name in raw and f"Not{name}" in raw:
        raise PolicyError(SYNTAX_ERROR)
    pos = _string_list(raw[name]) if name in raw else None
    neg = _string_list(raw[f"Not{name}"]) if f"Not{name}" in raw else None
    return pos, neg


def _parse_actions(raw: Mapping[str, Any]) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    action, not_action = _pair(raw, "Action")
    values = action if action is not None else not_action
    if not values:
        raise PolicyError("Policy statement must contain actions.")
    for value in values:
        if value == "*":
            continue
        if value.count(":") > 1:
            raise PolicyError("Actions/Condition can contain only one colon.")
        vendor, _, name = value.partition(":")
        if not vendor or not name:
            raise PolicyError("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.")
    return action, not_action


def _parse_resources(
    raw: Mapping[str, Any], kind: PolicyKind
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    if kind == "trust":
        for name in ("Resource", "NotResource"):
            if name in raw:
                raise PolicyError(f"Has prohibited field {name}")
        return None, None
    resource, not_resource = _pair(raw, "Resource")
    values = resource if resource is not None else not_resource
    if not values:
        raise PolicyError("Policy statement must contain resources.")
    for value in values:
        if value != "*" and not value.startswith("arn:"):
            raise PolicyError(f'Resource {value} must be in ARN format or "*".')
    return resource, not_resource


def _parse_principals(raw: Mapping[str, Any], kind: PolicyKind) -> tuple[Any, Any]:
    present = [n for n in ("Principal", "NotPrincipal") if n in raw]
    if kind == "identity":
        if present:
            raise PolicyError("Policy document should not specify a principal.")
        return None, None
    if not present:
        raise PolicyError("Missing required field Principal")
    if len(present) == 2:
        raise PolicyError(SYNTAX_ERROR)
    parsed = _principal_map(raw[present[0]])
    return (parsed, None) if present[0] == "Principal" else (None, parsed)


def _principal_map(value: Any) -> dict[str, tuple[str, ...]]:
    if value == "*":
        return {"*": ("*",)}
    if not isinstance(value, dict) or not value:
        raise PolicyError(SYNTAX_ERROR)
    out: dict[str, tuple[str, ...]] = {}
    for ptype, ids in value.items():
        if ptype not in _PRINCIPAL_TYPES:
            raise PolicyError(f'Invalid principal in policy: "{ptype}"')
        out[ptype] = _string_list(ids)
    return out


def _parse_conditions(raw: Any) -> tuple[Condition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise PolicyError(SYNTAX_ERROR)
    out: list[Condition] = []
    for operator, block in raw.items():
        if _split_operator(operator) is None:
            raise PolicyError(f"Invalid Condition type : {operator}")
        if not isinstance(block, dict):
            raise PolicyError(SYNTAX_ERROR)
        for key, values in block.items():
            out.append(Condition(operator, key, _condition_values(values)))
    return tuple(out)


def _condition_values(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, str | int | float):
            out.append(str(item))
        else:
            raise PolicyError(SYNTAX_ERROR)
    return tuple(out)


# --------------------------------------------------------------------------- matching


def _glob_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


_glob_cached = lru_cache(maxsize=4096)(_glob_regex)


def glob_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM wildcard match: ``*`` any run of characters, ``?`` any one character."""
    return _glob_cached(pattern, ignore_case).fullmatch(value) is not None


def action_matches(pattern: str, action: str) -> bool:
    # Action names are case-insensitive in IAM ("s3:getobject" == "s3:GetObject").
    return glob_match(pattern, action, ignore_case=True)


def arn_matches(pattern: str, arn: str) -> bool:
    """ArnLike: compare the six ARN fields one by one, each with wildcards."""
    if pattern == "*":
        return True
    p_parts, a_parts = pattern.split(":", 5), arn.split(":", 5)
    if len(p_parts) != 6 or len(a_parts) != 6:
        return glob_match(pattern, arn)
    return all(glob_match(p, a) for p, a in zip(p_parts, a_parts, strict=True))


_VARIABLE_RE = re.compile(r"\$\{([^}]*)\}")
_LITERAL_VARIABLES = {"*": "*", "?": "?", "$": "$"}


class _Unresolved(Exception):
    """A ${variable} whose context key is absent: the element cannot match."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _substitute(text: str, context: Mapping[str, Sequence[str]]) -> str:
    def replace(match: re.Match[str]) -> str:
        inner = match.group(1)
        if inner in _LITERAL_VARIABLES:
            # ${*} means a literal asterisk; escape it so globbing does not expand it.
            return "\0" + inner
        key, _, default = inner.partition(",")
        values = context.get(key.strip().lower())
        if values:
            return values[0]
        default = default.strip()
        if len(default) >= 2 and default[0] == default[-1] == "'":
            return default[1:-1]
        raise _Unresolved(key.strip())

    return _VARIABLE_RE.sub(replace, text)


def _literal_aware_glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    if "\0" not in pattern:
        return glob_match(pattern, value, ignore_case)
    # Rebuild with escaped literals for the ${*} / ${?} escapes.
    regex, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\0":
            regex.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        regex.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch("".join(regex), value, flags) is not None


# --------------------------------------------------------------------------- conditions


def _str_equals(a: str, b: str) -> bool:
    return a == b


def _str_iequals(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()


def _str_like(a: str, b: str) -> bool:
    return _literal_aware_glob(b, a)


def _numeric(test: Callable[[float, float], bool]) -> Callable[[str, str], bool]:
    def compare(a: str, b: str) -> bool:
        try:
            return test(float(a), float(b))
        except ValueError:
            return False

    return compare


def _to_datetime(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _date(test: Callable[[datetime, datetime], bool]) -> Callable[[str, str], bool]:
    def compare(a: str, b: str) -> bool:
        try:
            return test(_to_datetime(a), _to_datetime(b))
        except ValueError:
            return False

    return compare


def _bool_equals(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def _ip_in(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) in ipaddress.ip_network(b, strict=False)
    except ValueError:
        return False


def _arn_like(a: str, b: str) -> bool:
    return arn_matches(b, a)


# operator -> (positive test(context value, policy value), negated?)
_OPERATORS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "StringEquals": (_str_equals, False),
    "StringNotEquals": (_str_equals, True),
    "StringEqualsIgnoreCase": (_str_iequals, False),
    "StringNotEqualsIgnoreCase": (_str_iequals, True),
    "StringLike": (_str_like, False),
    "StringNotLike": (_str_like, True),
    "NumericEquals": (_numeric(lambda a, b: a == b), False),
    "NumericNotEquals": (_numeric(lambda a, b: a == b), True),
    "NumericLessThan": (_numeric(lambda a, b: a < b), False),
    "NumericLessThanEquals": (_numeric(lambda a, b: a <= b), False),
    "NumericGreaterThan": (_numeric(lambda a, b: a > b), False),
    "NumericGreaterThanEquals": (_numeric(lambda a, b: a >= b), False),
    "DateEquals": (_date(lambda a, b: a == b), False),
    "DateNotEquals": (_date(lambda a, b: a == b), True),
    "DateLessThan": (_date(lambda a, b: a < b), False),
    "DateLessThanEquals": (_date(lambda a, b: a <= b), False),
    "DateGreaterThan": (_date(lambda a, b: a > b), False),
    "DateGreaterThanEquals": (_date(lambda a, b: a >= b), False),
    "Bool": (_bool_equals, False),
    "BinaryEquals": (_str_equals, False),
    "IpAddress": (_ip_in, False),
    "NotIpAddress": (_ip_in, True),
    "ArnEquals": (_arn_like, False),
    "ArnLike": (_arn_like, False),
    "ArnNotEquals": (_arn_like, True),
    "ArnNotLike": (_arn_like, True),
}


def _split_operator(operator: str) -> tuple[str | None, str, bool] | None:
    """("any"/"all"/None, base operator, if_exists), or None for an unknown operator."""
    qualifier = None
    for prefix, name in (("ForAnyValue:", "any"), ("ForAllValues:", "all")):
        if operator.startswith(prefix):
            qualifier, operator = name, operator[len(prefix) :]
    if_exists = operator.endswith("IfExists")
    if if_exists:
        operator = operator[: -len("IfExists")]
    if operator == "Null":
        return None if (qualifier or if_exists) else (None, "Null", False)
    return (qualifier, operator, if_exists) if operator in _OPERATORS else None


def _condition_holds(cond: Condition, ctx: Mapping[str, Sequence[str]], state: _EvalState) -> bool:
    split = _split_operator(cond.operator)
    if split is None:  # unreachable for parsed policies; fail closed for hand-built ones
        return False
    qualifier, operator, if_exists = split
    present = ctx.get(cond.key.lower())
    if operator == "Null":
        absent = not present
        return any((v.lower() == "true") == absent for v in cond.values)
    if not present:
        state.missing.add(cond.key)
        if if_exists or qualifier == "all":
            return True
        # A negated operator holds when the key is absent (nothing can equal it).
        return qualifier is None and _OPERATORS[operator][1]
    try:
        wanted = [_substitute(v, ctx) if state.variables else v for v in cond.values]
    except _Unresolved as exc:
        state.missing.add(exc.key)
        return False
    test, negated = _OPERATORS[operator]

    def one(value: str) -> bool:
        hit = any(test(value, w) for w in wanted)
        return not hit if negated else hit

    return all(one(v) for v in present) if qualifier == "all" else any(one(v) for v in present)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Caller:
    """Who makes the request, for Principal elements in trust/resource policies."""

    arn: str = ""
    account_id: str = ""
    #: Service principal for service-to-service calls, e.g. "sagemaker.amazonaws.com".
    service: str | None = None


@dataclass(frozen=True)
class Request:
    action: str
    resource: str = "*"
    #: Condition keys, any case; each maps to its values (single-valued keys: one item).
    context: Mapping[str, Sequence[str]] = field(default_factory=dict)
    caller: Caller | None = None
    #: A resource of "*" stands for every resource (a simulation without ResourceArns). A real
    #: request's "*" (an action with no resource type) is literal: only a Resource of "*" names it.
    star_is_any: bool = True


@dataclass(frozen=True)
class PolicySource:
    """A parsed policy and where it came from (reported in MatchedStatements)."""

    policy: Policy
    source_id: str
    #: "user" | "role" | "group" (inline), "aws-managed", "user-managed", "resource", "none".
    source_type: str
    #: The managed policy's ARN, when it is one.
    arn: str | None = None


@dataclass(frozen=True)
class Match:
    source: PolicySource
    statement: Statement


@dataclass
class Evaluation:
    decision: Decision
    matched: list[Match] = field(default_factory=list)
    missing_context: list[str] = field(default_factory=list)
    #: Set when a permissions boundary took part: did it allow the request?
    allowed_by_boundary: bool | None = None


@dataclass
class _EvalState:
    missing: set[str] = field(default_factory=set)
    variables: bool = True
    star_is_any: bool = True


def _any_action(patterns: Iterable[str], action: str) -> bool:
    return any(action_matches(p, action) for p in patterns)


def _resource_hit(
    patterns: Iterable[str], resource: str, ctx: Mapping[str, Sequence[str]], state: _EvalState
) -> bool:
    for pattern in patterns:
        try:
            text = _substitute(pattern, ctx) if state.variables else pattern
        except _Unresolved as exc:
            state.missing.add(exc.key)
            continue
        if (resource == "*" and state.star_is_any) or _literal_aware_glob(text, resource):
            return True
    return False


def principal_matches(principals: Mapping[str, Sequence[str]], caller: Caller | None) -> bool:
    """Does a Principal element name this caller?"""
    if "*" in principals:
        return True
    if caller is None:
        return False
    for ptype, ids in principals.items():
        for ident in ids:
            if ptype == "Service" and caller.service and ident == caller.service:
                return True
            if ptype == "AWS" and _aws_principal_matches(ident, caller):
                return True
    return False


def _aws_principal_matches(ident: str, caller: Caller) -> bool:
    if ident == "*":
        return True
    # A bare account id or the account root stands for every identity of that account.
    if _names_account(ident, caller):
        return bool(caller.account_id)
    return _names_identity(ident, caller)


def _names_account(ident: str, caller: Caller) -> bool:
    return ident in (caller.account_id, resource_arn("iam", "", caller.account_id, "root"))


def _names_identity(ident: str, caller: Caller) -> bool:
    """The caller itself: its ARN, or (for a role's session) its role's ARN."""
    if ident == caller.arn:
        return True
    # A role ARN also names every session of that role (the assumed-role ARN has no path).
    session = re.fullmatch(r"arn:aws:sts::(\d+):assumed-role/([^/]+)/.+", caller.arn)
    role = re.fullmatch(r"arn:aws:iam::(\d+):role/(?:.*/)?([^/]+)", ident)
    return bool(session and role and session.groups() == role.groups())


def grants_directly(statement: Statement, caller: Caller | None) -> bool:
    """Does a resource policy's statement name the caller itself (or everyone)?

    Naming only the account (its id or its root) delegates to the account's own identity
    policies: within one account such a statement allows nothing on its own, as in AWS.
    """
    principals = statement.principal
    if principals is None or caller is None:
        return False
    if "*" in principals or "*" in principals.get("AWS", ()):
        return True
    if caller.service and caller.service in principals.get("Service", ()):
        return True
    return any(_names_identity(ident, caller) for ident in principals.get("AWS", ()))


def statement_applies(statement: Statement, request: Request, state: _EvalState | None = None) -> bool:
    """Does this statement cover the request (action, resource, principal, conditions)?"""
    state = state or _EvalState(star_is_any=request.star_is_any)
    if statement.action is not None and not _any_action(statement.action, request.action):
        return False
    if statement.not_action is not None and _any_action(statement.not_action, request.action):
        return False
    ctx = {k.lower(): list(v) for k, v in request.context.items()}
    if statement.resource is not None and not _resource_hit(statement.resource, request.resource, ctx, state):
        return False
    if statement.not_resource is not None and _resource_hit(
        statement.not_resource, request.resource, ctx, state
    ):
        return False
    if statement.principal is not None and not principal_matches(statement.principal, request.caller):
        return False
    if statement.not_principal is not None and principal_matches(statement.not_principal, request.caller):
        return False
    return all(_condition_holds(c, ctx, state) for c in statement.conditions)


def evaluate(sources: Iterable[PolicySource], request: Request) -> Evaluation:
    """Evaluate one set of policies: explicitDeny > allowed > implicitDeny."""
    allows: list[Match] = []
    denies: list[Match] = []
    missing: set[str] = set()
    for source in sources:
        state = _EvalState(variables=source.policy.version == VARIABLES_VERSION, star_is_any=request.star_is_any)
        for statement in source.policy.statements:
            if statement_applies(statement, request, state):
                (denies if statement.effect == "Deny" else allows).append(Match(source, statement))
        missing |= state.missing
    if denies:
        return Evaluation("explicitDeny", denies, sorted(missing))
    if allows:
        return Evaluation("allowed", allows, sorted(missing))
    return Evaluation("implicitDeny", [], sorted(missing))


def authorize(
    request: Request,
    identity: Iterable[PolicySource],
    boundary: Iterable[PolicySource] | None = None,
    resource_policy: PolicySource | None = None,
) -> Evaluation:
    """The decision for one request within one account.

    A permissions boundary caps identity-based grants only; a resource-based
    policy that names the caller grants access on its own (same account); one that
    names only the account leaves the decision to the identity policies.
    """
    ident = evaluate(identity, request)
    bound = evaluate(boundary, request) if boundary is not None else None
    res = evaluate([resource_policy], request) if resource_policy is not None else None
    parts = [e for e in (ident, bound, res) if e is not None]
    missing = sorted({k for e in parts for k in e.missing_context})
    allowed_by_boundary = None if bound is None else bound.decision == "allowed"

    denies = [m for e in parts if e.decision == "explicitDeny" for m in e.matched]
    if denies:
        return Evaluation("explicitDeny", denies, missing, allowed_by_boundary)
    grants: list[Match] = []
    if ident.decision == "allowed" and (bound is None or bound.decision == "allowed"):
        grants += ident.matched + (bound.matched if bound else [])
    if res is not None and res.decision == "allowed":
        grants += [m for m in res.matched if grants_directly(m.statement, request.caller)]
    if grants:
        return Evaluation("allowed", grants, missing, allowed_by_boundary)
    return Evaluation("implicitDeny", [], missing, allowed_by_boundary)

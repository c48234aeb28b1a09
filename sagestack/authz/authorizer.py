"""The request path's authorization step: may this principal make this call?

The gateway calls :meth:`Authorizer.authorize` after a request is authenticated, parsed and
validated, before its handler runs, so a denied request changes nothing. The checks come from the
operation's action table (:mod:`sagestack.authz.actions`); the policies from the IAM tables
(:mod:`sagestack.authz.principals`) and, for S3, the bucket's policy; the decision from the same
evaluator SimulatePrincipalPolicy uses (:mod:`sagestack.authz.policy`).

Decisions are cached per (caller, action, resource, the condition values the caller's policies
read). Any committed change to a policy, attachment, group, user, role or tag bumps the shared
:class:`~sagestack.authz.generation.PolicyGeneration`, which empties every cache of every process
before its next decision, so a detached policy stops allowing from the next request on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from sagestack.arns import iam_arn
from sagestack.authz import actions
from sagestack.authz.actions import Check, ServiceTable
from sagestack.authz.generation import PolicyGeneration
from sagestack.authz.policy import (
    Caller,
    Evaluation,
    Policy,
    PolicyError,
    PolicyKind,
    PolicySource,
    Request,
    authorize,
    evaluate,
    parse_policy,
)
from sagestack.authz.principals import principal_policies
from sagestack.aws.context import RequestFacts
from sagestack.aws.errors import AwsError
from sagestack.db import Database
from sagestack.db.models.identity import (
    GroupMember,
    IamGroup,
    IamRole,
    IamUser,
    InlinePolicy,
    ManagedPolicy,
    PolicyAttachment,
    PolicyVersion,
)
from sagestack.db.models.tags import ResourceTag
from sagestack.identity import Principal
from sagestack.logic import tags as tag_store

#: Condition keys whose value changes from one second to the next: a decision that reads them is not cached.
TIME_KEYS = frozenset({"aws:currenttime", "aws:epochtime"})
NO_KEYS: frozenset[str] = frozenset()
#: The actions a resource-based policy takes part in (a bucket's policy, a role's trust policy):
#: their decisions depend on more than the caller's own policies, so they are never memoized.
RESOURCE_POLICY_ACTIONS = ("s3:", "sts:AssumeRole")
#: Bounded caches: a flood of distinct resources costs a re-evaluation, never unbounded memory.
MAX_CACHED = 50_000

BucketPolicyLookup = Callable[[str], str | None]
#: The rows a decision is made of: who exists (and on which path), their policies, tags.
DECIDING_TABLES: tuple[type, ...] = (IamUser, IamRole, IamGroup, GroupMember, ManagedPolicy, PolicyVersion,
                                     InlinePolicy, PolicyAttachment, ResourceTag)


@dataclass
class _Caches:
    """Everything cached for one policy generation; replaced whole when the generation moves."""

    generation: int
    policy_sets: dict[tuple[str, str], PolicySet] = field(default_factory=dict)
    #: ("bucket", name) or ("role", name) -> its policy and the keys it reads.
    resource_policies: dict[tuple[str, str], tuple[PolicySource | None, frozenset[str]]] = field(default_factory=dict)
    paths: dict[tuple[str, str], str] = field(default_factory=dict)
    decisions: dict[tuple[Any, ...], tuple[str, str, int] | None] = field(default_factory=dict)
    #: Whole calls known to be allowed (see Authorizer._memo_key).
    allowed: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class PolicySet:
    """What decides for one caller: its identity policies, its boundary, the keys they read."""

    principal_arn: str
    identity: tuple[PolicySource, ...]
    boundary: tuple[PolicySource, ...] | None
    #: Lower-case condition keys and policy variables the documents use.
    keys: frozenset[str]


def _keys_of(policies: Iterable[Policy]) -> frozenset[str]:
    keys: set[str] = set()
    for policy in policies:
        for statement in policy.statements:
            keys.update(c.key.lower() for c in statement.conditions)
            for pattern in (statement.resource or ()) + (statement.not_resource or ()):
                keys.update(v.partition(",")[0].strip().lower() for v in _variables(pattern))
            for condition in statement.conditions:
                for value in condition.values:
                    keys.update(v.partition(",")[0].strip().lower() for v in _variables(value))
    return frozenset(keys)


def _variables(text: str) -> list[str]:
    return actions._PLACEHOLDER.findall(text) if "${" in text else []


class Authorizer:
    """Decides every non-admin request; one per process (the main one, each front worker)."""

    def __init__(self, db: Database, account_id: str, generation: PolicyGeneration,
                 bucket_policy: BucketPolicyLookup | None = None,
                 tables: Callable[[str], ServiceTable] = actions.table, region: str = "") -> None:
        self.db = db
        #: Where the platform's own calls for a role are made (aws:RequestedRegion of require()).
        self.region = region
        self.tables = tables
        self.account_id = account_id
        self.generation = generation
        self.bucket_policy = bucket_policy
        self._current = _Caches(-1)
        #: The caches of the generation this thread's decision started in (see _sync).
        self._local = threading.local()
        #: Which members each operation's memo reads (see _memo_key); the tables never change.
        self._plans: dict[str, dict[str, tuple[str, ...] | None]] = {}
        self._lookups = {"iam_user": self._user_path, "iam_role": self._role_path, "iam_group": self._group_path}

    def watch(self) -> None:
        """Bump the generation after every commit that can change a decision (the main process only)."""
        self.db.on_commit_of(DECIDING_TABLES, self.generation.bump)

    def policies_changed(self) -> None:
        """A decision input kept outside the watched tables changed (a bucket policy): decide anew."""
        self.generation.bump()

    # ------------------------------------------------------------------ the decision
    def authorize(self, principal: Principal, service: str, operation: str, params: dict[str, Any],
                  facts: RequestFacts) -> None:
        """Return if ``principal`` may make this call; raise the service's AccessDenied error if not."""
        if principal.is_admin:
            return
        caches = self._current
        if caches.generation != self.generation.current:
            caches = self._sync()
        memo = self._memo_key(principal, service, operation, params, facts)
        if memo is not None and memo in caches.allowed:
            return  # the hot path: this caller made this very call before, and nothing has changed
        self._local.caches = caches  # what this decision reads and fills, whatever happens meanwhile
        service_table = self.tables(service)
        checks = service_table.operations.get(operation)
        if checks is None:  # the tables cover every operation of the models; this is a packaging bug
            raise self._denied(service_table, principal, f"{service}:{operation}", "*", "implicit-identity")
        region = facts.region
        for check in checks:
            if not check.applies(params):
                continue
            for resource in check.resource_arns(params, region, self.account_id, self._lookups):
                denial = self._decide(service_table, principal, check, resource, params, facts)
                if denial is not None:
                    raise denial
        if memo is not None and not self._policies(principal).keys:
            if len(caches.allowed) > MAX_CACHED:
                caches.allowed.clear()
            caches.allowed.add(memo)

    def _memo_key(self, principal: Principal, service: str, operation: str, params: dict[str, Any],
                  facts: RequestFacts) -> str | None:
        """For an operation whose checks read only plain top-level members (InvokeEndpoint reads
        EndpointName) and take no resource policy: who, what, where and those members' values.

        A string, not a tuple: strings are not tracked by the garbage collector, and a long-lived
        server's collections cost more for every container a request allocates.
        """
        plans = self._plans.get(service)
        if plans is None:
            plans = self._plans[service] = {}
        plan = plans.get(operation, False)
        if plan is False:
            plan = plans[operation] = _memo_plan(self.tables(service).operations.get(operation))
        if plan is None:
            return None
        if len(plan) == 1:  # the usual case (EndpointName): no generator on the hot path
            value = params.get(plan[0])
            if value is not None and type(value) is not str:
                return None
            shown = "\1" if value is None else value  # an absent member is not the string "None"
            return f"{principal.user_id}\0{principal.arn}\0{service}\0{operation}\0{facts.region}\0{shown}"
        values = [params.get(member) for member in plan]
        if not all(value is None or type(value) is str for value in values):
            return None
        shown = ["\1" if value is None else value for value in values]
        return "\0".join([principal.user_id, principal.arn, service, operation, facts.region, *shown])

    def require(self, principal: Principal, action: str, resource: str,
                context: dict[str, str] | None = None) -> None:
        """One check outside a request: may ``principal`` (a role's session) do ``action`` on ``resource``?

        The platform's own work on a role's behalf (a job's downloads and uploads) goes through here,
        so a role gains nothing through the platform that it could not do with its own keys.
        """
        if principal.is_admin:
            return
        self._sync()
        service = action.split(":", 1)[0]
        check = Check(action, (), fixed={k.lower(): (v,) for k, v in (context or {}).items()})
        # The platform's own call: made in the server's region, over no network (so never "insecure").
        denial = self._decide(self.tables(service), principal, check, resource, {},
                              RequestFacts(secure=True, region=self.region))
        if denial is not None:
            raise denial

    def _decide(self, service_table: ServiceTable, principal: Principal, check: Check, resource: str,
                params: dict[str, Any], facts: RequestFacts) -> AwsError | None:
        caches = self._local.caches
        policies = self._policies(principal)
        resource_policy, resource_keys = self._resource_policy(check.action, resource)
        keys = policies.keys | resource_keys if resource_keys else policies.keys
        if keys:
            context = self._context(keys, principal, policies, check, resource, params, facts)
            cache_key: tuple[Any, ...] = (principal.user_id, principal.arn, check.action, resource,
                                          tuple(sorted((k, tuple(v)) for k, v in context.items())))
        else:  # the usual case: the decision depends on nothing but who, what and where
            context = {}
            cache_key = (principal.user_id, principal.arn, check.action, resource)
        cacheable = not (keys & TIME_KEYS) if keys else True
        if cacheable:
            hit = caches.decisions.get(cache_key, False)
            if hit is not False:
                return None if hit is None else AwsError(*hit)  # type: ignore[misc]
        caller = Caller(arn=principal.arn, account_id=principal.account_id)
        request = Request(check.action, resource, context, caller, star_is_any=False)
        evaluation = authorize(request, policies.identity, policies.boundary, resource_policy)
        denial = None
        if evaluation.decision != "allowed":
            reason = _reason(evaluation)
            if reason == "boundary" and evaluate(policies.identity, request).decision != "allowed":
                reason = "implicit-identity"  # the boundary is not what is missing
            denial = self._denied(service_table, principal, check.action, resource, reason)
        if cacheable:
            if len(caches.decisions) > MAX_CACHED:
                caches.decisions.clear()
            # Cached as its parts: each refusal raises an error of its own (a raised exception keeps its traceback).
            caches.decisions[cache_key] = None if denial is None else (denial.code, denial.message, denial.status)
        return denial

    def _denied(self, service_table: ServiceTable, principal: Principal, action: str, resource: str,
                reason: str) -> AwsError:
        shown = f'"{resource}"' if action.startswith("s3:") else resource
        head = f"User: {principal.arn} is not authorized to perform: {action} on resource: {shown}"
        message = {
            "explicit-identity": f"{head} with an explicit deny in an identity-based policy",
            "explicit-resource": f"{head} with an explicit deny in a resource-based policy",
            "boundary": f"{head} because no permissions boundary allows the {action} action",
            "implicit-identity": f"{head} because no identity-based policy allows the {action} action",
        }[reason]
        denial = service_table.denial
        return AwsError(denial.code, message, denial.status)

    # ------------------------------------------------------------------ caches
    def _sync(self) -> _Caches:
        """The caches of the current generation, fresh ones when it moved; this thread's until it returns.

        A decision reads and fills only the caches it started with, so one that read the policies
        before a change committed can never leave its answer where a later decision would find it.
        """
        current = self.generation.current
        caches = self._current
        if caches.generation != current:
            caches = self._current = _Caches(current)
        self._local.caches = caches
        return caches

    def _policies(self, principal: Principal) -> PolicySet:
        kind = "role" if principal.kind == "assumed-role" else "user"
        sets = self._local.caches.policy_sets
        found = sets.get((kind, principal.name))
        if found is None:
            found = sets[(kind, principal.name)] = self._load_policies(kind, principal.name)
        return found

    def _load_policies(self, kind: str, name: str) -> PolicySet:
        with self.db.session() as session:
            try:
                stored = principal_policies(session, kind, name, self.account_id)
            except PolicyError:
                stored = None  # a stored document IAM would not accept grants nothing
        if stored is None:  # the user or role is gone: nothing allows it
            return PolicySet(iam_arn(self.account_id, kind, "/", name), (), None, frozenset())
        documents = [s.policy for s in stored.identity + (stored.boundary or [])]
        boundary = tuple(stored.boundary) if stored.boundary is not None else None
        return PolicySet(stored.arn, tuple(stored.identity), boundary, _keys_of(documents))

    def _resource_policy(self, action: str, resource: str) -> tuple[PolicySource | None, frozenset[str]]:
        """The resource-based policy that takes part, and the keys it reads: an S3 bucket's policy,
        or the trust policy of a role being assumed; (None, empty) for anything else."""
        if not action.startswith(RESOURCE_POLICY_ACTIONS):
            return None, NO_KEYS
        if action.startswith("s3:") and resource.startswith("arn:aws:s3:::") and self.bucket_policy is not None:
            bucket = resource[len("arn:aws:s3:::"):].split("/", 1)[0]
            if not bucket or "*" in bucket:
                return None, NO_KEYS
            return self._resource_policy_of(("bucket", bucket), lambda: self.bucket_policy(bucket), "resource")
        if action == "sts:AssumeRole" and ":role/" in resource:
            return self._resource_policy_of(("role", resource), lambda: self._trust_policy(resource), "trust")
        return None, NO_KEYS

    def _resource_policy_of(self, key: tuple[str, str], read: Callable[[], str | None],
                            kind: PolicyKind) -> tuple[PolicySource | None, frozenset[str]]:
        caches = self._local.caches
        found = caches.resource_policies.get(key)
        if found is None:
            document = read()
            source = None
            if document:
                try:
                    source = PolicySource(parse_policy(document, kind), key[1], "resource")
                except PolicyError:
                    source = None  # stored before its checks existed: it grants nothing
            found = caches.resource_policies[key] = (source, _keys_of([source.policy]) if source else NO_KEYS)
        return found

    def _trust_policy(self, role_arn: str) -> str | None:
        """The trust policy of the role this ARN names, path and all (None when it names none)."""
        with self.db.session() as session:
            role = session.get(IamRole, role_arn.rsplit("/", 1)[-1])
        if role is None or iam_arn(self.account_id, "role", role.path, role.name) != role_arn:
            return None
        return role.assume_role_policy_document

    # ------------------------------------------------------------------ condition keys
    def _context(self, keys: frozenset[str], principal: Principal, policies: PolicySet, check: Check,
                 resource: str, params: dict[str, Any], facts: RequestFacts) -> dict[str, list[str]]:
        """The values of the keys the policies read, and only those (most policies read none)."""
        context: dict[str, list[str]] = {}
        request_keys: dict[str, list[str]] | None = None
        for key in keys:
            value = _global_key(key, principal, policies, facts)
            if value is None and (check.conditions or check.fixed):
                if request_keys is None:
                    request_keys = check.request_context(params)
                value = request_keys.get(key)
            if value is not None:
                context[key] = value
        if check.resource_tags and any(_is_resource_tag(k) for k in keys):
            prefix = check.action.split(":", 1)[0]
            for tag_key, tag_value in self._resource_tags(resource).items():
                for name in (f"aws:resourcetag/{tag_key.lower()}", f"{prefix}:resourcetag/{tag_key.lower()}"):
                    if name in keys:
                        context[name] = [tag_value]
        return context

    def _resource_tags(self, resource: str) -> dict[str, str]:
        with self.db.session() as session:
            return tag_store.tag_map(session, resource)

    # ------------------------------------------------------------------ IAM paths for ARNs
    def _user_path(self, name: str) -> str:
        return self._path_of("user", IamUser, name)

    def _role_path(self, name: str) -> str:
        return self._path_of("role", IamRole, name)

    def _group_path(self, name: str) -> str:
        return self._path_of("group", IamGroup, name)

    def _path_of(self, kind: str, model: Any, name: str) -> str:
        """``path + name`` of an IAM entity, as its ARN spells it (``/`` for one that does not exist)."""
        paths = self._local.caches.paths
        found = paths.get((kind, name))
        if found is None:
            with self.db.session() as session:
                path = session.scalar(select(model.path).where(func.lower(model.name) == name.lower()))
            found = paths[(kind, name)] = (path or "/").lstrip("/") + name
        return found


def _memo_plan(checks: tuple[Check, ...] | None) -> tuple[str, ...] | None:
    """The members an operation's decision reads, when they are all plain top-level strings in simple
    templates (None: the operation is decided in full every time)."""
    if checks is None:
        return None
    members: list[str] = []
    for check in checks:
        if check.when is not None or check.unless is not None or check.action.startswith(RESOURCE_POLICY_ACTIONS):
            return None
        for template in check.resources:
            if template.simple is None:
                return None
            members += [name for _, name, builtin in template.simple if name is not None and not builtin]
    return tuple(dict.fromkeys(members))


def _is_resource_tag(key: str) -> bool:
    return key.startswith("aws:resourcetag/") or ":resourcetag/" in key


_GLOBAL_KEYS: dict[str, Callable[[Principal, PolicySet, RequestFacts], list[str]]] = {
    "aws:sourceip": lambda p, s, f: [f.source_ip] if f.source_ip else [],
    "aws:securetransport": lambda p, s, f: ["true" if f.secure else "false"],
    "aws:currenttime": lambda p, s, f: [datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")],
    "aws:epochtime": lambda p, s, f: [str(int(time.time()))],
    # For a role's session AWS gives the role's ARN here, not the session's.
    "aws:principalarn": lambda p, s, f: [s.principal_arn],
    "aws:username": lambda p, s, f: [p.name] if p.kind == "user" else [],
    "aws:userid": lambda p, s, f: [p.user_id],
    "aws:principalaccount": lambda p, s, f: [p.account_id],
    "aws:principaltype": lambda p, s, f: ["User" if p.kind == "user" else "AssumedRole"],
    "aws:requestedregion": lambda p, s, f: [f.region] if f.region else [],
}


def _global_key(key: str, principal: Principal, policies: PolicySet, facts: RequestFacts) -> list[str] | None:
    """The global condition keys AWS sets on every request (None: not a global key, or not set)."""
    compute = _GLOBAL_KEYS.get(key)
    if compute is None:
        return None
    return compute(principal, policies, facts) or None


def _reason(evaluation: Evaluation) -> str:
    if evaluation.decision == "explicitDeny":
        if any(m.source.source_type == "resource" for m in evaluation.matched):
            return "explicit-resource"
        return "explicit-identity"
    if evaluation.allowed_by_boundary is False:
        return "boundary"
    return "implicit-identity"

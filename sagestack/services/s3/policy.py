"""Bucket policies: PutBucketPolicy's checks, GetBucketPolicyStatus's notion of "public", the handlers.

The grammar (elements, Effect, Principal, conditions and their operators) is
:func:`sagestack.authz.policy.parse_policy` with kind ``"resource"``; this module
adds what S3 checks on top of it and answers in S3's words (``MalformedPolicy``,
400), which differ from IAM's: the first byte must be ``{``, the document at most
20 KB, every action an S3 action, every resource this bucket or an object in
it, every action applicable to some resource of its statement, every condition
key one S3 knows.

The messages are the ones S3 sends on the wire, as recorded by S3-compatible
servers that test against it (versitygw's ``auth/bucket_policy*.go``) and by
AWS CLI users' reports; see :data:`MESSAGES`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from sagestack.authz.policy import (
    STATEMENT_KEYS,
    SYNTAX_ERROR,
    VERSIONS,
    Condition,
    Policy,
    PolicyError,
    Statement,
    glob_match,
    parse_policy,
)
from sagestack.aws.errors import AwsError
from sagestack.services import operation
from sagestack.services.context import RequestContext
from sagestack.services.s3.common import check_expected_owner, store

#: Bucket policies are limited to 20 KB (S3 User Guide, "Adding a bucket policy").
MAX_POLICY_BYTES = 20 * 1024

MESSAGES = {
    "first_byte": "Policies must be valid JSON and the first byte must be '{'",
    "json": "This policy contains invalid Json",
    "size": "Policy exceeds the maximum allowed document size.",
    "syntax": "Invalid policy syntax.",
    "version": "The policy must contain a valid version string",
    "no_statement": "Missing required field Statement",
    "empty_statement": "Could not parse the policy: Statement is empty!",
    "action": "Policy has invalid action",
    "resource": "Policy has invalid resource",
    "principal": "Invalid principal in policy",
    "mismatch": "Action does not apply to any resource(s) in statement",
    "condition_key": "Policy has an invalid condition key",
    "ip": "Invalid IP address in Conditions",
}

_POLICY_KEYS = ("Version", "Id", "Statement")
_ARN_PREFIX = "arn:aws:s3:::"


def malformed(message: str) -> AwsError:
    return AwsError("MalformedPolicy", message, 400)


# ============================================================================ S3's actions


def _names(text: str) -> frozenset[str]:
    """A whitespace-separated list of names, lowercased (IAM compares them case-insensitively)."""
    return frozenset(text.lower().split())


#: s3 actions on objects (resource ``arn:aws:s3:::bucket/key``), from the Service Authorization Reference.
OBJECT_ACTIONS = _names("""
    AbortMultipartUpload BypassGovernanceRetention DeleteObject DeleteObjectTagging DeleteObjectVersion
    DeleteObjectVersionTagging GetObject GetObjectAcl GetObjectAttributes GetObjectLegalHold GetObjectRetention
    GetObjectTagging GetObjectTorrent GetObjectVersion GetObjectVersionAcl GetObjectVersionAttributes
    GetObjectVersionForReplication GetObjectVersionTagging GetObjectVersionTorrent InitiateReplication
    ListMultipartUploadParts ObjectOwnerOverrideToBucketOwner PutObject PutObjectAcl PutObjectLegalHold
    PutObjectRetention PutObjectTagging PutObjectVersionAcl PutObjectVersionTagging ReplicateDelete
    ReplicateObject ReplicateTags RestoreObject
""")

#: s3 actions on buckets (resource ``arn:aws:s3:::bucket``).
BUCKET_ACTIONS = _names("""
    CreateBucket DeleteBucket DeleteBucketPolicy DeleteBucketWebsite DeleteBucketOwnershipControls
    GetAccelerateConfiguration GetAnalyticsConfiguration GetBucketAcl GetBucketCORS GetBucketLocation
    GetBucketLogging GetBucketNotification GetBucketObjectLockConfiguration GetBucketOwnershipControls
    GetBucketPolicy GetBucketPolicyStatus GetBucketPublicAccessBlock GetBucketRequestPayment GetBucketTagging
    GetBucketVersioning GetBucketWebsite GetEncryptionConfiguration GetIntelligentTieringConfiguration
    GetInventoryConfiguration GetLifecycleConfiguration GetMetricsConfiguration GetReplicationConfiguration
    ListBucket ListBucketMultipartUploads ListBucketVersions PutAccelerateConfiguration PutAnalyticsConfiguration
    PutBucketAcl PutBucketCORS PutBucketLogging PutBucketNotification PutBucketObjectLockConfiguration
    PutBucketOwnershipControls PutBucketPolicy PutBucketPublicAccessBlock PutBucketRequestPayment
    PutBucketTagging PutBucketVersioning PutBucketWebsite PutEncryptionConfiguration
    PutIntelligentTieringConfiguration PutInventoryConfiguration PutLifecycleConfiguration
    PutMetricsConfiguration PutReplicationConfiguration CreateBucketMetadataTableConfiguration
    DeleteBucketMetadataTableConfiguration GetBucketMetadataTableConfiguration
""")

#: s3 actions on neither (the account, access points, jobs...): valid names, but no resource of a
#: bucket policy applies to them.
OTHER_ACTIONS = _names("""
    ListAllMyBuckets CreateAccessPoint DeleteAccessPoint GetAccessPoint GetAccessPointPolicy PutAccessPointPolicy
    DeleteAccessPointPolicy GetAccessPointPolicyStatus ListAccessPoints CreateJob DescribeJob ListJobs
    UpdateJobPriority UpdateJobStatus GetAccountPublicAccessBlock PutAccountPublicAccessBlock
    GetStorageLensConfiguration PutStorageLensConfiguration DeleteStorageLensConfiguration
    ListStorageLensConfigurations CreateMultiRegionAccessPoint ListMultiRegionAccessPoints
""")

_ALL_ACTIONS = OBJECT_ACTIONS | BUCKET_ACTIONS | OTHER_ACTIONS


def _actions_named(value: str) -> set[str]:
    """The S3 actions (lowercase names) an Action value covers; empty when it names none."""
    if value == "*":
        return set(_ALL_ACTIONS)
    vendor, colon, name = value.partition(":")
    if not colon or vendor.lower() != "s3" or not name:
        return set()
    if "*" not in name and "?" not in name:
        return {name.lower()} & _ALL_ACTIONS
    return {a for a in _ALL_ACTIONS if glob_match(name, a, ignore_case=True)}


# ============================================================================ condition keys

#: Global condition keys (IAM User Guide, "AWS global condition context keys"), lowercase;
#: a trailing "/" means "followed by a tag key".
GLOBAL_CONDITION_KEYS = _names("""
    aws:CalledVia aws:CalledViaFirst aws:CalledViaLast aws:CurrentTime aws:EpochTime aws:FederatedProvider
    aws:MultiFactorAuthAge aws:MultiFactorAuthPresent aws:PrincipalAccount aws:PrincipalArn
    aws:PrincipalIsAWSService aws:PrincipalOrgID aws:PrincipalOrgPaths aws:PrincipalServiceName
    aws:PrincipalServiceNamesList aws:PrincipalType aws:Referer aws:RequestedRegion aws:ResourceAccount
    aws:ResourceOrgID aws:ResourceOrgPaths aws:SecureTransport aws:SourceAccount aws:SourceArn
    aws:SourceIdentity aws:SourceIp aws:SourceOrgID aws:SourceOrgPaths aws:SourceOwner aws:SourceVpc
    aws:SourceVpce aws:SourceVpcArn aws:TagKeys aws:TokenIssueTime aws:UserAgent aws:userid aws:username
    aws:ViaAWSService aws:VpcSourceIp aws:Ec2InstanceSourceVpc aws:Ec2InstanceSourcePrivateIPv4
    aws:VpceAccount aws:VpceOrgID aws:VpceOrgPaths aws:PrincipalTag/ aws:RequestTag/ aws:ResourceTag/
""")

#: Amazon S3's own condition keys (Service Authorization Reference), lowercase.
S3_CONDITION_KEYS = _names("""
    s3:AccessGrantsInstanceArn s3:AccessPointNetworkOrigin s3:authType s3:DataAccessPointAccount
    s3:DataAccessPointArn s3:delimiter s3:if-match s3:if-none-match s3:InventoryAccessibleOptionalFields
    s3:LocationConstraint s3:max-keys s3:object-lock-legal-hold s3:object-lock-mode
    s3:object-lock-remaining-retention-days s3:object-lock-retain-until-date s3:ObjectCreationOperation
    s3:prefix s3:RequestObjectTagKeys s3:ResourceAccount s3:signatureAge s3:signatureversion s3:TlsVersion
    s3:versionid s3:x-amz-acl s3:x-amz-content-sha256 s3:x-amz-copy-source s3:x-amz-grant-full-control
    s3:x-amz-grant-read s3:x-amz-grant-read-acp s3:x-amz-grant-write s3:x-amz-grant-write-acp
    s3:x-amz-metadata-directive s3:x-amz-object-ownership s3:x-amz-server-side-encryption
    s3:x-amz-server-side-encryption-aws-kms-key-id s3:x-amz-server-side-encryption-customer-algorithm
    s3:x-amz-storage-class s3:x-amz-website-redirect-location s3:BucketTag/ s3:ExistingObjectTag/
    s3:RequestObjectTag/
""")

_CONDITION_KEYS = GLOBAL_CONDITION_KEYS | S3_CONDITION_KEYS


def _known_condition_key(key: str) -> bool:
    lower = key.lower()
    if lower in _CONDITION_KEYS:
        return True
    head, slash, tag = lower.partition("/")
    return bool(slash and tag and f"{head}/" in _CONDITION_KEYS)


# ============================================================================ PutBucketPolicy's checks


def check_policy(document: str, bucket: str) -> Policy:
    """The parsed policy, or MalformedPolicy with S3's message for the first thing S3 would refuse."""
    if not document.startswith("{"):
        raise malformed(MESSAGES["first_byte"])
    try:
        doc = json.loads(document, object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        raise malformed(f"Statement/policy already has instance of {dup.name}") from None
    except ValueError:
        raise malformed(MESSAGES["json"]) from None
    if not isinstance(doc, dict):
        raise malformed(MESSAGES["json"])
    # Counted without the whitespace between tokens (S3 normalizes the document before measuring).
    if len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_POLICY_BYTES:
        raise malformed(MESSAGES["size"])
    _check_shape(doc)
    try:
        policy = parse_policy(doc, "resource")
    except PolicyError as exc:
        raise malformed(_s3_message(str(exc))) from None
    for statement in policy.statements:
        _check_statement(statement, bucket)
    return policy


class _Duplicate(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise _Duplicate(name)
        out[name] = value
    return out


def _check_shape(doc: dict[str, Any]) -> None:
    """What S3 reports in its own words before the grammar is applied."""
    for name in doc:
        if name not in _POLICY_KEYS:
            raise malformed(f"Unknown field {name}")
    version = doc.get("Version")
    if version is not None and version not in VERSIONS:
        raise malformed(MESSAGES["version"])
    if "Statement" not in doc:
        raise malformed(MESSAGES["no_statement"])
    raw = doc["Statement"]
    statements = [raw] if isinstance(raw, dict) else raw
    if not isinstance(statements, list):
        raise malformed(MESSAGES["syntax"])
    if not statements:
        raise malformed(MESSAGES["empty_statement"])
    for item in statements:
        if not isinstance(item, dict):
            raise malformed(MESSAGES["syntax"])
        for name in item:
            if name not in STATEMENT_KEYS:
                raise malformed(f"Unknown field {name}")
        for name in ("Principal", "Action", "Resource"):
            if name in item and f"Not{name}" in item:
                raise malformed(f"Statement/policy already has instance of {name}")
        effect = item.get("Effect")
        if effect is None:
            raise malformed("Missing required field Effect")
        if effect not in ("Allow", "Deny"):
            raise malformed(f"Invalid effect: {effect if isinstance(effect, str) else json.dumps(effect)}")
        for name in ("Principal", "Action", "Resource"):
            if name not in item and f"Not{name}" not in item:
                raise malformed(f"Missing required field {name}")
            if name != "Principal" and item.get(name, item.get(f"Not{name}")) in ([], ""):
                raise malformed(f"Missing required field {name} cannot be empty!")


def _s3_message(iam_message: str) -> str:
    """parse_policy speaks IAM; the same faults in S3's words."""
    if iam_message == SYNTAX_ERROR:
        return MESSAGES["syntax"]
    if iam_message.startswith("Invalid principal in policy"):
        return MESSAGES["principal"]
    if iam_message.startswith(("Actions/Condition", "Policy statement must contain actions")):
        return MESSAGES["action"]
    if iam_message.startswith(("Resource ", "Policy statement must contain resources")):
        return MESSAGES["resource"]
    return iam_message  # "Invalid Condition type : X", "Missing required field Principal", ...


_ACCOUNT_RE = re.compile(r"\d{12}")
_AWS_PRINCIPAL_RE = re.compile(r"arn:aws:(?:iam::\d{12}:(?:root|user/.+|role/.+|federated-user/.+)"
                               r"|sts::\d{12}:(?:assumed-role|federated-user)/.+)")
_CANONICAL_RE = re.compile(r"[0-9a-f]{64}")


def _check_statement(statement: Statement, bucket: str) -> None:
    for principals in (statement.principal, statement.not_principal):
        if principals is not None:
            _check_principals(principals)
    actions = statement.action if statement.action is not None else statement.not_action or ()
    for value in actions:
        if not _actions_named(value):
            raise malformed(MESSAGES["action"])
    resources = statement.resource if statement.resource is not None else statement.not_resource or ()
    kinds: set[str] = set()
    for value in resources:
        kinds |= _resource_kinds(value, bucket)
    if statement.action is not None and statement.resource is not None:
        applicable = (OBJECT_ACTIONS if "object" in kinds else frozenset()) | \
                     (BUCKET_ACTIONS if "bucket" in kinds else frozenset())
        for value in statement.action:
            if value != "*" and not _actions_named(value) & applicable:
                raise malformed(MESSAGES["mismatch"])
    for condition in statement.conditions:
        _check_condition(condition)


def _check_principals(principals: Any) -> None:
    for ptype, values in principals.items():
        for value in values:
            if ptype == "*" or value == "*":
                continue
            if ptype == "AWS" and not (_ACCOUNT_RE.fullmatch(value) or _AWS_PRINCIPAL_RE.fullmatch(value)):
                raise malformed(MESSAGES["principal"])
            if ptype == "CanonicalUser" and not _CANONICAL_RE.fullmatch(value):
                raise malformed(MESSAGES["principal"])
            if not value:
                raise malformed(MESSAGES["principal"])


def _resource_kinds(value: str, bucket: str) -> set[str]:
    """``{"bucket"}``, ``{"object"}`` or both for a resource of this bucket; else "invalid resource"."""
    if not value.startswith(_ARN_PREFIX):
        raise malformed(MESSAGES["resource"])
    path = value[len(_ARN_PREFIX):]
    name, slash, _key = path.partition("/")
    if not name or not glob_match(name, bucket, ignore_case=True):
        raise malformed(MESSAGES["resource"])
    if slash:
        return {"object"}
    # A wildcard in the bucket part also spans the objects ("arn:aws:s3:::my-bucket*").
    return {"bucket", "object"} if "*" in name else {"bucket"}


def _check_condition(condition: Condition) -> None:
    if not _known_condition_key(condition.key):
        raise malformed(MESSAGES["condition_key"])
    if condition.key.lower() == "aws:sourceip" or condition.operator.endswith(("IpAddress", "IpAddressIfExists")):
        for value in condition.values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise malformed(MESSAGES["ip"]) from None


# ============================================================================ "public"
#
# S3 User Guide, "Blocking public access" > "The meaning of 'public'" > "Bucket policies": a policy
# is public unless every Allow statement grants access only to fixed values (no wildcard, no policy
# variable) of a principal, or is limited by a fixed value of one of the keys below; aws:SourceIp
# must be a set of CIDRs no broader than /8 (IPv4) or /32 (IPv6), RFC 1918 ranges excepted.

#: Condition keys whose fixed values make a wildcard principal non-public.
RESTRICTING_KEYS = frozenset(k.lower() for k in (
    "aws:SourceIp", "aws:SourceArn", "aws:SourceVpc", "aws:SourceVpce", "aws:SourceOwner", "aws:SourceAccount",
    "s3:x-amz-server-side-encryption-aws-kms-key-id", "aws:userid", "s3:DataAccessPointArn",
    "s3:DataAccessPointAccount", "aws:PrincipalAccount", "aws:PrincipalArn", "aws:PrincipalOrgID",
    "aws:SourceOrgID",
))
#: Operators that hold only when the request's value is one of the policy's.
_MATCHING_OPERATORS = frozenset(("StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike",
                                 "IpAddress", "ForAnyValue:StringEquals", "ForAnyValue:StringEqualsIgnoreCase",
                                 "ForAnyValue:StringLike", "ForAnyValue:ArnEquals", "ForAnyValue:ArnLike",
                                 "ForAnyValue:IpAddress"))
_PRIVATE_V4 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_ACCESS_POINT_RE = re.compile(r"arn:aws:s3:[a-z0-9-]+:\d{12}:accesspoint/.*")


def is_public(policy: Policy) -> bool:
    """GetBucketPolicyStatus's IsPublic: does any Allow statement grant public access?"""
    return any(s.effect == "Allow" and _statement_is_public(s) for s in policy.statements)


def _fixed(value: str) -> bool:
    return "*" not in value and "?" not in value and "${" not in value


def _statement_is_public(statement: Statement) -> bool:
    principals = statement.principal
    if principals is not None and _fixed_principals(principals):
        return False
    return not any(_restricts(c) for c in statement.conditions)


def _fixed_principals(principals: Any) -> bool:
    """Only named AWS principals, service principals or canonical users (a federated principal is anyone)."""
    for ptype, values in principals.items():
        if ptype not in ("AWS", "Service", "CanonicalUser") or not all(_fixed(v) for v in values):
            return False
    return True


def _restricts(condition: Condition) -> bool:
    key = condition.key.lower()
    if key not in RESTRICTING_KEYS or condition.operator not in _MATCHING_OPERATORS or not condition.values:
        return False
    if key == "aws:sourceip":
        return condition.operator.endswith("IpAddress") and all(_narrow_cidr(v) for v in condition.values)
    if condition.operator.endswith("IpAddress"):
        return False
    if key == "s3:dataaccesspointarn":
        # The access point's name may be a wildcard as long as the account is fixed.
        return all(_fixed(v) or (_ACCESS_POINT_RE.fullmatch(v) and _fixed(v.rsplit(":", 1)[0]))
                   for v in condition.values)
    return all(_fixed(v) for v in condition.values)


def _narrow_cidr(value: str) -> bool:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    if isinstance(network, ipaddress.IPv4Network):
        return network.prefixlen >= 8 or any(network.subnet_of(p) for p in _PRIVATE_V4)
    return network.prefixlen >= 32


# ============================================================================ handlers


@operation("s3")
def put_bucket_policy(ctx: RequestContext, params: dict[str, Any]) -> None:
    # ConfirmRemoveSelfBucketAccess is accepted and has nothing to confirm: the bucket owner's
    # account keeps its access whatever the policy says (as the root user does in S3).
    check_expected_owner(ctx, params)
    bucket = params["Bucket"]
    store(ctx).head_bucket(bucket)  # NoSuchBucket before any complaint about the document
    document = params.get("Policy") or ""
    check_policy(document, bucket)
    store(ctx).put_bucket_policy(bucket, document)
    ctx.platform.authorizer.policies_changed()


@operation("s3")
def get_bucket_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    return {"Policy": store(ctx).get_bucket_policy(params["Bucket"])}


@operation("s3")
def delete_bucket_policy(ctx: RequestContext, params: dict[str, Any]) -> None:
    check_expected_owner(ctx, params)
    store(ctx).delete_bucket_policy(params["Bucket"])
    ctx.platform.authorizer.policies_changed()


@operation("s3")
def get_bucket_policy_status(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_expected_owner(ctx, params)
    document = store(ctx).get_bucket_policy(params["Bucket"])
    try:
        public = is_public(parse_policy(document, "resource"))
    except PolicyError:  # stored before these checks existed: fail towards "public"
        public = True
    return {"PolicyStatus": {"IsPublic": public}}

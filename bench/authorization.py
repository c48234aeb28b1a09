"""The authorization step's CPU per request, in-process: cached decisions for a 20-statement policy.

Measures ``Authorizer.authorize`` for a signed InvokeEndpoint's checks as the gateway calls it:
- the admin key (the step's floor: one attribute test);
- a user whose policy has 20 statements (the issue's case), decided once and then cached;
- the same user with a condition on aws:SourceIp (the key's value joins the cache key);
- an uncached decision (a new resource each time), for scale.

Target (issue 16): <= 5 us per cached decision.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sagestack.services.iam  # noqa: E402,F401  (registers the handlers)
from sagestack.aws.context import RequestFacts  # noqa: E402
from sagestack.identity import Principal  # noqa: E402
from sagestack.services import lookup  # noqa: E402
from sagestack.testing.platforms import ACCOUNT_ID, admin_principal, bare_platform  # noqa: E402
from tests.unit.iam.support import make_ctx  # noqa: E402

FACTS = RequestFacts(source_ip="127.0.0.1", secure=False, region="us-east-1")
SERVICES = ["s3", "logs", "cloudwatch", "iam", "sts", "ecr", "ec2", "kms", "glue", "athena"]


def twenty_statements(condition: bool) -> str:
    service = [SERVICES[i % 10] for i in range(19)]
    statements = [{"Sid": f"S{i}", "Effect": "Allow", "Action": [f"{service[i]}:Get*", f"{service[i]}:List*"],
                   "Resource": f"arn:aws:{service[i]}:*:*:thing-{i}/*"} for i in range(19)]
    last = {"Sid": "Invoke", "Effect": "Allow", "Action": "sagemaker:InvokeEndpoint",
            "Resource": "arn:aws:sagemaker:*:*:endpoint/*"}
    if condition:
        last["Condition"] = {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}
    return json.dumps({"Version": "2012-10-17", "Statement": [*statements, last]})


def per_call(run: object, calls: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            run()  # type: ignore[operator]
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        platform = bare_platform(Path(tmp) / "data")
        ctx = make_ctx(platform.db, admin_principal())
        users = {}
        for name, condition in (("plain", False), ("conditional", True)):
            user = lookup("iam", "CreateUser")(ctx, {"UserName": name})["User"]
            policy = lookup("iam", "CreatePolicy")(ctx, {"PolicyName": f"p-{name}",
                                                         "PolicyDocument": twenty_statements(condition)})
            lookup("iam", "AttachUserPolicy")(ctx, {"UserName": name, "PolicyArn": policy["Policy"]["Arn"]})
            users[name] = Principal(ACCOUNT_ID, user["Arn"], user["UserId"], "AKIA", "user", name)
        authz = platform.authorizer
        params = {"EndpointName": "ep-1", "Body": b"1,2,3", "ContentType": "text/csv"}

        def call(who: Principal, p: dict = params) -> None:
            authz.authorize(who, "sagemaker-runtime", "InvokeEndpoint", p, FACTS)

        admin = admin_principal()
        results = {
            "admin key": per_call(lambda: call(admin), 200_000),
            "20 statements, cached": per_call(lambda: call(users["plain"]), 100_000),
            "20 statements + aws:SourceIp condition, cached": per_call(lambda: call(users["conditional"]), 100_000),
        }
        counter = iter(range(10**9))
        results["20 statements, uncached (new resource each call)"] = per_call(
            lambda: call(users["plain"], {**params, "EndpointName": f"ep-{next(counter)}"}), 2_000)
        for label, micros in results.items():
            print(f"authorize, InvokeEndpoint, {label:50s} {micros:7.2f} us per call")
        ratio = results["20 statements, cached"] / results["admin key"]
        print(f"cached 20-statement decision / admin key = {ratio:.1f} (target: <= 5 us cached)")
        platform.db.dispose()


if __name__ == "__main__":
    main()

"""Notebook pieces that need no server: signed tokens, instance sizing, the SDK patch, proxy helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sagestack.control.notebooks import (
    SITE_DIR,
    instance_memory_mib,
    instance_vcpus,
    lifecycle_reason,
    memory_victim,
)
from sagestack.logic.notebook_tokens import Claims, TokenSigner
from sagestack.web.notebook_proxy import _cookie_values, _other_cookies, _split


def test_tokens_verify_only_when_genuine_unexpired_and_of_their_kind(tmp_path: Path) -> None:
    signer = TokenSigner(tmp_path / "key")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    token = signer.presign("nb1", 123, 1800)
    claims = signer.verify(token, "url")
    assert claims is not None and (claims.name, claims.stamp, claims.session_seconds) == ("nb1", 123, 1800)
    assert signer.verify(token, "session") is None
    assert signer.verify(token, "url", now=time.time() + 301) is None
    payload, signature = token.split(".")
    assert signer.verify(f"{payload}.{signature[::-1]}", "url") is None
    assert signer.verify(f"{payload[:-1]}A.{signature}", "url") is None
    assert signer.verify("garbage", "url") is None and signer.verify("", "url") is None
    assert TokenSigner(tmp_path / "other-key").verify(token, "url") is None
    assert TokenSigner(tmp_path / "key").verify(token, "url") == claims  # the key survives restarts
    session = signer.session_for(claims)
    assert signer.verify(session, "session").expires >= int(time.time()) + 1799
    expired = signer.issue(Claims("session", "nb1", 123, int(time.time()) - 1))
    assert signer.verify(expired, "session") is None


def test_instance_vcpus_follow_ec2_sizes() -> None:
    assert [instance_vcpus(t) for t in ("ml.t2.medium", "ml.t3.medium", "ml.r5.large", "ml.m5.xlarge",
                                        "ml.m5.2xlarge", "ml.c5.9xlarge", "ml.m5.24xlarge")] == [2, 2, 2, 4, 8, 36, 96]


def test_instance_memory_and_the_process_an_oom_kills() -> None:
    gib = {t: instance_memory_mib(t) // 1024 for t in ("ml.t3.medium", "ml.t3.xlarge", "ml.m5.xlarge", "ml.c5.2xlarge",
                                                       "ml.r5.large", "ml.m5.24xlarge")}
    assert gib == {"ml.t3.medium": 4, "ml.t3.xlarge": 16, "ml.m5.xlarge": 16, "ml.c5.2xlarge": 16,
                   "ml.r5.large": 16, "ml.m5.24xlarge": 384}
    assert memory_victim({1: 100, 2: 300, 3: 200}, root=1, limit_bytes=600) is None
    assert memory_victim({1: 100, 2: 300, 3: 250}, root=1, limit_bytes=600) == 2
    assert memory_victim({1: 700}, root=1, limit_bytes=600) is None  # never the Jupyter server itself


def test_lifecycle_failure_reasons_use_sagemaker_words() -> None:
    reason = lifecycle_reason("arn:lcc", "arn:nb", timed_out=True)
    assert reason.startswith("Notebook Instance Lifecycle Config 'arn:lcc' for Notebook Instance 'arn:nb' took "
                             "longer than 5 minutes. Please check your CloudWatch logs")
    assert "'arn:nb' failed. Please check" in lifecycle_reason("arn:lcc", "arn:nb", timed_out=False)


def test_sitecustomize_points_the_sdk_at_the_instance_metadata(tmp_path: Path) -> None:
    metadata = tmp_path / "resource-metadata.json"
    metadata.write_text('{"ExecutionRoleArn": "arn:aws:iam::123456789012:role/service-role/R"}')
    env = {**os.environ, "PYTHONPATH": str(SITE_DIR), "SAGESTACK_NOTEBOOK_METADATA_FILE": str(metadata),
           "SAGEMAKER_SUPPRESS_V2_WARNING": "1", "AWS_DEFAULT_REGION": "us-east-1"}
    code = ("import sagemaker.session as s\nprint(s.NOTEBOOK_METADATA_FILE)\n"
            "print(s.Session.get_caller_identity_arn(object.__new__(s.Session)))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == [str(metadata), "arn:aws:iam::123456789012:role/service-role/R"]


def test_proxy_path_and_cookie_helpers() -> None:
    assert _split("/_sagestack/notebooks/nb1") == ("nb1", "")
    assert _split("/_sagestack/notebooks/nb1/lab/tree") == ("nb1", "/lab/tree")
    assert _split("/_sagestack/notebooks/") == ("", "")
    header = "_xsrf=abc; sagestack-notebook=one; username-x=2; sagestack-notebook=two"
    assert _cookie_values(header) == ["one", "two"]
    assert _other_cookies(header) == "_xsrf=abc; username-x=2"

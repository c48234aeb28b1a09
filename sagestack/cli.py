"""``sagestack`` command line: ``server`` runs the platform, ``env`` points clients at it."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from sagestack import __version__
from sagestack.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_REGION, Settings, default_data_dir
from sagestack.identity import read_credentials_file


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagestack", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sagestack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser("server", help="run the platform in the foreground")
    server.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: loopback only)")
    server.add_argument("--port", type=int, default=DEFAULT_PORT)
    server.add_argument("--runtime-port", type=int, default=0,
                        help="port of the sagemaker-runtime endpoint (InvokeEndpoint); default: any free port")
    workers = os.environ.get("SAGESTACK_RUNTIME_WORKERS")
    server.add_argument("--runtime-workers", type=int, default=int(workers) if workers else None,
                        help="extra processes serving the runtime port (default: one per core beyond the first, "
                             "at most 3; 0: none; or $SAGESTACK_RUNTIME_WORKERS)")
    server.add_argument("--data-dir", type=Path, default=None, help="default: ./.sagestack or $SAGESTACK_DATA_DIR")
    server.add_argument("--db", default=None, help="SQLAlchemy URL of the metadata store (default: SQLite)")
    server.add_argument("--region", default=DEFAULT_REGION)
    server.add_argument("--tls", action="store_true", help="serve HTTPS (self-signed CA in the data dir)")
    server.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain to serve")
    server.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    server.add_argument("--s3-endpoint", default=os.environ.get("SAGESTACK_S3_ENDPOINT"),
                        help="external mode: keep buckets and objects in this S3-compatible endpoint")
    server.add_argument("--s3-access-key", default=os.environ.get("SAGESTACK_S3_ACCESS_KEY"),
                        help="access key for --s3-endpoint (default: $SAGESTACK_S3_ACCESS_KEY)")
    server.add_argument("--s3-secret-key", default=os.environ.get("SAGESTACK_S3_SECRET_KEY"),
                        help="secret key for --s3-endpoint (default: $SAGESTACK_S3_SECRET_KEY; prefer the "
                             "variable: arguments are visible to other users)")
    server.add_argument("--s3-ca-bundle", type=Path, default=None, help="CA bundle for an HTTPS --s3-endpoint")

    env = commands.add_parser("env", help="print export lines that point AWS clients at the server")
    env.add_argument("--data-dir", type=Path, default=None)

    role = commands.add_parser("role", help="IAM roles for SageMaker work")
    role_commands = role.add_subparsers(dest="role_command", required=True)
    create = role_commands.add_parser("create", help="create an execution role as the SageMaker console does")
    which = create.add_mutually_exclusive_group(required=True)
    which.add_argument("--any-bucket", action="store_true", help="the role may use any S3 bucket")
    which.add_argument("--buckets", help="comma-separated: the only S3 buckets the role may use (besides "
                                         "buckets with 'sagemaker' in their names)")
    create.add_argument("--data-dir", type=Path, default=None)
    return parser


def _server(args: argparse.Namespace) -> int:
    from sagestack.server import serve

    if (args.tls_cert is None) != (args.tls_key is None):
        print("sagestack: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    settings = Settings(
        data_dir=args.data_dir or default_data_dir(),
        host=args.host,
        port=args.port,
        runtime_port=args.runtime_port,
        runtime_workers=args.runtime_workers,
        db_url=args.db,
        region=args.region,
        tls=args.tls or args.tls_cert is not None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        s3_endpoint=args.s3_endpoint,
        s3_access_key=args.s3_access_key,
        s3_secret_key=args.s3_secret_key,
        s3_ca_bundle=args.s3_ca_bundle,
    )
    serve(settings)
    return 0


def env_lines(data_dir: Path) -> list[str]:
    settings = Settings(data_dir=data_dir)
    if not settings.credentials_file.exists():
        raise FileNotFoundError(
            f"no credentials in {settings.data_dir}: start `sagestack server --data-dir {data_dir}` first"
        )
    creds = read_credentials_file(settings.credentials_file)
    info: dict[str, str] = {}
    if settings.address_file.exists():
        info = json.loads(settings.address_file.read_text())
    values = {
        "AWS_ENDPOINT_URL": info.get("url", f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"),
        "AWS_ACCESS_KEY_ID": creds["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": info.get("region", creds.get("region", DEFAULT_REGION)),
        "AWS_REGION": info.get("region", creds.get("region", DEFAULT_REGION)),
    }
    if info.get("runtime_url"):
        # boto3, the AWS CLI and the SDK send sagemaker-runtime calls here instead of AWS_ENDPOINT_URL.
        values["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = info["runtime_url"]
    if info.get("ca_bundle"):
        values["AWS_CA_BUNDLE"] = info["ca_bundle"]
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


def _env(args: argparse.Namespace) -> int:
    try:
        lines = env_lines(args.data_dir or default_data_dir())
    except FileNotFoundError as exc:
        print(f"sagestack: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _role_create(args: argparse.Namespace) -> int:
    """Through the running server's IAM API, as its admin (the same calls the console makes)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from sagestack.authz.role_templates import create_execution_role

    try:
        values = dict(line.removeprefix("export ").split("=", 1) for line in env_lines(args.data_dir or
                                                                                        default_data_dir()))
    except FileNotFoundError as exc:
        print(f"sagestack: {exc}", file=sys.stderr)
        return 1
    values = {name: shlex.split(value)[0] for name, value in values.items()}
    buckets = None if args.any_bucket else [b.strip() for b in args.buckets.split(",") if b.strip()]
    if buckets == []:
        print("sagestack: --buckets names no bucket", file=sys.stderr)
        return 2
    iam = boto3.client("iam", endpoint_url=values["AWS_ENDPOINT_URL"], region_name=values["AWS_DEFAULT_REGION"],
                       aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"], verify=values.get("AWS_CA_BUNDLE", True))
    try:
        arn = create_execution_role(iam, buckets, datetime.now(UTC))
    except (BotoCoreError, ClientError) as exc:
        print(f"sagestack: could not create the role: {exc}", file=sys.stderr)
        return 1
    print(arn)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "server":
        return _server(args)
    if args.command == "role":
        return _role_create(args)
    return _env(args)


if __name__ == "__main__":
    raise SystemExit(main())

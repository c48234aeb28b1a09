"""Endpoints and batch transform with boto3 over real sockets: states, routing, failures, recovery."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import psutil
import pytest
from botocore.exceptions import ClientError

from sagestack.testing.server_process import ServerProcess
from tests.integration.training_support import (
    XGBOOST_IMAGE,
    adult_bucket,
    channel,
    execution_role,
    training_request,
    unique,
    wait_for_job,
)


@pytest.fixture(scope="module")
def trained(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = adult_bucket(server, tmp_path_factory.mktemp("adult-ep"))
    data["role"] = execution_role(server)
    sm = server.client("sagemaker")
    name = unique("ep-train")
    hps = {"objective": "binary:logistic", "num_round": "20", "max_depth": "4"}
    sm.create_training_job(**training_request(name, data["role"], data["bucket"], [
        channel("train", data["uris"]["train"]), channel("validation", data["uris"]["validation"])], hps))
    job = wait_for_job(sm, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    data["model_data"] = job["ModelArtifacts"]["S3ModelArtifacts"]
    table = np.loadtxt(data["local"]["test"], delimiter=",", dtype=np.float32)
    data["features"] = table[:, 1:]
    return data


def _model(server: ServerProcess, trained: dict[str, Any], **container: Any) -> str:
    name = unique("model")
    server.client("sagemaker").create_model(
        ModelName=name, ExecutionRoleArn=trained["role"],
        PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": trained["model_data"], **container})
    return name


def _endpoint(server: ServerProcess, variants: list[dict[str, Any]]) -> tuple[str, str]:
    sm = server.client("sagemaker")
    config, name = unique("cfg"), unique("ep")
    sm.create_endpoint_config(EndpointConfigName=config, ProductionVariants=variants)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    return name, config


def _wait(server: ServerProcess, name: str, timeout: float = 60) -> dict[str, Any]:
    sm = server.client("sagemaker")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        endpoint = sm.describe_endpoint(EndpointName=name)
        if endpoint["EndpointStatus"] not in ("Creating", "Updating"):
            return endpoint
        time.sleep(0.1)
    raise TimeoutError(name)


def _variant(model: str, name: str = "AllTraffic", count: int = 1, weight: float = 1.0) -> dict[str, Any]:
    return {"VariantName": name, "ModelName": model, "InitialInstanceCount": count,
            "InstanceType": "ml.m4.xlarge", "InitialVariantWeight": weight}


def _csv(rows: np.ndarray) -> str:
    return "\n".join(",".join(f"{v:.9g}" for v in row) for row in rows)


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> dict[str, Any]:
    """Code and Message, plus the modeled members botocore puts beside them (OriginalStatusCode, ...)."""
    response = excinfo.value.response
    extra = {k: v for k, v in response.items() if k not in ("Error", "ResponseMetadata")}
    return {**extra, **response["Error"], "status": response["ResponseMetadata"]["HTTPStatusCode"]}


def test_lifecycle_describe_invoke_delete(server: ServerProcess, trained: dict[str, Any]) -> None:
    sm, runtime = server.client("sagemaker"), server.client("sagemaker-runtime")
    model = _model(server, trained)
    started = time.monotonic()
    name, config = _endpoint(server, [_variant(model)])
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] in ("Creating", "InService")
    endpoint = _wait(server, name)
    assert endpoint["EndpointStatus"] == "InService", endpoint.get("FailureReason")
    assert time.monotonic() - started < 30
    [variant] = endpoint["ProductionVariants"]
    assert variant["CurrentInstanceCount"] == variant["DesiredInstanceCount"] == 1
    assert variant["CurrentWeight"] == 1.0
    assert "DataCaptureConfig" not in endpoint  # absent, never {}
    described = sm.describe_endpoint_config(EndpointConfigName=config)
    assert described["ProductionVariants"][0]["ModelName"] == model
    assert sm.describe_model(ModelName=model)["PrimaryContainer"]["ModelDataUrl"] == trained["model_data"]

    response = runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=_csv(trained["features"][:3]),
                                       CustomAttributes="trace=1", InferenceId="req-42")
    scores = [float(v) for v in response["Body"].read().decode().split()]
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["ContentType"].startswith("text/csv")
    as_json = runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Accept="application/json",
                                      Body=_csv(trained["features"][:2]))
    assert [p["score"] for p in json.loads(as_json["Body"].read())["predictions"]] == pytest.approx(scores[:2])
    # The same rows in the other input formats, and JSON Lines out.
    rows = trained["features"][:2].tolist()
    for content_type, body in (("application/json", json.dumps({"instances": [{"features": r} for r in rows]})),
                               ("application/jsonlines", "\n".join(json.dumps(r) for r in rows))):
        answer = runtime.invoke_endpoint(EndpointName=name, ContentType=content_type, Body=body,
                                         Accept="application/jsonlines")
        lines = answer["Body"].read().decode().splitlines()
        assert [json.loads(line)["score"] for line in lines] == pytest.approx(scores[:2], abs=1e-6), content_type
    sparse = " ".join(f"{i}:{v:.9g}" for i, v in enumerate(rows[0]) if v != 0)
    answer = runtime.invoke_endpoint(EndpointName=name, ContentType="text/libsvm", Body=f"0 {sparse}")
    assert 0 <= float(answer["Body"].read()) <= 1  # absent entries are missing values, not zeros
    assert any(c["EndpointConfigName"] == config for c in sm.list_endpoint_configs()["EndpointConfigs"])
    assert any(e["EndpointName"] == name for e in sm.list_endpoints()["Endpoints"])
    assert any(m["ModelName"] == model for m in sm.list_models()["Models"])

    logs = server.client("logs").describe_log_streams(logGroupName=f"/aws/sagemaker/Endpoints/{name}")
    assert logs["logStreams"][0]["logStreamName"].startswith("AllTraffic/i-")

    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    sm.delete_endpoint_config(EndpointConfigName=config)
    sm.delete_model(ModelName=model)
    for call, kwargs in ((sm.describe_endpoint, {"EndpointName": name}),
                         (sm.describe_endpoint_config, {"EndpointConfigName": config}),
                         (sm.describe_model, {"ModelName": model})):
        with pytest.raises(ClientError) as excinfo:
            call(**kwargs)
        error = _error(excinfo)
        assert error["Code"] == "ValidationException" and error["Message"].startswith("Could not find")


def test_unknown_endpoint_and_bad_requests(server: ServerProcess, trained: dict[str, Any]) -> None:
    sm, runtime = server.client("sagemaker"), server.client("sagemaker-runtime")
    with pytest.raises(ClientError) as excinfo:
        runtime.invoke_endpoint(EndpointName="no-such-endpoint", ContentType="text/csv", Body="1,2")
    error = _error(excinfo)
    assert (error["status"], error["Code"]) == (400, "ValidationError") and "not found" in error["Message"]
    model = _model(server, trained)
    with pytest.raises(ClientError) as excinfo:
        sm.create_model(ModelName=model, ExecutionRoleArn=trained["role"],
                        PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": trained["model_data"]})
    assert "already existing model" in _error(excinfo)["Message"]
    with pytest.raises(ClientError) as excinfo:
        sm.create_endpoint_config(EndpointConfigName=unique("cfg"), ProductionVariants=[_variant("missing-model")])
    assert _error(excinfo)["Message"].startswith("Could not find model")
    with pytest.raises(ClientError) as excinfo:
        sm.create_endpoint(EndpointName=unique("ep"), EndpointConfigName="missing-config")
    assert _error(excinfo)["Message"].startswith("Could not find endpoint configuration")


def test_bad_payloads_are_model_errors(server: ServerProcess, trained: dict[str, Any]) -> None:
    """Each bad payload gets the container's status and message, wrapped in a 424 ModelError by the runtime."""
    runtime = server.client("sagemaker-runtime")
    name, _ = _endpoint(server, [_variant(_model(server, trained))])
    assert _wait(server, name)["EndpointStatus"] == "InService"
    width = trained["features"].shape[1]
    row = _csv(trained["features"][:1])
    cases = [
        ("wrong feature count", "text/csv", ",".join(["1"] * (width + 5)), "text/csv", 400,
         f"Unable to evaluate payload provided: Feature size of csv inference data {width + 5} is not "
         f"consistent with feature size of trained model {width}."),
        ("text in a number", "text/csv", ",".join(["abc"] * width), "text/csv", 415,
         "Loading csv data failed with Exception, please ensure data is in csv format:"),
        ("unsupported content type", "application/x-image", "abc", "text/csv", 415,
         "application/x-image is not an accepted ContentType: "),
        ("unsupported accept", "text/csv", row, "text/html", 406,
         "Accept type text/html is not supported. Please use supported accept types: "),
    ]
    for label, content_type, body, accept, status, message in cases:
        with pytest.raises(ClientError) as excinfo:
            runtime.invoke_endpoint(EndpointName=name, ContentType=content_type, Accept=accept, Body=body)
        error = _error(excinfo)
        assert (error["status"], error["Code"]) == (424, "ModelError"), label
        assert error["OriginalStatusCode"] == status, (label, error)
        assert error["OriginalMessage"].startswith(message), (label, error["OriginalMessage"])
        assert error["Message"].startswith(f"Received client error ({status}) from primary with message"), label
        assert f"/aws/sagemaker/Endpoints/{name}" in error["Message"], label
    # An empty body: the container answers 204 (no content); the caller gets an empty 200.
    empty = runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=b"")
    assert empty["ResponseMetadata"]["HTTPStatusCode"] == 200 and empty["Body"].read() == b""
    with pytest.raises(ClientError) as excinfo:
        runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=b"1" * (6 * 1024 * 1024 + 1))
    error = _error(excinfo)
    assert (error["status"], error["Code"]) == (400, "ValidationError")
    assert error["Message"] == ("1 validation error detected: Value 'java.nio.HeapByteBuffer' at 'body' failed to "
                                "satisfy constraint: Member must have length less than or equal to 6291456")
    server.client("sagemaker").delete_endpoint(EndpointName=name)


def test_weighted_variants_and_update(server: ServerProcess, trained: dict[str, Any]) -> None:
    sm, runtime = server.client("sagemaker"), server.client("sagemaker-runtime")
    model = _model(server, trained)
    name, _ = _endpoint(server, [_variant(model, "A", weight=3.0), _variant(model, "B", weight=1.0)])
    assert _wait(server, name)["EndpointStatus"] == "InService"
    body = _csv(trained["features"][:1])
    seen = [runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=body)["InvokedProductionVariant"]
            for _ in range(200)]
    assert 100 < seen.count("A") < 190 and seen.count("B") > 10
    targeted = runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=body, TargetVariant="B")
    assert targeted["InvokedProductionVariant"] == "B"
    sm.update_endpoint_weights_and_capacities(EndpointName=name, DesiredWeightsAndCapacities=[
        {"VariantName": "A", "DesiredWeight": 0.0}, {"VariantName": "B", "DesiredInstanceCount": 2}])
    endpoint = _wait(server, name)
    variants = {v["VariantName"]: v for v in endpoint["ProductionVariants"]}
    assert variants["B"]["CurrentInstanceCount"] == 2 and variants["A"]["CurrentWeight"] == 0.0
    assert {runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=body)["InvokedProductionVariant"]
            for _ in range(20)} == {"B"}

    # UpdateEndpoint: the old configuration keeps serving until the new one is InService.
    new_config = unique("cfg2")
    sm.create_endpoint_config(EndpointConfigName=new_config, ProductionVariants=[_variant(model, "C")])
    sm.update_endpoint(EndpointName=name, EndpointConfigName=new_config)
    during = []
    while sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Updating":
        during.append(runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv",
                                              Body=body)["ResponseMetadata"]["HTTPStatusCode"])
    assert set(during) <= {200}
    endpoint = sm.describe_endpoint(EndpointName=name)
    assert endpoint["EndpointConfigName"] == new_config
    assert runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv",
                                   Body=body)["InvokedProductionVariant"] == "C"
    sm.delete_endpoint(EndpointName=name)


def test_killed_instance_loses_no_request(server: ServerProcess, trained: dict[str, Any]) -> None:
    runtime = server.client("sagemaker-runtime")
    name, _ = _endpoint(server, [_variant(_model(server, trained), count=2)])
    assert _wait(server, name)["EndpointStatus"] == "InService"
    servers = _model_servers(server, name)
    assert len(servers) == 2, servers
    body = _csv(trained["features"][:1])
    failures: list[Exception] = []
    done = threading.Event()
    count = [0]

    def stream() -> None:
        while not done.is_set():
            try:
                runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=body)
                count[0] += 1
            except Exception as exc:
                failures.append(exc)

    workers = [threading.Thread(target=stream) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    killed_at = time.monotonic()
    os.kill(servers[0], signal.SIGKILL)
    replaced = None
    while time.monotonic() - killed_at < 15 and replaced is None:
        if set(_model_servers(server, name)) - set(servers):
            replaced = time.monotonic() - killed_at
        time.sleep(0.05)
    time.sleep(1.0)
    done.set()
    for worker in workers:
        worker.join()
    assert not failures, failures[:3]
    assert count[0] > 50
    assert replaced is not None and replaced < 5.0, replaced
    server.client("sagemaker").delete_endpoint(EndpointName=name)


def test_endpoint_with_broken_model_fails(server: ServerProcess, trained: dict[str, Any]) -> None:
    s3 = server.client("s3")
    s3.put_object(Bucket=trained["bucket"], Key="broken/model.tar.gz", Body=b"not a tarball")
    name = unique("model")
    server.client("sagemaker").create_model(
        ModelName=name, ExecutionRoleArn=trained["role"],
        PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": f"s3://{trained['bucket']}/broken/model.tar.gz"})
    endpoint, _ = _endpoint(server, [_variant(name)])
    described = _wait(server, endpoint)
    assert described["EndpointStatus"] == "Failed"
    assert "tar.gz" in described["FailureReason"]


def test_batch_transform_filters_and_join(server: ServerProcess, trained: dict[str, Any]) -> None:
    sm, s3 = server.client("sagemaker"), server.client("s3")
    bucket = trained["bucket"]
    rows = trained["features"][:50]
    labelled = np.hstack([np.arange(50).reshape(-1, 1), rows])  # an id column the model must not see
    s3.put_object(Bucket=bucket, Key="bt/in/part-1.csv", Body=_csv(labelled).encode() + b"\n")
    model = _model(server, trained)
    name = unique("bt")
    sm.create_transform_job(
        TransformJobName=name, ModelName=model, MaxPayloadInMB=1, BatchStrategy="MultiRecord",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/bt/in"}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": f"s3://{bucket}/bt/out", "AssembleWith": "Line", "Accept": "text/csv"},
        TransformResources={"InstanceType": "ml.m4.xlarge", "InstanceCount": 1},
        DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
    )
    job = _wait_transform(sm, name)
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    out = s3.get_object(Bucket=bucket, Key="bt/out/part-1.csv.out")["Body"].read().decode().splitlines()
    assert len(out) == 50
    ids = [float(line.split(",")[0]) for line in out]
    assert ids == list(range(50)) and all(0 <= float(line.split(",")[1]) <= 1 for line in out)
    streams = server.client("logs").describe_log_streams(logGroupName="/aws/sagemaker/TransformJobs",
                                                         logStreamNamePrefix=f"{name}/")
    assert len(streams["logStreams"]) == 1


def test_batch_transform_bad_record_names_file_and_line(server: ServerProcess, trained: dict[str, Any]) -> None:
    sm, s3 = server.client("sagemaker"), server.client("s3")
    bucket = trained["bucket"]
    lines = [_csv(trained["features"][i:i + 1]) for i in range(5)]
    lines[3] = ",".join(["oops"] * trained["features"].shape[1])
    s3.put_object(Bucket=bucket, Key="bad-bt/in/data.csv", Body="\n".join(lines).encode())
    name = unique("bt-bad")
    sm.create_transform_job(
        TransformJobName=name, ModelName=_model(server, trained),
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                        "S3Uri": f"s3://{bucket}/bad-bt/in"}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": f"s3://{bucket}/bad-bt/out"},
        TransformResources={"InstanceType": "ml.m4.xlarge", "InstanceCount": 1},
    )
    job = _wait_transform(sm, name)
    assert job["TransformJobStatus"] == "Failed"
    assert "data.csv" in job["FailureReason"] and "line 4" in job["FailureReason"], job["FailureReason"]


def test_batch_transform_whole_files_single_records_and_stop(server: ServerProcess, trained: dict[str, Any]) -> None:
    """SplitType None (each file one request), SingleRecord, two files at once; StopTransformJob ends a job
    Stopped, and stopping it again is refused."""
    sm, s3 = server.client("sagemaker"), server.client("s3")
    bucket, rows = trained["bucket"], trained["features"]
    for index in range(2):
        body = _csv(rows[index * 20:(index + 1) * 20]).encode()
        s3.put_object(Bucket=bucket, Key=f"whole/in/f{index}.csv", Body=body)
    name = unique("bt-whole")
    model = _model(server, trained)
    sm.create_transform_job(
        TransformJobName=name, ModelName=model, BatchStrategy="SingleRecord", MaxConcurrentTransforms=2,
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/whole/in"}},
                        "ContentType": "text/csv", "SplitType": "None"},
        TransformOutput={"S3OutputPath": f"s3://{bucket}/whole/out", "Accept": "text/csv"},
        TransformResources={"InstanceType": "ml.m4.xlarge", "InstanceCount": 1},
    )
    job = _wait_transform(sm, name)
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    assert job["MaxConcurrentTransforms"] == 2 and job["BatchStrategy"] == "SingleRecord"
    runtime = server.client("sagemaker-runtime")
    endpoint, _ = _endpoint(server, [_variant(model)])
    assert _wait(server, endpoint)["EndpointStatus"] == "InService"
    for index in range(2):
        out = s3.get_object(Bucket=bucket, Key=f"whole/out/f{index}.csv.out")["Body"].read().decode().split()
        online = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv",
                                         Body=_csv(rows[index * 20:(index + 1) * 20]))["Body"].read().decode().split()
        assert len(out) == 20 and np.allclose([float(v) for v in out], [float(v) for v in online], atol=1e-6)
    sm.delete_endpoint(EndpointName=endpoint)

    for index in range(30):  # enough single records that the stop arrives mid-job
        s3.put_object(Bucket=bucket, Key=f"stop/in/f{index}.csv", Body=_csv(rows[:200]).encode())
    stopped = unique("bt-stop")
    sm.create_transform_job(
        TransformJobName=stopped, ModelName=model, BatchStrategy="SingleRecord",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/stop/in"}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": f"s3://{bucket}/stop/out"},
        TransformResources={"InstanceType": "ml.m4.xlarge", "InstanceCount": 1},
    )
    sm.stop_transform_job(TransformJobName=stopped)
    assert sm.describe_transform_job(TransformJobName=stopped)["TransformJobStatus"] in ("Stopping", "Stopped")
    assert _wait_transform(sm, stopped)["TransformJobStatus"] == "Stopped"
    with pytest.raises(ClientError) as excinfo:
        sm.stop_transform_job(TransformJobName=stopped)
    error = _error(excinfo)
    assert (error["status"], error["Code"]) == (400, "ValidationException")
    assert error["Message"] == "The request was rejected because the transform job is in status Stopped."


def _model_servers(server: ServerProcess, endpoint: str) -> list[int]:
    """Live model-server processes of one endpoint (they run in a directory under endpoints/<name>/)."""
    assert server.proc is not None
    found = []
    for process in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and f"/endpoints/{endpoint}/" in process.cwd() + "/":
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def _wait_transform(sm: Any, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = sm.describe_transform_job(TransformJobName=name)
        if job["TransformJobStatus"] not in ("InProgress", "Stopping"):
            return job
        time.sleep(0.2)
    raise TimeoutError(name)


def _small_endpoint(server: ServerProcess, workdir: Any) -> tuple[str, dict[str, Any]]:
    """On a server of a test's own: the Adult data, a 5-round model and an InService endpoint of it."""
    data = adult_bucket(server, workdir / "adult")
    role = execution_role(server)
    sm = server.client("sagemaker")
    job = unique("small")
    sm.create_training_job(**training_request(job, role, data["bucket"], [
        channel("train", data["uris"]["train"])], {"objective": "binary:logistic", "num_round": "5"}))
    trained = {"role": role, "model_data": wait_for_job(sm, job)["ModelArtifacts"]["S3ModelArtifacts"]}
    name, _ = _endpoint(server, [_variant(_model(server, trained))])
    assert _wait(server, name)["EndpointStatus"] == "InService"
    return name, data


def test_sdk_predictor_over_https(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's Predictor against an https:// server, trusting its CA through AWS_CA_BUNDLE."""
    from urllib.parse import urlsplit

    import boto3
    import sagemaker
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import CSVSerializer

    from tests.integration.training_support import point_sdk_at

    tls = ServerProcess(tmp_path / "tls-data", tls=True, extra_args=["--runtime-workers", "1"]).start()
    try:
        assert tls.url.startswith("https://") and "AWS_CA_BUNDLE" in tls.env
        name, data = _small_endpoint(tls, tmp_path)
        port = urlsplit(tls.endpoint_url("sagemaker-runtime")).port
        assert port is not None
        _await_serving_worker(tls, port)
        point_sdk_at(tls, data["bucket"], tmp_path, monkeypatch)
        features = np.loadtxt(data["local"]["test"], delimiter=",", dtype=np.float32)[:5, 1:]
        answers = set()
        for _ in range(4):  # fresh sessions, fresh connections: the main process and the worker in turn
            # A fresh boto3 session: the process-wide default one may hold another server's credentials.
            session = sagemaker.Session(boto_session=boto3.Session())
            predictor = Predictor(name, sagemaker_session=session, serializer=CSVSerializer())
            scores = predictor.predict(features).decode().split()
            assert len(scores) == 5 and all(0 <= float(s) <= 1 for s in scores)
            answers.add(tuple(scores))
        assert len(answers) == 1
    finally:
        tls.stop()


# --------------------------------------------------------------------------- the runtime port


def _signed_invoke(server: ServerProcess, endpoint: str, body: bytes) -> bytes:
    """One InvokeEndpoint as raw HTTP/1.1 bytes, signed by botocore for the runtime port."""
    from urllib.parse import urlsplit

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = server.endpoint_url("sagemaker-runtime")
    request = AWSRequest("POST", f"{url}/endpoints/{endpoint}/invocations", data=body,
                         headers={"Content-Type": "text/csv", "Accept": "text/csv"})
    SigV4Auth(Credentials(server.env["AWS_ACCESS_KEY_ID"], server.env["AWS_SECRET_ACCESS_KEY"]),
              "sagemaker", server.env["AWS_DEFAULT_REGION"]).add_auth(request)
    lines = [f"POST /endpoints/{endpoint}/invocations HTTP/1.1", f"Host: {urlsplit(url).netloc}",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _raw_exchange(server: ServerProcess, payload: bytes, responses: int) -> list[tuple[int, bytes, bytes]]:
    """Send ``payload`` on one connection and read ``responses`` answers: (status, head, body)."""
    import http.client
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(server.endpoint_url("sagemaker-runtime"))
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(payload)
        reader = sock.makefile("rb")
        answers = []
        for _ in range(responses):
            status = int(reader.readline().split()[1])
            head = http.client.parse_headers(reader)
            answers.append((status, bytes(head), reader.read(int(head["Content-Length"]))))
        return answers


def test_runtime_port_serves_invoke_like_the_main_port(server: ServerProcess, trained: dict[str, Any]) -> None:
    assert server.endpoint_url("sagemaker-runtime") != server.url  # `sagestack env` names the runtime port
    name, _ = _endpoint(server, [_variant(_model(server, trained))])
    assert _wait(server, name)["EndpointStatus"] == "InService"
    body = _csv(trained["features"][:4])
    via_runtime = server.client("sagemaker-runtime").invoke_endpoint(EndpointName=name, ContentType="text/csv",
                                                                     Body=body)
    via_main = server.client("sagemaker-runtime", endpoint_url=server.url).invoke_endpoint(
        EndpointName=name, ContentType="text/csv", Body=body)
    assert via_runtime["Body"].read() == via_main["Body"].read()
    assert via_runtime["InvokedProductionVariant"] == via_main["InvokedProductionVariant"] == "AllTraffic"

    # Keep-alive and pipelining: two signed requests in one write come back in order on one connection.
    one, two = _csv(trained["features"][:1]).encode(), _csv(trained["features"][1:3]).encode()
    answers = _raw_exchange(server, _signed_invoke(server, name, one) + _signed_invoke(server, name, two), 2)
    assert [status for status, _, _ in answers] == [200, 200]
    assert len(answers[0][2].split()) == 1 and len(answers[1][2].split()) == 2
    assert b"x-amzn-invoked-production-variant: alltraffic" in answers[0][1].lower()


def test_runtime_port_refuses_what_it_does_not_serve(server: ServerProcess) -> None:
    runtime_url = server.endpoint_url("sagemaker-runtime")
    with pytest.raises(ClientError) as excinfo:
        server.client("sts", endpoint_url=runtime_url).get_caller_identity()
    error = _error(excinfo)
    assert (error["status"], error["Code"]) == (404, "UnknownOperationException")
    assert "AWS_ENDPOINT_URL" in error["Message"]
    with pytest.raises(ClientError) as excinfo:
        server.client("sagemaker-runtime", aws_secret_access_key="x" * 40).invoke_endpoint(
            EndpointName="any", ContentType="text/csv", Body="1")
    assert (_error(excinfo)["status"], _error(excinfo)["Code"]) == (403, "InvalidSignatureException")
    with pytest.raises(ClientError) as excinfo:
        server.client("sagemaker-runtime").invoke_endpoint(EndpointName="any", ContentType="text/csv",
                                                           Body=b"1," * (3 * 1024 * 1024 + 10))
    error = _error(excinfo)
    assert (error["status"], error["Code"]) == (400, "ValidationError") and "6291456" in error["Message"]
    # Past the port's buffering limit the body is not read at all: a plain 413, and the connection ends.
    [(status, head, body)] = _raw_exchange(
        server, b"POST /endpoints/x/invocations HTTP/1.1\r\nHost: h\r\nContent-Length: 9000000\r\n\r\n", 1)
    assert status == 413 and b"larger than" in body and b"Connection: close" in head
    [(status, _, body)] = _raw_exchange(server, b"NOT HTTP AT ALL\r\n\r\n", 1)
    assert status == 400 and b"Malformed HTTP request" in body


def test_compiled_trees_take_over_with_the_same_scores(server: ServerProcess, trained: dict[str, Any]) -> None:
    from tests.integration.training_support import load_model

    name, _ = _endpoint(server, [_variant(_model(server, trained))])
    assert _wait(server, name)["EndpointStatus"] == "InService"
    logs, group = server.client("logs"), f"/aws/sagemaker/Endpoints/{name}"
    deadline = time.monotonic() + 60
    messages: list[str] = []
    while time.monotonic() < deadline and not any("compiled trees serving" in m for m in messages):
        time.sleep(0.5)
        messages = [e["message"] for e in logs.filter_log_events(logGroupName=group)["events"]]
    assert any("predictor=CompiledPredictor" in m for m in messages), messages
    features = trained["features"][:500]
    reference = load_model(server, trained["model_data"]).predict(__import__("xgboost").DMatrix(features))
    runtime = server.client("sagemaker-runtime")
    batch = runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=_csv(features))
    single = runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=_csv(features[:1]))
    np.testing.assert_allclose([float(v) for v in batch["Body"].read().split()], reference, atol=1e-6, rtol=0)
    assert float(single["Body"].read()) == pytest.approx(float(reference[0]), abs=1e-6)


def test_invocation_metrics_reach_cloudwatch(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Invocations, latencies (model and overhead), errors and instance usage, flushed each interval."""
    from datetime import UTC, datetime, timedelta

    monkeypatch.setenv("SAGESTACK_METRICS_INTERVAL", "1")
    own = ServerProcess(tmp_path / "metrics-data").start()
    try:
        name, data = _small_endpoint(own, tmp_path)
        runtime = own.client("sagemaker-runtime")
        row = _csv(np.loadtxt(data["local"]["test"], delimiter=",", dtype=np.float32)[:1, 1:])
        for _ in range(5):
            runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=row)
        with pytest.raises(ClientError):
            runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=",".join(["1"] * 200))  # a 400
        cloudwatch = own.client("cloudwatch")
        dims = [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}]

        def statistic(namespace: str, metric: str, stat: str) -> float | None:
            now = datetime.now(UTC)
            points = cloudwatch.get_metric_statistics(
                Namespace=namespace, MetricName=metric, Dimensions=dims, StartTime=now - timedelta(minutes=5),
                EndTime=now + timedelta(minutes=1), Period=60, Statistics=[stat])["Datapoints"]
            return sum(p[stat] for p in points) if points else None

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (statistic("AWS/SageMaker", "Invocations", "Sum") or 0) < 6:
            time.sleep(0.5)
        assert statistic("AWS/SageMaker", "Invocations", "Sum") == 6
        assert statistic("AWS/SageMaker", "Invocation4XXErrors", "Sum") == 1
        assert statistic("AWS/SageMaker", "InvocationModelErrors", "Sum") == 1
        model = statistic("AWS/SageMaker", "ModelLatency", "Maximum")
        overhead = statistic("AWS/SageMaker", "OverheadLatency", "Maximum")
        assert model is not None and overhead is not None and model > 0 and overhead > 0  # microseconds
        assert statistic("/aws/sagemaker/Endpoints", "MemoryUtilization", "Maximum") is not None
        assert statistic("/aws/sagemaker/Endpoints", "CPUUtilization", "Maximum") is not None
    finally:
        own.stop()


def _front_workers(server: ServerProcess) -> list[psutil.Process]:
    assert server.proc is not None
    return [p for p in psutil.Process(server.proc.pid).children()
            if "sagestack.front.worker" in " ".join(p.cmdline())]


def _held_by(workers: list[psutil.Process], port: int) -> int:
    """How many connections to the runtime port the front workers hold."""
    held = 0
    for worker in workers:
        try:
            held += sum(1 for c in worker.net_connections(kind="tcp") if c.laddr and c.laddr.port == port)
        except psutil.Error:
            continue
    return held


def _await_serving_worker(server: ServerProcess, port: int, timeout: float = 30) -> psutil.Process:
    """A front worker that has taken a connection handed over by the main process."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _front_workers(server)
        probes = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]  # one turn each
        try:
            time.sleep(0.1)
            if workers and _held_by(workers, port):
                return next(w for w in workers if _held_by([w], port))
        finally:
            for probe in probes:
                probe.close()
        time.sleep(0.2)
    raise TimeoutError("no front worker serving the runtime port")


def test_front_workers_share_the_runtime_port(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections alternate between the main process and a front worker; both count in the metrics; a killed
    worker loses no new connection and is replaced."""
    from datetime import UTC, datetime, timedelta
    from urllib.parse import urlsplit

    monkeypatch.setenv("SAGESTACK_METRICS_INTERVAL", "1")
    own = ServerProcess(tmp_path / "fronts-data", extra_args=["--runtime-workers", "1"]).start()
    try:
        name, data = _small_endpoint(own, tmp_path)
        port = urlsplit(own.endpoint_url("sagemaker-runtime")).port
        assert port is not None
        worker = _await_serving_worker(own, port)
        row = _csv(np.loadtxt(data["local"]["test"], delimiter=",", dtype=np.float32)[:1, 1:]).encode()
        payload = _signed_invoke(own, name, row)
        connections = 6
        for _ in range(connections):  # in turn: half of them are served by the worker
            answers = _raw_exchange(own, payload * 5, 5)
            assert [status for status, _, _ in answers] == [200] * 5
            assert len({body for _, _, body in answers}) == 1

        dims = [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}]
        cloudwatch = own.client("cloudwatch")

        def invocations() -> float:
            now = datetime.now(UTC)
            points = cloudwatch.get_metric_statistics(
                Namespace="AWS/SageMaker", MetricName="Invocations", Dimensions=dims,
                StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=1), Period=60,
                Statistics=["Sum"])["Datapoints"]
            return sum(p["Sum"] for p in points)

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and invocations() < connections * 5:
            time.sleep(0.5)
        assert invocations() == connections * 5  # the worker's counts reached the main process's flush

        worker.kill()
        worker.wait(5)
        for _ in range(4):  # served by the main process while the worker is gone
            assert [s for s, _, _ in _raw_exchange(own, payload, 1)] == [200]
        replacement = _await_serving_worker(own, port)
        assert replacement.pid != worker.pid
        assert [s for s, _, _ in _raw_exchange(own, payload * 3, 3)] == [200] * 3
    finally:
        own.stop()
    assert not replacement.is_running() or replacement.status() == psutil.STATUS_ZOMBIE  # stopped with the server


def test_instances_hold_the_model_roles_session_until_the_endpoint_goes(server: ServerProcess,
                                                                       trained: dict[str, Any]) -> None:
    import json

    name, _ = _endpoint(server, [_variant(_model(server, trained))])
    assert _wait(server, name)["EndpointStatus"] == "InService"
    files = list((server.data_dir / "endpoints" / name).glob("*/.credentials/credentials.json"))
    assert len(files) == 1, files
    held = json.loads(files[0].read_text())
    as_model = server.client("sts", aws_access_key_id=held["AccessKeyId"],
                             aws_secret_access_key=held["SecretAccessKey"], aws_session_token=held["SessionToken"])
    role_name = trained["role"].rsplit("/", 1)[1]
    assert as_model.get_caller_identity()["Arn"].endswith(f":assumed-role/{role_name}/SageMaker")
    sm = server.client("sagemaker")
    sm.delete_endpoint(EndpointName=name)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            as_model.get_caller_identity()
        except ClientError as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the deleted endpoint's session still works")

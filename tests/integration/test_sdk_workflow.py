"""The SageMaker Python SDK v2, unchanged, against a real server: fit, deploy, predict, transform, clean up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from sagestack.testing.server_process import ServerProcess
from tests.integration.training_support import adult_bucket, execution_role, load_model, point_sdk_at

sagemaker = pytest.importorskip("sagemaker")


@pytest.fixture
def sdk_env(server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What a notebook instance provides: endpoint variables, credentials, an SDK config without telemetry."""
    data = adult_bucket(server, tmp_path / "adult")
    point_sdk_at(server, data["bucket"], tmp_path, monkeypatch)
    data["role"] = execution_role(server)
    return data


def test_tutorial_workflow_with_sdk_v2(server: ServerProcess, sdk_env: dict[str, Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from sagemaker import image_uris
    from sagemaker.inputs import TrainingInput
    from sagemaker.serializers import CSVSerializer

    session = sagemaker.Session()
    region = session.boto_region_name
    bucket = session.default_bucket()
    assert bucket == sdk_env["bucket"]
    container = image_uris.retrieve("xgboost", region, "1.7-1")
    xgb_estimator = sagemaker.estimator.Estimator(
        container, sdk_env["role"], instance_count=1, instance_type="ml.m4.xlarge",
        output_path=f"s3://{bucket}/output", sagemaker_session=session,
    )
    xgb_estimator.set_hyperparameters(max_depth=5, eta=0.2, gamma=4, min_child_weight=6, subsample=0.8,
                                      objective="binary:logistic", num_round=100)
    xgb_estimator.fit({
        "train": TrainingInput(sdk_env["uris"]["train"], content_type="csv"),
        "validation": TrainingInput(sdk_env["uris"]["validation"], content_type="csv"),
    })
    printed = capsys.readouterr().out
    assert "#011validation-" in printed or "validation-" in printed, printed[-2000:]
    model_uri = xgb_estimator.model_data
    booster = load_model(server, model_uri)

    predictor = xgb_estimator.deploy(initial_instance_count=1, instance_type="ml.m4.xlarge",
                                     serializer=CSVSerializer())
    table = np.loadtxt(sdk_env["local"]["test"], delimiter=",", dtype=np.float32)
    features, labels = table[:, 1:], table[:, 0]
    scores: list[float] = []
    for chunk in np.array_split(features, 7):  # the tutorial predicts in chunks
        body = predictor.predict(chunk).decode("utf-8")
        scores.extend(float(v) for v in body.replace(",", "\n").split())
    assert len(scores) == len(labels) == 6513
    expected = booster.predict(xgb.DMatrix(features))
    assert np.allclose(scores, expected, atol=1e-6)
    accuracy = float(((np.array(scores) > 0.5) == (labels > 0.5)).mean())
    assert accuracy >= 0.86

    # Batch transform of the same test set (label column dropped) writes the same scores.
    s3 = server.client("s3")
    batch_key = "batch/input/test.csv"
    batch_file = Path(sdk_env["local"]["test"]).with_name("batch.csv")
    np.savetxt(batch_file, features, delimiter=",", fmt="%.9g")  # %.9g round-trips float32 exactly
    s3.upload_file(str(batch_file), bucket, batch_key)
    transformer = xgb_estimator.transformer(instance_count=1, instance_type="ml.m4.xlarge",
                                            output_path=f"s3://{bucket}/batch/output")
    transformer.transform(f"s3://{bucket}/batch/input", content_type="text/csv", split_type="Line")
    transformer.wait()
    out = s3.get_object(Bucket=bucket, Key="batch/output/test.csv.out")["Body"].read().decode()
    batch_scores = [float(v) for v in out.replace(",", "\n").split()]
    assert len(batch_scores) == 6513
    assert np.allclose(batch_scores, expected, atol=1e-6)
    assert np.allclose(batch_scores, scores, atol=1e-6)  # the endpoint's scores

    predictor.delete_model()
    predictor.delete_endpoint(delete_endpoint_config=True)
    sm = server.client("sagemaker")
    sm.get_waiter("endpoint_deleted").wait(EndpointName=predictor.endpoint_name,
                                           WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert not [e for e in sm.list_endpoints()["Endpoints"] if e["EndpointName"] == predictor.endpoint_name]
    assert not sm.list_models(NameContains=predictor.endpoint_name)["Models"]

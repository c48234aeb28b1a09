"""The XGBoost model server's request handling, in-process: decoding, predictions, encodings, errors, loading.

Reference numbers always come from ``Booster.predict(xgb.DMatrix(X))`` on the
same booster, which is what SageMaker's container computes. The process over
HTTP/1.1 is tested in ``test_model_server.py``.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import xgboost as xgb

from sagestack.algorithms.xgboost import recordio
from sagestack.serving import model_server
from sagestack.serving.model import ModelLoadError, load_model
from sagestack.serving.predictors import DMatrixPredictor, NativePredictor
from sagestack.serving.rows import SparseRows
from sagestack.serving.xgboost_handler import ServingSettings, XGBoostHandler
from tests.unit.serving_support import (
    FEATURES,
    booster_of,
    csv_of,
    float_rows,
    make_handler,
    reference_scores,
    train_booster,
    train_models,
    training_data,
)

SUPPORTED = "['application/json', 'application/jsonlines', 'application/x-recordio-protobuf', 'text/csv']"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return train_models(tmp_path_factory.mktemp("models"))


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("name", ["binary", "softprob", "softmax", "binary_json", "binary_pickle"])
def test_csv_predictions_equal_booster_predict(models: dict[str, Path], name: str) -> None:
    x, _ = training_data(rows=50, seed=3)
    handler = make_handler(models[name])
    reference = reference_scores(models[name], x).reshape(len(x), -1)
    single = handler.invoke(csv_of(x[:1]), "text/csv", "text/csv")
    batch = handler.invoke(csv_of(x), "text/csv", "text/csv")
    assert single.status == batch.status == 200
    np.testing.assert_allclose(float_rows(single.body), reference[:1], atol=1e-6, rtol=0)
    np.testing.assert_allclose(float_rows(batch.body), reference, atol=1e-6, rtol=0)


def test_native_predictor_matches_dmatrix_predictor(models: dict[str, Path]) -> None:
    x, _ = training_data(rows=200, seed=5)
    for name in ("binary", "softprob"):
        booster = booster_of(models[name])
        native, slow = NativePredictor(booster), DMatrixPredictor(booster)
        np.testing.assert_allclose(native.dense(x), slow.dense(x), atol=1e-6, rtol=0)
        matrix = scipy.sparse.csr_matrix(np.nan_to_num(x, nan=0.0))
        rows = SparseRows(
            matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32), matrix.data, FEATURES
        )
        np.testing.assert_allclose(native.sparse(rows), slow.sparse(rows), atol=1e-6, rtol=0)
    assert isinstance(load_model(models["binary"], log=lambda _m: None).predictors[0], NativePredictor)


def test_csv_empty_fields_are_missing_values(models: dict[str, Path]) -> None:
    x, _ = training_data(rows=4, seed=9)
    x[0, 3] = x[2, 0] = x[3, FEATURES - 1] = np.nan
    body = csv_of(x)
    assert b",," in body and body.split(b"\n")[3].endswith(b",")
    got = float_rows(make_handler(models["binary"]).invoke(body, "text/csv", None).body).ravel()
    np.testing.assert_allclose(got, reference_scores(models["binary"], x), atol=1e-6, rtol=0)


def test_csv_other_delimiters_and_crlf(models: dict[str, Path]) -> None:
    x, _ = training_data(rows=3, seed=11)
    x = np.nan_to_num(x)
    reference = reference_scores(models["binary"], x)
    handler = make_handler(models["binary"])
    for delimiter, newline in (("\t", "\n"), (";", "\r\n"), (",", "\r\n")):
        text = newline.join(delimiter.join(repr(float(v)) for v in row) for row in x) + newline
        response = handler.invoke(text.encode(), "text/csv", None)
        np.testing.assert_allclose(float_rows(response.body).ravel(), reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("body", [
    b"26,33939,10,0,0,20,-0,1e5,1E-5,-2.5e+3",
    b"0.1,1e400,-1e400,1e-400,123456789012345678901234567890,3.4028235e38",
    b"1, 2 ,3\r\n4,5,6\r\n7,8,9",
    b"nan,1,2", b"+1,2,3", b".5,1,2", b"1.,2,3", b"01,2,3", b"inf,1,2",  # not JSON: numpy reads them
])
def test_csv_json_fast_path_reads_exactly_what_numpy_reads(body: bytes) -> None:
    import io

    from sagestack.serving.decoding import _decode_as_json, decode_csv

    expected = np.loadtxt(io.StringIO(body.decode()), delimiter=",", dtype=np.float32, ndmin=2, comments=None)
    fast = _decode_as_json(body)
    if fast is not None:
        np.testing.assert_array_equal(fast, expected)
    np.testing.assert_array_equal(decode_csv(body), expected)


def test_csv_json_fast_path_matches_numpy_on_random_values() -> None:
    import io

    from sagestack.serving.decoding import _decode_as_json

    rng = np.random.default_rng(5)
    values = rng.standard_normal((40, 50)) * 10.0 ** rng.integers(-40, 40, (40, 50))
    text = "\n".join(",".join(repr(float(v)) if i % 2 else f"{v:.9g}" for i, v in enumerate(row)) for row in values)
    expected = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float32, ndmin=2, comments=None)
    np.testing.assert_array_equal(_decode_as_json(text.encode()), expected)


def test_csv_large_bodies_read_by_arrow_equal_the_containers_algorithm() -> None:
    from sagestack.serving.decoding import _decode_csv_slowly, decode_csv

    rng = np.random.default_rng(4)
    values = rng.standard_normal((12000, 12)).astype(np.float32)
    values[rng.random(values.shape) < 0.05] = np.nan
    text = "\n".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in values)
    assert len(text) > 2 * (1 << 20)  # several Arrow blocks, so several record batches
    got = decode_csv(text.encode())
    np.testing.assert_array_equal(got, _decode_csv_slowly(text, ","))
    np.testing.assert_array_equal(got, values)


def test_csv_scores_print_as_python_repr() -> None:
    from sagestack.serving.encoding import csv_scores as _csv_scores

    rng = np.random.default_rng(3)
    preds = np.concatenate([
        rng.random(20000), 10.0 ** rng.uniform(-12, 20, 20000),
        [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-4, 1e-3, 1e15, 1e16, 9.999e-4, -0.25],
    ]).astype(np.float32)
    assert _csv_scores(preds) == ("\n".join(map(repr, preds.tolist())) + "\n").encode()


def test_csv_ragged_or_blank_rows_leave_the_json_fast_path() -> None:
    from sagestack.serving.decoding import _decode_as_json

    assert _decode_as_json(b"1,2,3\n4,5") is None
    assert _decode_as_json(b"1,2,3\n\n4,5,6") is None
    assert _decode_as_json(b"1,,3") is None


def test_fewer_features_are_padded_as_missing(models: dict[str, Path]) -> None:
    x, _ = training_data(rows=5, seed=13)
    narrow = x[:, : FEATURES - 3]
    got = float_rows(make_handler(models["binary"]).invoke(csv_of(narrow), "text/csv", None).body).ravel()
    np.testing.assert_allclose(got, reference_scores(models["binary"], narrow), atol=1e-6, rtol=0)


def test_libsvm_uses_indices_as_given_and_ignores_labels(models: dict[str, Path]) -> None:
    body = b"1 0:0.5 3:-1.25 7:2\n0 1:1.5\n2:0.25 5:-0.75"
    dense = np.full((3, FEATURES), np.nan, dtype=np.float32)
    dense[0, [0, 3, 7]] = [0.5, -1.25, 2]
    dense[1, 1] = 1.5
    dense[2, [2, 5]] = [0.25, -0.75]
    for content_type in ("text/libsvm", "text/x-libsvm", "libsvm", None):
        response = make_handler(models["softprob"]).invoke(body, content_type, "text/csv")
        assert response.status == 200, response.body
        np.testing.assert_allclose(float_rows(response.body), reference_scores(models["softprob"], dense), atol=1e-6)


def test_json_and_jsonlines_requests(models: dict[str, Path]) -> None:
    x = np.nan_to_num(training_data(rows=3, seed=17)[0])
    reference = reference_scores(models["binary"], x)
    rows = x.tolist()
    handler = make_handler(models["binary"])
    bodies = {
        "application/json": [
            json.dumps({"instances": rows}),
            json.dumps({"instances": [{"features": r} for r in rows]}),
            json.dumps(rows),
        ],
        "application/jsonlines": [
            "\n".join(json.dumps(r) for r in rows),
            "\n".join(json.dumps({"features": r}) for r in rows),
        ],
    }
    for content_type, variants in bodies.items():
        for body in variants:
            response = handler.invoke(body.encode(), content_type, None)
            np.testing.assert_allclose(float_rows(response.body).ravel(), reference, atol=1e-6, rtol=0)
    one = handler.invoke(json.dumps({"features": rows[0]}).encode(), "application/json", None)
    np.testing.assert_allclose(float(one.body), reference[0], atol=1e-6)
    with_null = handler.invoke(json.dumps([[None, *rows[0][1:]]]).encode(), "application/json", None)
    missing = np.array([[np.nan, *rows[0][1:]]], dtype=np.float32)
    np.testing.assert_allclose(float(with_null.body), reference_scores(models["binary"], missing)[0], atol=1e-6)


# --------------------------------------------------------------------------- recordio


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _record(values: list[float], keys: list[int] | None = None, width: int = FEATURES) -> bytes:
    tensor = _field(1, np.asarray(values, dtype="<f4").tobytes())
    if keys is not None:
        tensor += _field(2, b"".join(_varint(k) for k in keys)) + _field(3, _varint(width))
    entry = _field(1, b"values") + _field(2, _field(2, tensor))
    payload = _field(1, entry)
    header = np.array([0xCED7230A, len(payload)], dtype="<u4").tobytes()
    return header + payload + b"\0" * (-len(payload) % 4)


def test_recordio_protobuf_dense_and_sparse_requests(models: dict[str, Path]) -> None:
    x = np.nan_to_num(training_data(rows=2, seed=19)[0])
    dense_body = b"".join(_record(row.tolist()) for row in x)
    handler = make_handler(models["binary"])
    response = handler.invoke(dense_body, "application/x-recordio-protobuf", "text/csv")
    np.testing.assert_allclose(float_rows(response.body).ravel(), reference_scores(models["binary"], x), atol=1e-6)
    sparse_body = _record([1.5, -2.0], keys=[1, 6])
    expected = np.full((1, FEATURES), np.nan, dtype=np.float32)
    expected[0, [1, 6]] = [1.5, -2.0]
    response = handler.invoke(sparse_body, "recordio-protobuf", None)
    np.testing.assert_allclose(float(response.body), reference_scores(models["binary"], expected)[0], atol=1e-6)
    wide = handler.invoke(_record([1.0], keys=[FEATURES], width=FEATURES + 1), "recordio-protobuf", None)
    assert (wide.status, wide.body.decode()) == (
        400,
        "Unable to evaluate payload provided: Feature size of recordio-protobuf inference data "
        f"{FEATURES + 1} is larger than feature size of trained model {FEATURES}.",
    )
    bad = handler.invoke(b"not recordio at all", "application/x-recordio-protobuf", None)
    assert bad.status == 415
    assert bad.body.decode().startswith(
        "Loading recordio-protobuf data failed with Exception, please ensure data is in "
        "recordio-protobuf format: "
    )


def _decode_label_records(body: bytes) -> list[dict[str, list[float]]]:
    out = []
    for payload in recordio._recordio_payloads(body):
        _, labels = recordio._record_maps(payload)
        out.append({key: recordio._tensor(value)[0].tolist() for key, value in labels.items()})
    return out


def test_recordio_protobuf_responses(models: dict[str, Path]) -> None:
    x = np.nan_to_num(training_data(rows=3, seed=23)[0])
    reference = reference_scores(models["softprob"], x)
    response = make_handler(models["softprob"]).invoke(csv_of(x), "text/csv", "application/x-recordio-protobuf")
    assert response.content_type == "application/x-recordio-protobuf"
    records = _decode_label_records(response.body)
    np.testing.assert_allclose([r["score"] for r in records], reference, atol=1e-6)
    selected = make_handler(models["softprob"], SAGEMAKER_INFERENCE_OUTPUT="predicted_label,probabilities")
    records = _decode_label_records(
        selected.invoke(csv_of(x), "text/csv", "application/x-recordio-protobuf").body
    )
    assert [r["predicted_label"] for r in records] == [[float(np.argmax(p))] for p in reference]
    np.testing.assert_allclose([r["probabilities"] for r in records], reference, atol=1e-6)


# --------------------------------------------------------------------------- response encodings


def test_default_accept_is_csv_one_score_per_line(models: dict[str, Path]) -> None:
    x = np.nan_to_num(training_data(rows=3, seed=29)[0])
    reference = reference_scores(models["binary"], x)
    handler = make_handler(models["binary"])
    for accept in (None, "", "*/*", "text/csv", "text/csv; charset=utf-8"):
        response = handler.invoke(csv_of(x), "text/csv", accept)
        assert response.status == 200 and response.content_type == "text/csv; charset=utf-8"
        assert response.body == ("\n".join(repr(float(v)) for v in reference) + "\n").encode()


def test_softprob_csv_rows_are_comma_separated(models: dict[str, Path]) -> None:
    x = np.nan_to_num(training_data(rows=2, seed=31)[0])
    reference = reference_scores(models["softprob"], x)
    body = make_handler(models["softprob"]).invoke(csv_of(x), "text/csv", None).body
    assert body == ("\n".join(",".join(repr(float(v)) for v in row) for row in reference) + "\n").encode()


def test_json_and_jsonlines_responses(models: dict[str, Path]) -> None:
    x = np.nan_to_num(training_data(rows=2, seed=37)[0])
    for name in ("binary", "softprob"):
        reference = reference_scores(models[name], x).tolist()
        handler = make_handler(models[name])
        response = handler.invoke(csv_of(x), "text/csv", "application/json")
        assert response.content_type == "application/json"
        assert response.body == json.dumps({"predictions": [{"score": s} for s in reference]}).encode()
        lines = handler.invoke(csv_of(x), "text/csv", "application/jsonlines")
        assert lines.body == b"".join(json.dumps({"score": s}).encode() + b"\n" for s in reference)


def test_default_accept_from_environment(models: dict[str, Path]) -> None:
    handler = make_handler(models["binary"], SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT="application/json")
    response = handler.invoke(b"0,0,0,0,0,0,0,0", "text/csv", "*/*")
    assert response.content_type == "application/json" and b'"predictions"' in response.body


def test_batch_mode_prints_one_line_per_row_whatever_accept(models: dict[str, Path]) -> None:
    x = np.nan_to_num(training_data(rows=2, seed=41)[0])
    reference = reference_scores(models["softprob"], x).tolist()
    handler = make_handler(models["softprob"], SAGEMAKER_BATCH="true")
    response = handler.invoke(csv_of(x), "text/csv", "application/json")
    assert response.body == ("\n".join(str(row) for row in reference) + "\n").encode()
    assert response.body.startswith(b"[")


# --------------------------------------------------------------------------- selectable output


def test_selectable_output_binary_logistic(models: dict[str, Path]) -> None:
    x = np.nan_to_num(training_data(rows=2, seed=43)[0])
    p = reference_scores(models["binary"], x).tolist()
    keys = "predicted_label, probability,probabilities,labels,raw_score"
    handler = make_handler(models["binary"], SAGEMAKER_INFERENCE_OUTPUT=keys)
    document = json.loads(handler.invoke(csv_of(x), "text/csv", "application/json").body)
    assert document == {
        "predictions": [
            {
                "predicted_label": int(v > 0.5),
                "labels": [0, 1],
                "probability": v,
                "probabilities": [1.0 - v, v],
                "raw_score": v,
            }
            for v in p
        ]
    }
    assert list(document["predictions"][0]) == [
        "predicted_label",
        "labels",
        "probability",
        "probabilities",
        "raw_score",
    ]
    csv_body = handler.invoke(csv_of(x), "text/csv", "text/csv").body.decode()
    first = csv_body.split("\n")[0]
    assert first == f'{int(p[0] > 0.5)},{p[0]},"{[1.0 - p[0], p[0]]}","[0, 1]",{p[0]}'
    assert not csv_body.endswith("\n")  # no trailing newline outside batch mode, as the container
    lines = handler.invoke(csv_of(x), "text/csv", "application/jsonlines").body.decode().splitlines()
    assert [json.loads(line) for line in lines] == document["predictions"]


def test_selectable_output_multiclass_and_invalid_keys(models: dict[str, Path]) -> None:
    x = np.nan_to_num(training_data(rows=3, seed=47)[0])
    probabilities = reference_scores(models["softprob"], x)
    handler = make_handler(
        models["softprob"], SAGEMAKER_INFERENCE_OUTPUT="predicted_label,labels,predicted_score"
    )
    document = json.loads(handler.invoke(csv_of(x), "text/csv", "application/json").body)
    for row, p in zip(document["predictions"], probabilities, strict=True):
        assert row["predicted_label"] == int(np.argmax(p))
        assert row["labels"] == [0, 1, 2, 3]
        assert math.isnan(row["predicted_score"])  # not a key of classification objectives: NaN
    softmax = make_handler(models["softmax"], SAGEMAKER_INFERENCE_OUTPUT="predicted_label,raw_scores")
    labels = reference_scores(models["softmax"], x)
    rows = json.loads(softmax.invoke(csv_of(x), "text/csv", "application/json").body)["predictions"]
    assert [r["predicted_label"] for r in rows] == labels.tolist()
    logitraw = make_handler(models["logitraw"], SAGEMAKER_INFERENCE_OUTPUT="predicted_label,probability")
    margins = reference_scores(models["logitraw"], x)
    rows = json.loads(logitraw.invoke(csv_of(x), "text/csv", "application/json").body)["predictions"]
    assert [r["predicted_label"] for r in rows] == [int(m > 0) for m in margins]
    assert all(math.isnan(r["probability"]) for r in rows)


def test_selectable_output_regression_and_unsupported_objective(models: dict[str, Path]) -> None:
    x = np.nan_to_num(training_data(rows=2, seed=53)[0])
    handler = make_handler(models["regression"], SAGEMAKER_INFERENCE_OUTPUT="predicted_score")
    body = handler.invoke(csv_of(x), "text/csv", "text/csv").body.decode()
    np.testing.assert_allclose(
        [float(v) for v in body.split("\n")], reference_scores(models["regression"], x), atol=1e-5
    )
    poisson = make_handler(models["poisson"], SAGEMAKER_INFERENCE_OUTPUT="predicted_score")
    response = poisson.invoke(csv_of(x), "text/csv", "text/csv")
    assert (response.status, response.body) == (
        500,
        b"Objective `count:poisson` unsupported for selectable inference predictions.",
    )


# --------------------------------------------------------------------------- errors


def test_empty_body_is_204(models: dict[str, Path]) -> None:
    assert make_handler(models["binary"]).invoke(b"", "text/csv", "text/html")[:2] == (204, b"")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (
            b"1,abc,3",
            "text/csv",
            415,
            "Loading csv data failed with Exception, please ensure data is in csv format:\n"
            " <class 'ValueError'>\n could not convert string to float: 'abc'",
        ),
        (
            b"1,2\n3",
            "text/csv",
            415,
            "Loading csv data failed with Exception, please ensure data is in csv format:\n"
            " <class 'ValueError'>\n",
        ),
        (
            b"   \n ",
            "text/csv",
            415,
            "Loading csv data failed with Exception, please ensure data is in csv format:",
        ),
        (
            b"1 0:x",
            "text/libsvm",
            415,
            "Loading libsvm data failed with Exception, please ensure data is in libsvm format:\n"
            " <class 'ValueError'>\n could not convert string to float: 'x'",
        ),
        (b"{not json", "application/json", 415, "Loading json data failed with Exception"),
        (b"1,2", "application/x-parquet", 415, "Content-type application/x-parquet is not supported."),
        (
            b"1,2",
            "text/csv;label_size=2",
            415,
            "text/csv;label_size=2 is not an accepted csv ContentType. "
            "Optional parameter label_size must be equal to 1",
        ),
        (
            b"1,2",
            "image/png",
            415,
            "image/png is not an accepted ContentType: csv, libsvm, parquet, recordio-protobuf, text/csv, "
            "text/libsvm, text/x-libsvm, application/x-parquet, application/x-recordio-protobuf, "
            "application/json, application/jsonlines.",
        ),
        (
            ",".join(["1"] * (FEATURES + 1)).encode(),
            "text/csv",
            400,
            f"Unable to evaluate payload provided: Feature size of csv inference data {FEATURES + 1} "
            f"is not consistent with feature size of trained model {FEATURES}.",
        ),
        (
            f"0:1 {FEATURES}:2".encode(),
            "text/libsvm",
            400,
            f"Unable to evaluate payload provided: Feature size of libsvm inference data {FEATURES + 1} "
            f"is larger than feature size of trained model {FEATURES}.",
        ),
    ],
)
def test_bad_requests(
    models: dict[str, Path], body: bytes, content_type: str, status: int, message: str
) -> None:
    response = make_handler(models["binary"]).invoke(body, content_type, None)
    assert response.status == status
    assert response.body.decode().startswith(message), response.body
    assert response.content_type == "text/plain; charset=utf-8"


def test_unsupported_accept_is_406_after_prediction(models: dict[str, Path]) -> None:
    handler = make_handler(models["binary"])
    response = handler.invoke(b"0,0,0,0,0,0,0,0", "text/csv", "text/html")
    assert response.status == 406
    assert response.body.decode() == (
        f"Accept type text/html is not supported. Please use supported accept types: {SUPPORTED}."
    )
    # Decoding comes first: a bad payload with a bad Accept is still 415.
    assert handler.invoke(b"a,b", "text/csv", "text/html").status == 415


def test_pickled_models_keep_the_strict_feature_check(models: dict[str, Path]) -> None:
    handler = make_handler(models["binary_pickle"])
    assert handler.model.formats == ["pkl_format"]
    assert handler.invoke(b"1,2,3,4,5,6,7", "text/csv", None).status == 200  # one fewer is allowed
    response = handler.invoke(b"1,2,3", "text/csv", None)
    assert response.status == 400
    assert b"Feature size of csv inference data 3 is not consistent with feature size of trained model 8" in (
        response.body
    )


# --------------------------------------------------------------------------- model loading


def test_model_formats_and_ensembles(models: dict[str, Path], tmp_path: Path) -> None:
    ensemble = tmp_path / "ensemble"
    ensemble.mkdir()
    first, second = train_booster("binary:logistic", rounds=5), train_booster("binary:logistic", rounds=9)
    (ensemble / "xgboost-model").write_bytes(bytes(first.save_raw("ubj")))
    (ensemble / "xgboost-model-2").write_bytes(pickle.dumps(second))
    (ensemble / ".DS_Store").write_bytes(b"junk")  # dotfiles are skipped, as the container does
    x = np.nan_to_num(training_data(rows=4, seed=59)[0])
    averaged = (first.predict(xgb.DMatrix(x)) + second.predict(xgb.DMatrix(x))) / 2
    got = float_rows(make_handler(ensemble).invoke(csv_of(x), "text/csv", None).body).ravel()
    np.testing.assert_allclose(got, averaged, atol=1e-6, rtol=0)
    alone = make_handler(ensemble, SAGEMAKER_INFERENCE_ENSEMBLE="false")
    assert [p.name for p in alone.model.paths] == ["xgboost-model"]
    got = float_rows(alone.invoke(csv_of(x), "text/csv", None).body).ravel()
    np.testing.assert_allclose(got, first.predict(xgb.DMatrix(x)), atol=1e-6, rtol=0)


def test_ensemble_of_softmax_models_votes(tmp_path: Path) -> None:
    directory = tmp_path / "vote"
    directory.mkdir()
    boosters = [train_booster("multi:softmax", rounds=r) for r in (1, 2, 12)]
    for i, booster in enumerate(boosters):
        (directory / f"model-{i}").write_bytes(bytes(booster.save_raw("ubj")))
    x = np.nan_to_num(training_data(rows=40, seed=61)[0])
    votes = np.stack([b.predict(xgb.DMatrix(x)) for b in boosters])
    expected = [min(set(col), key=lambda c: (-list(col).count(c), c)) for col in votes.T]
    got = float_rows(make_handler(directory).invoke(csv_of(x), "text/csv", None).body).ravel()
    assert got.tolist() == expected


def test_unloadable_model_is_reported(tmp_path: Path) -> None:
    (tmp_path / "xgboost-model").write_bytes(b"this is not a model")
    with pytest.raises(
        ModelLoadError, match="cannot be loaded:\nPickle load error=not a pickle\nXGB load model error="
    ):
        load_model(tmp_path, log=lambda _m: None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no model file"):
        load_model(empty, log=lambda _m: None)


def test_settings_and_execution_parameters(models: dict[str, Path]) -> None:
    settings = ServingSettings.from_env(
        {"SAGEMAKER_INFERENCE_OUTPUT": "Predicted_Label, labels", "MAX_CONTENT_LENGTH": "2097152"}
    )
    assert settings.output_keys == ("predicted_label", "labels") and settings.max_content_length == 2097152
    handler = XGBoostHandler(load_model(models["binary"], log=lambda _m: None), settings)
    document = json.loads(handler.execution_parameters().body)
    assert document["BatchStrategy"] == "MULTI_RECORD" and document["MaxPayloadInMB"] == 2


def test_watchdog_exits_when_a_request_overruns(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Exited(Exception):
        pass

    def fake_exit(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(model_server.os, "_exit", fake_exit)
    server = model_server.ModelServer(make_handler(models["binary"]), max_body=100, timeout=0.05, idle_timeout=60)
    server.busy_since = time.monotonic() - 1.0
    with pytest.raises(Exited) as raised:
        server.watch()
    assert raised.value.args == (model_server.TIMEOUT_EXIT_CODE,)

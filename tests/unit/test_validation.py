"""Request validation against botocore's shapes: AWS's wording, paths and order."""

from __future__ import annotations

import botocore.session
import pytest

from sagestack.aws.validation import format_errors, validate


@pytest.fixture(scope="module")
def sagemaker():  # type: ignore[no-untyped-def]
    return botocore.session.get_session().get_service_model("sagemaker")


def _input(model, name):  # type: ignore[no-untyped-def]
    return model.operation_model(name).input_shape


def test_valid_request_has_no_errors(sagemaker) -> None:  # type: ignore[no-untyped-def]
    assert validate(_input(sagemaker, "DescribeTrainingJob"), {"TrainingJobName": "job-1"}) == []


def test_required_length_pattern_and_enum(sagemaker) -> None:  # type: ignore[no-untyped-def]
    shape = _input(sagemaker, "ListTrainingJobs")
    errors = validate(shape, {"MaxResults": 0, "StatusEquals": "Sleeping", "NameContains": "bad name!"})
    assert errors == [
        "Value '0' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1",
        "Value 'bad name!' at 'nameContains' failed to satisfy constraint: Member must satisfy regular "
        "expression pattern: [a-zA-Z0-9\\-]+",
        "Value 'Sleeping' at 'statusEquals' failed to satisfy constraint: Member must satisfy enum value set: "
        f"[{', '.join(shape.members['StatusEquals'].enum)}]",  # in the model's order
    ]
    missing = validate(_input(sagemaker, "DescribeTrainingJob"), {})
    assert missing == ["Value null at 'trainingJobName' failed to satisfy constraint: Member must not be null"]
    long = validate(_input(sagemaker, "DescribeTrainingJob"), {"TrainingJobName": "x" * 64})
    assert long == [  # both constraints are reported, as AWS does
        f"Value '{'x' * 64}' at 'trainingJobName' failed to satisfy constraint: Member must have length less "
        "than or equal to 63",
        f"Value '{'x' * 64}' at 'trainingJobName' failed to satisfy constraint: Member must satisfy regular "
        "expression pattern: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
    ]


def test_nested_list_and_map_paths(sagemaker) -> None:  # type: ignore[no-untyped-def]
    shape = _input(sagemaker, "CreateTrainingJob")
    params = {
        "TrainingJobName": "job", "RoleArn": "arn:aws:iam::123456789012:role/r",
        "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
        "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 0},
        "HyperParameters": {"k" * 257: "v"},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://b/t"}}}, {"DataSource": {}}],
    }
    errors = validate(shape, params)
    assert "Value '0' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: Member must have " \
           "value greater than or equal to 1" in errors
    assert any(e.startswith("Value null at 'inputDataConfig.2.member.channelName'") for e in errors)
    assert any(" at 'hyperParameters.key' failed to satisfy constraint: Member must have length less than or "
               "equal to 256" in e for e in errors)
    assert format_errors(errors).startswith(f"{len(errors)} validation errors detected: Value ")
    assert format_errors(errors[:1]).startswith("1 validation error detected: ")


def test_wrong_types_are_left_to_the_parser(sagemaker) -> None:  # type: ignore[no-untyped-def]
    # Booleans are not numbers and non-strings are not matched against patterns: no crash, no error.
    shape = _input(sagemaker, "ListTrainingJobs")
    assert validate(shape, {"MaxResults": True, "NameContains": 5}) == []

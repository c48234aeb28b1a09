"""The S3 errors the object store raises, with S3's codes, messages and extra members.

The messages are the ones Amazon S3 sends on the wire (which sometimes differ
from the prose of its error-code table), so SDK retries and client logic that
match on them behave as against AWS.
"""

from __future__ import annotations

import base64

from sagestack.aws.errors import AwsError

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_OBJECT_PUT_SIZE = 5 * 1024**3  # one PutObject / UploadPart / CopyObject
MAX_KEY_BYTES = 1024
MAX_USER_METADATA_BYTES = 2048


def _bucket_error(code: str, message: str, status: int, bucket: str) -> AwsError:
    """S3 names the bucket (BucketName) in the errors about one."""
    return AwsError(code, message, status, extra={"BucketName": bucket})


def no_such_bucket(bucket: str) -> AwsError:
    return _bucket_error("NoSuchBucket", "The specified bucket does not exist", 404, bucket)


def no_such_bucket_policy(bucket: str) -> AwsError:
    return AwsError("NoSuchBucketPolicy", "The bucket policy does not exist", 404, extra={"BucketName": bucket})


def no_such_key(key: str) -> AwsError:
    return AwsError("NoSuchKey", "The specified key does not exist.", 404, extra={"Key": key})


def no_such_upload(upload_id: str) -> AwsError:
    return AwsError(
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, "
        "or the upload may have been aborted or completed.",
        404,
        extra={"UploadId": upload_id},
    )


def invalid_bucket_name(bucket: str) -> AwsError:
    return _bucket_error("InvalidBucketName", "The specified bucket is not valid.", 400, bucket)


def bucket_already_owned_by_you(bucket: str) -> AwsError:
    message = "Your previous request to create the named bucket succeeded and you already own it."
    return _bucket_error("BucketAlreadyOwnedByYou", message, 409, bucket)


def bucket_already_exists(bucket: str) -> AwsError:
    message = (
        "The requested bucket name is not available. The bucket namespace is shared by all users "
        "of the system. Please select a different name and try again."
    )
    return _bucket_error("BucketAlreadyExists", message, 409, bucket)


def bucket_not_empty(bucket: str) -> AwsError:
    return _bucket_error("BucketNotEmpty", "The bucket you tried to delete is not empty", 409, bucket)


def _over_limit(code: str, message: str, size: int, limit: int) -> AwsError:
    """A key or metadata over its limit: S3 gives the size and the limit (Size, MaxSizeAllowed)."""
    return AwsError(code, message, 400, extra={"Size": str(size), "MaxSizeAllowed": str(limit)})


def key_too_long(size: int) -> AwsError:
    return _over_limit("KeyTooLongError", "Your key is too long", size, MAX_KEY_BYTES)


def metadata_too_large(size: int) -> AwsError:
    message = "Your metadata headers exceed the maximum allowed metadata size."
    return _over_limit("MetadataTooLarge", message, size, MAX_USER_METADATA_BYTES)


def entity_too_large(size: int, limit: int = MAX_OBJECT_PUT_SIZE) -> AwsError:
    return AwsError(
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size",
        400,
        extra={"ProposedSize": str(size), "MaxSizeAllowed": str(limit)},
    )


def entity_too_small(size: int, part_number: int, etag: str) -> AwsError:
    return AwsError(
        "EntityTooSmall",
        "Your proposed upload is smaller than the minimum allowed size",
        400,
        extra={
            "ProposedSize": str(size),
            "MinSizeAllowed": str(MIN_PART_SIZE),
            "PartNumber": str(part_number),
            "ETag": etag.strip('"'),
        },
    )


def incomplete_body(expected: int, received: int) -> AwsError:
    return AwsError(
        "IncompleteBody",
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
        400,
        extra={"NumberBytesExpected": str(expected), "NumberBytesProvided": str(received)},
    )


def bad_content_md5(expected_b64: str, calculated: bytes, expected_raw: bytes) -> AwsError:
    return AwsError(
        "BadDigest",
        "The Content-MD5 you specified did not match what we received.",
        400,
        # S3 reports the expected digest in hex and the calculated one in base64.
        extra={
            "ExpectedDigest": expected_raw.hex(),
            "CalculatedDigest": base64.b64encode(calculated).decode("ascii"),
        },
    )


def bad_checksum(algorithm: str) -> AwsError:
    return AwsError("BadDigest", f"The {algorithm} you specified did not match the calculated checksum.", 400)


def invalid_range(range_requested: str, size: int) -> AwsError:
    return AwsError(
        "InvalidRange",
        "The requested range is not satisfiable",
        416,
        extra={"RangeRequested": range_requested, "ActualObjectSize": str(size)},
    )


def invalid_part_number_argument(value: int | str) -> AwsError:
    return AwsError(
        "InvalidArgument",
        "Part number must be an integer between 1 and 10000, inclusive",
        400,
        extra={"ArgumentName": "partNumber", "ArgumentValue": str(value)},
    )


def invalid_part_number_get(part_number: int) -> AwsError:
    """GetObject/HeadObject ?partNumber= beyond the object's parts."""
    return AwsError(
        "InvalidPartNumber",
        "The requested partnumber is not satisfiable",
        416,
        extra={"PartNumberRequested": str(part_number)},
    )


def invalid_part(upload_id: str, part_number: int, etag: str) -> AwsError:
    return AwsError(
        "InvalidPart",
        "One or more of the specified parts could not be found.  The part may not have been uploaded, "
        "or the specified entity tag may not match the part's entity tag.",
        400,
        extra={"UploadId": upload_id, "PartNumber": str(part_number), "ETag": etag},
    )


def invalid_part_order() -> AwsError:
    return AwsError(
        "InvalidPartOrder",
        "The list of parts was not in ascending order. The parts list must be specified in order by "
        "part number.",
        400,
    )


def malformed_xml() -> AwsError:
    return AwsError(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
        400,
    )


def copy_to_itself() -> AwsError:
    return AwsError(
        "InvalidRequest",
        "This copy request is illegal because it is trying to copy an object to itself without changing "
        "the object's metadata, storage class, website redirect location or encryption attributes.",
        400,
    )


def copy_source_too_large() -> AwsError:
    return AwsError(
        "InvalidRequest",
        "The specified copy source is larger than the maximum allowable size for a copy source: "
        f"{MAX_OBJECT_PUT_SIZE}",
        400,
    )


def bad_copy_source_range(value: str) -> AwsError:
    return AwsError(
        "InvalidArgument",
        "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last "
        "are the zero-based offsets of the first and last bytes to copy",
        400,
        extra={"ArgumentName": "x-amz-copy-source-range", "ArgumentValue": value},
    )


def copy_source_range_out_of_bounds(size: int) -> AwsError:
    return AwsError("InvalidArgument", f"Range specified is not valid for source object of size: {size}", 400)


def precondition_failed(condition: str) -> AwsError:
    return AwsError(
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
        412,
        extra={"Condition": condition},
    )


def missing_part_checksum(algorithm: str, part_number: int) -> AwsError:
    return AwsError(
        "InvalidRequest",
        f"The upload was created using a {algorithm.lower()} checksum. The complete request must include "
        f"the checksum for each part. It was missing for part {part_number} in the request.",
        400,
    )

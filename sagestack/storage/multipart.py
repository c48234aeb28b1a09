"""Pure rules of multipart uploads: checksum modes, part validation, the final ETag and checksum."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sagestack.aws.errors import AwsError
from sagestack.db.models.objects import S3UploadPart
from sagestack.storage import checksums as cks
from sagestack.storage import errors
from sagestack.storage.api import ChecksumExpectations, CompletedPart, UploadInfo


def upload_checksum_mode(algorithm: str | None, checksum_type: str | None) -> tuple[str | None, str | None]:
    """CreateMultipartUpload's checksum algorithm and type, with S3's defaults and rules."""
    if algorithm is None:
        if checksum_type is not None:
            raise AwsError(
                "InvalidRequest",
                "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.",
            )
        return None, None
    algorithm = cks.normalize_algorithm(algorithm)
    # CRC64NVME only exists as a full-object checksum; everything else defaults to COMPOSITE.
    ctype = (checksum_type or ("FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE")).upper()
    if ctype not in ("FULL_OBJECT", "COMPOSITE"):
        raise AwsError("InvalidRequest", "Value for x-amz-checksum-type header is invalid.")
    if ctype == "FULL_OBJECT" and algorithm not in cks.CRC_ALGORITHMS:
        raise AwsError(
            "InvalidRequest",
            f"The FULL_OBJECT checksum type cannot be used with the {algorithm.lower()} checksum algorithm.",
        )
    if ctype == "COMPOSITE" and algorithm == "CRC64NVME":
        raise AwsError(
            "InvalidRequest",
            "The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm.",
        )
    return algorithm, ctype


def check_same_algorithm(upload_algorithm: str, given: set[str]) -> None:
    other = sorted(given - {upload_algorithm})
    if other:
        raise AwsError(
            "InvalidRequest",
            f"Checksum Type mismatch occurred, expected checksum Type: {upload_algorithm.lower()}, "
            f"actual checksum Type: {other[0].lower()}",
        )


def validate_completed_parts(
    upload: UploadInfo, parts: Sequence[CompletedPart], stored: dict[int, S3UploadPart]
) -> list[S3UploadPart]:
    """The stored parts the request names, after S3's checks (InvalidPart, EntityTooSmall...)."""
    algorithm = upload.checksum_algorithm
    chosen: list[S3UploadPart] = []
    for part in parts:
        row = stored.get(part.part_number)
        if row is None or part.etag.strip().strip('"').lower() != row.etag:
            raise errors.invalid_part(upload.upload_id, part.part_number, part.etag)
        given = {cks.normalize_algorithm(a): v for a, v in part.checksums.items()}
        if algorithm:
            if algorithm not in given and upload.checksum_type == "COMPOSITE":
                raise errors.missing_part_checksum(algorithm, part.part_number)
            if algorithm in given and given[algorithm] != (row.checksums or {}).get(algorithm):
                raise errors.invalid_part(upload.upload_id, part.part_number, part.etag)
        chosen.append(row)
    for row in chosen[:-1]:  # only the last part may be under 5 MiB
        if row.size < errors.MIN_PART_SIZE:
            raise errors.entity_too_small(row.size, row.part_number, row.etag)
    return chosen


def multipart_fields(upload: UploadInfo, chosen: list[S3UploadPart]) -> dict[str, Any]:
    """Size, ETag (MD5 of the concatenated binary part MD5s, then -N) and checksum of the result."""
    md5s = b"".join(bytes.fromhex(p.etag) for p in chosen)
    etag = f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(chosen)}"
    checksums: dict[str, str] = {}
    algorithm = upload.checksum_algorithm
    if algorithm:
        digests = [cks.decode_checksum(algorithm, p.checksums[algorithm]) for p in chosen]
        if upload.checksum_type == "FULL_OBJECT":
            checksums[algorithm] = cks.combine_crcs(
                algorithm, [(d, p.size) for d, p in zip(digests, chosen, strict=True)]
            )
        else:
            checksums[algorithm] = cks.composite(algorithm, digests)
    return {
        "size": sum(p.size for p in chosen),
        "etag": etag,
        "checksums": checksums,
        "checksum_type": upload.checksum_type if checksums else None,
        "part_sizes": [p.size for p in chosen],
    }


def verify_multipart_expectations(
    upload: UploadInfo, fields: dict[str, Any], expected: ChecksumExpectations | None
) -> None:
    """x-amz-mp-object-size and a whole-object x-amz-checksum-* sent with CompleteMultipartUpload."""
    if expected is None:
        return
    if expected.size is not None and expected.size != fields["size"]:
        raise AwsError(
            "InvalidRequest",
            f"The provided 'x-amz-mp-object-size' header value {expected.size} does not match what was "
            f"computed: {fields['size']}",
        )
    for name, value in expected.checksums.items():
        algorithm = cks.normalize_algorithm(name)
        have = fields["checksums"].get(algorithm)
        if have is None:
            raise AwsError(
                "InvalidRequest",
                f"The upload was created using the {(upload.checksum_algorithm or 'null').lower()} checksum "
                f"algorithm, not {algorithm.lower()}.",
            )
        if value.split("-")[0] != have.split("-")[0]:
            raise errors.bad_checksum(algorithm)

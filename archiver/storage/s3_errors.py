"""What an S3 error answer means, for both S3 backends (aiobotocore and plain HTTP).

One mapping from (operation, error code, HTTP status) to the project's
error tree, so both backends say the same thing for the same answer, built
only from the code, status, bucket, key and endpoint (never a credential).
"""

from __future__ import annotations

from archiver.errors import (
    ConflictError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StorageUnavailableError,
)

#: Codes that mean "try again later".
THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestLimitExceeded"}
    | {"RequestTimeout", "InternalError", "ServiceUnavailable"}
)
AUTH_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"})
WRITE_OPS = frozenset({"PutObject", "CompleteMultipartUpload"})


def answer_error(op: str, code: str, status: int, *, bucket: str, endpoint: str, where: str) -> StorageError:
    """The project's error for S3's answer ``code``/``status`` to ``op`` on ``where`` (s3://bucket/key)."""
    if op in WRITE_OPS and (code == "PreconditionFailed" or status == 412):
        return ObjectExistsError(f"{where} already exists")
    if op in WRITE_OPS and (code == "ConditionalRequestConflict" or status == 409):
        return ConflictError(f"{where} is being written concurrently")
    if code == "NoSuchKey" or (status == 404 and op in ("GetObject", "HeadObject")):
        return ObjectNotFoundError(f"no object {where}")
    if code == "NoSuchBucket" or (status == 404 and op == "HeadBucket"):
        return StorageUnavailableError(f"bucket {bucket} does not exist at {endpoint}")
    if status == 403 or code in AUTH_CODES:
        return StorageUnavailableError(
            f"access denied to bucket {bucket} (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    return StorageError(f"S3 {op} failed for {where}: {code or 'error'} (HTTP {status})")

"""Object storage of the archive: one small interface, backends for S3-compatible buckets and local directories.

:mod:`~archiver.storage.interface` is the interface, :mod:`~archiver.storage.open`
chooses the backend for an archive's settings, :mod:`~archiver.storage.keys`
checks keys for every backend. Queries read S3 through a third, read-mostly
backend (:mod:`archiver.storage.s3_http`: plain signed HTTP, no aiobotocore
start-up). The contract (``tests/test_storage_contract.py``) runs over every backend.
"""

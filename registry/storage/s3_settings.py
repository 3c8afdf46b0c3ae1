"""The S3 driver's settings: Distribution's ``storage.s3`` keys, their defaults and bounds,
and S3's part sizes, kept beside the driver that obeys them.

The configuration schema (``registry.config``) takes this dataclass as the ``storage.s3``
section, so a ``config.yml`` and ``REGISTRY_STORAGE_S3_*`` overrides fill it directly.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from shared.config import between, meta

MIB = 1024 * 1024
S3_MIN_PART = 5 * MIB  # S3's smallest part (except the last) of a multipart upload
S3_MAX_PART = 5 * 1024 * MIB  # and its largest, also the largest single copy


@dataclass(frozen=True)
class S3DriverConfig:
    """Distribution's ``storage.s3`` keys (plus portside's ``maxretries``/``retrydelay``).
    Empty ``accesskey``/``secretkey`` use the standard AWS credential chain."""

    accesskey: str = ""
    secretkey: str = ""
    sessiontoken: str = ""
    region: str = ""  # empty: the AWS chain's region, else us-east-1
    regionendpoint: str = ""
    forcepathstyle: bool = False
    bucket: str = ""
    encrypt: bool = False
    keyid: str = ""
    secure: bool = True
    skipverify: bool = False
    v4auth: bool = True
    chunksize: int = field(default=10 * MIB, metadata=meta(check=between(S3_MIN_PART, S3_MAX_PART)))
    multipartcopychunksize: int = field(
        default=32 * MIB, metadata=meta(check=between(S3_MIN_PART, S3_MAX_PART))
    )
    multipartcopymaxconcurrency: int = field(default=100, metadata=meta(check=between(1, 1000)))
    multipartcopythresholdsize: int = field(
        default=32 * MIB, metadata=meta(check=between(0, S3_MAX_PART))
    )
    rootdirectory: str = ""
    storageclass: str = "STANDARD"  # NONE: send no storage class
    useragent: str = ""
    usedualstack: bool = False
    accelerate: bool = False
    objectacl: str = "private"
    loglevel: str = "off"
    maxretries: int = field(default=5, metadata=meta(check=between(0, 20)))
    retrydelay: datetime.timedelta = datetime.timedelta(milliseconds=100)

    # ``bucket`` is required, checked by StorageConfig: the defaults stay constructible.

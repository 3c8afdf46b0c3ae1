"""The scale-out settings as an operator writes them: Distribution's storage.s3 and redis
keys (file or REGISTRY_* variables), what stops start-up, what is reported as ignored,
and redirects to presigned URLs only when asked for."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from yarl import URL

from registry.config import ConfigError, load_config, unsupported_settings
from tests.registry.conftest import ClientFactory


def test_the_s3_and_redis_keys_load_from_the_environment() -> None:
    config = load_config(
        None,
        {
            "REGISTRY_STORAGE": "s3",
            "REGISTRY_STORAGE_S3_BUCKET": "registry",
            "REGISTRY_STORAGE_S3_REGION": "eu-west-1",
            "REGISTRY_STORAGE_S3_CHUNKSIZE": "6291456",
            "REGISTRY_STORAGE_S3_ENCRYPT": "true",
            "REGISTRY_STORAGE_S3_V4AUTH": "false",
            "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis",
            "REGISTRY_REDIS_ADDR": "redis:6379",
            "REGISTRY_REDIS_DIALTIMEOUT": "250ms",
            "REGISTRY_REDIS_POOL_MAXIDLE": "4",
            "REGISTRY_HTTP_SECRET": "s3cr3t",
        },
    )
    s3 = config.storage.s3
    assert s3 is not None
    assert (s3.bucket, s3.region, s3.chunksize, s3.encrypt) == (
        "registry",
        "eu-west-1",
        6291456,
        True,
    )
    assert config.redis.address == "redis:6379"
    assert config.redis.dialtimeout.total_seconds() == 0.25
    assert config.http.secret == "s3cr3t"
    # Set but not acted on: reported at start-up, by key.
    assert unsupported_settings(config) == ["storage.s3.v4auth", "redis.pool.maxidle"]


def test_distribution_3_redis_shape_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(
        "version: 0.1\n"
        "storage:\n  s3: {bucket: b, regionendpoint: 'http://minio:9000', forcepathstyle: true}\n"
        "  cache: {blobdescriptor: redis}\n"
        "redis:\n  addrs: [cache:6380]\n  username: u\n  password: p\n  db: 2\n"
        "  poolsize: 10\n  tls: {certificate: /c.pem, key: /k.pem}\n"
    )
    config = load_config(path, {})
    assert config.redis.address == "cache:6380"
    assert config.redis.tls.active
    assert unsupported_settings(config) == []


def test_sentinels_and_a_master_name_load_in_distribution_3s_shape(tmp_path: Path) -> None:
    # go-redis's failover client: with mastername, addrs are the sentinels.
    path = tmp_path / "config.yml"
    path.write_text(
        "version: 0.1\n"
        "storage:\n  inmemory: {}\n  cache: {blobdescriptor: redis}\n"
        "redis:\n  addrs: [s1:26379, s2:26379, s3:26379]\n  mastername: registry\n"
        "  password: p\n  sentinelpassword: sp\n  maxretries: 5\n"
    )
    config = load_config(path, {})
    assert config.redis.sentinels == ["s1:26379", "s2:26379", "s3:26379"]
    assert config.redis.address == ""  # no one server
    assert config.redis.describe() == "master registry of sentinels s1:26379, s2:26379, s3:26379"
    assert unsupported_settings(config) == []


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"REGISTRY_STORAGE": "s3"}, "storage.s3: bucket must be set"),
        (
            {
                "REGISTRY_STORAGE": "s3",
                "REGISTRY_STORAGE_S3_BUCKET": "b",
                "REGISTRY_STORAGE_S3_CHUNKSIZE": "1024",
            },
            "storage.s3.chunksize: expected a number from 5242880",
        ),
        ({"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis"}, "redis: addr (or addrs) must be"),
        ({"REGISTRY_REDIS_ADDRS": "[a:1, b:2]"}, "redis.addrs: a Redis cluster is not supported"),
        ({"REGISTRY_REDIS_ADDR": "no-port"}, "redis.addr: expected HOST:PORT"),
        ({"REGISTRY_REDIS_MASTERNAME": "m"}, "redis.addrs: with mastername, addrs lists"),
        (
            {"REGISTRY_REDIS_MASTERNAME": "m", "REGISTRY_REDIS_ADDR": "a:1"},
            "redis.addrs: with mastername, addrs lists the sentinels",
        ),
        (
            {"REGISTRY_REDIS_MASTERNAME": "m", "REGISTRY_REDIS_ADDRS": "[a:1, no-port]"},
            "redis.addrs: expected HOST:PORT",
        ),
        ({"REGISTRY_REDIS_MAXRETRIES": "-2"}, "redis.maxretries"),
    ],
)
def test_bad_scale_out_settings_stop_start_up(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, environ)
    assert message in str(raised.value)


async def test_blob_redirects_to_s3_only_when_enabled(make_registry: ClientFactory) -> None:
    data = os.urandom(500)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    streaming = await make_registry()
    assert (
        await streaming.post(f"/v2/app/blobs/uploads/?digest={digest}", data=data)
    ).status == 201
    response = await streaming.get(f"/v2/app/blobs/{digest}", allow_redirects=False)
    assert response.status == 200 and await response.read() == data
    redirecting = await make_registry({"REGISTRY_STORAGE_REDIRECT_ENABLED": "true"})
    response = await redirecting.get(f"/v2/app/blobs/{digest}", allow_redirects=False)
    assert response.status == 307
    assert response.headers["Docker-Content-Digest"] == digest
    url = URL(response.headers["Location"])
    assert "X-Amz-Signature" in url.query and url.path.endswith(f"/{digest.split(':')[1]}/data")
    # The redirect outranks conditional headers and ranges, as Distribution's blob server
    # redirects before http.ServeContent looks at them: the storage answers those.
    for headers in ({"If-None-Match": f'"{digest}"'}, {"Range": "bytes=0-9"}):
        conditional = await redirecting.get(
            f"/v2/app/blobs/{digest}", headers=headers, allow_redirects=False
        )
        assert conditional.status == 307, (headers, conditional.status)
    # Distribution's switch still turns them off.
    disabled = await make_registry(
        {"REGISTRY_STORAGE_REDIRECT_ENABLED": "true", "REGISTRY_STORAGE_REDIRECT_DISABLE": "true"}
    )
    assert (await disabled.get(f"/v2/app/blobs/{digest}", allow_redirects=False)).status == 200

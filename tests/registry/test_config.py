"""The registry's config.yml schema: Distribution files load unchanged, REGISTRY_* overrides."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import typing
from pathlib import Path

import pytest

from registry.config import (
    IMPLEMENTED,
    ConfigError,
    RegistryConfig,
    load_config,
    unsupported_settings,
)

# The file the registry:2 image ships as /etc/docker/registry/config.yml.
STOCK_REGISTRY_2 = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""

# Distribution's "list of configuration options", with one storage driver and one auth
# method at a time ({driver} and {auth} are filled in); the rest is as documented,
# duplicated `tls` under redis and `storage` under middleware included.
DOCS_SAMPLE = """\
version: 0.1
log:
  accesslog:
    disabled: true
  level: debug
  formatter: text
  fields:
    service: registry
    environment: staging
  hooks:
    - type: mail
      disabled: true
      levels:
        - panic
      options:
        smtp:
          addr: mail.example.com:25
          username: mailuser
          password: password
          insecure: true
        from: sender@example.com
        to:
          - errors@example.com
loglevel: debug # deprecated: use "log"
storage:
{driver}
  tag:
    concurrencylimit: 8
  delete:
    enabled: false
  redirect:
    disable: false
  cache:
    blobdescriptor: redis
    blobdescriptorsize: 10000
  maintenance:
    uploadpurging:
      enabled: true
      age: 168h
      interval: 24h
      dryrun: false
    readonly:
      enabled: false
auth:
{auth}
middleware:
  registry:
    - name: ARegistryMiddleware
      options:
        foo: bar
  repository:
    - name: ARepositoryMiddleware
      options:
        foo: bar
  storage:
    - name: cloudfront
      options:
        baseurl: https://my.cloudfronted.domain.com/
        privatekey: /path/to/pem
        keypairid: cloudfrontkeypairid
        duration: 3000s
        ipfilteredby: awsregion
        awsregion: us-east-1, use-east-2
        updatefrequency: 12h
        iprangesurl: https://ip-ranges.amazonaws.com/ip-ranges.json
  storage:
    - name: redirect
      options:
        baseurl: https://example.com/
http:
  addr: localhost:5000
  prefix: /my/nested/registry/
  host: https://myregistryaddress.org:5000
  secret: asecretforlocaldevelopment
  relativeurls: false
  draintimeout: 60s
  tls:
    certificate: /path/to/x509/public
    key: /path/to/x509/private
    clientcas:
      - /path/to/ca.pem
      - /path/to/another/ca.pem
    clientauth: require-and-verify-client-cert
    minimumtls: tls1.2
    ciphersuites:
      - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
      - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
    letsencrypt:
      cachefile: /path/to/cache-file
      email: emailused@letsencrypt.com
      hosts: [myregistryaddress.org]
      directoryurl: https://acme-v02.api.letsencrypt.org/directory
  debug:
    addr: localhost:5001
    prometheus:
      enabled: true
      path: /metrics
  headers:
    X-Content-Type-Options: [nosniff]
  http2:
    disabled: false
  h2c:
    enabled: false
notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      disabled: false
      url: https://my.listener.com/event
      headers:  # the docs have a placeholder here: <http.Header>
        Authorization: [Bearer a-token]
      timeout: 1s
      threshold: 10
      backoff: 1s
      ignoredmediatypes:
        - application/octet-stream
      ignore:
        mediatypes:
           - application/octet-stream
        actions:
           - pull
redis:
  tls:
    certificate: /path/to/cert.crt
    key: /path/to/key.pem
    clientcas:
      - /path/to/ca.pem
  addrs: [localhost:6379]
  password: asecret
  db: 0
  dialtimeout: 10ms
  readtimeout: 10ms
  writetimeout: 10ms
  maxidleconns: 16
  poolsize: 64
  connmaxidletime: 300s
  tls:
    enabled: false
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
  file:
    - file: /path/to/checked/file
      interval: 10s
  http:
    - uri: http://server.to.check/must/return/200
      headers:
        Authorization: [Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==]
      statuscode: 200
      timeout: 3s
      interval: 10s
      threshold: 3
  tcp:
    - addr: redis-server.domain.com:6379
      timeout: 3s
      interval: 10s
      threshold: 3
proxy:
  remoteurl: https://upstream.example.com
  username: username
  password: password
  exec:
    command: docker-credential-helper
    lifetime: 1h
  ttl: 168h
  remotenamespace: namespace
validation:
  manifests:
    urls:
      allow:
        - ^https?://([^/]+\\.)*example\\.com/
      deny:
        - ^https?://www\\.example\\.com/
    indexes:
      platforms: List
      platformlist:
      - architecture: amd64
        os: linux
catalog:
  maxentries: 500
"""

DRIVERS = {
    "filesystem": "  filesystem:\n    rootdirectory: /var/lib/registry\n    maxthreads: 100",
    "inmemory": "  inmemory:  # This driver takes no parameters",
    "s3": "  s3:\n    accesskey: awsaccesskey\n    region: us-west-1\n    bucket: bucketname",
    "azure": "  azure:\n    accountname: accountname\n    container: containername",
    "gcs": "  gcs:\n    bucket: bucketname\n    keyfile: /path/to/keyfile",
}
AUTHS = {
    "silly": "  silly:\n    realm: silly-realm\n    service: silly-service",
    "token": (
        "  token:\n    autoredirect: true\n    realm: token-realm\n    service: token-service\n"
        "    issuer: registry-token-issuer\n    rootcertbundle: /etc/registry/certs/bundle\n"
        "    jwks: /path/to/jwks\n    signingalgorithms:\n        - EdDSA\n        - HS256"
    ),
    "htpasswd": "  htpasswd:\n    realm: basic-realm\n    path: /path/to/htpasswd",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def failure(path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ or {})
    return str(excinfo.value)


def test_defaults_without_file_or_environment() -> None:
    config = load_config(None, {})
    assert config.storage.driver_name == "filesystem"
    assert config.storage.filesystem is not None
    assert config.storage.filesystem.rootdirectory == "/var/lib/registry"
    assert config.storage.delete.enabled is False
    purging = config.storage.maintenance.uploadpurging
    assert purging.enabled is True
    assert purging.age == datetime.timedelta(hours=168)
    assert purging.interval == datetime.timedelta(hours=24)
    assert purging.dryrun is False
    assert config.storage.maintenance.readonly.enabled is False
    assert config.storage.redirect.disable is False
    assert config.http.addr == ":5000"
    assert config.http.relativeurls is False
    assert config.http.headers == {}
    assert config.auth.method_name is None
    assert config.log.level == "info"
    assert config.log.accesslog.disabled is False
    assert unsupported_settings(config) == []


def test_the_stock_registry_2_config_loads_unchanged(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, STOCK_REGISTRY_2), {})
    assert config.version == "0.1"
    assert config.log.fields == {"service": "registry"}
    assert config.storage.cache.blob_descriptor_cache == "inmemory"
    assert config.storage.driver_name == "filesystem"
    assert config.http.addr == ":5000"
    assert config.http.headers == {"X-Content-Type-Options": ["nosniff"]}
    assert config.health.storagedriver.interval == datetime.timedelta(seconds=10)
    assert config.health.storagedriver.threshold == 3
    assert unsupported_settings(config) == []


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("auth", AUTHS)
def test_the_documented_sample_loads(tmp_path: Path, driver: str, auth: str) -> None:
    text = DOCS_SAMPLE.format(driver=DRIVERS[driver], auth=AUTHS[auth])
    config = load_config(write(tmp_path, text), {})
    assert config.storage.driver_name == driver
    assert config.auth.method_name == auth
    assert config.log.level == "debug"
    assert config.http.addr == "localhost:5000"
    assert config.http.draintimeout == datetime.timedelta(seconds=60)
    assert config.http.tls.clientcas == ["/path/to/ca.pem", "/path/to/another/ca.pem"]
    assert config.validation.manifests.indexes.platforms == "list"
    assert config.catalog.maxentries == 500
    assert config.middleware["storage"][0]["name"] == "redirect"  # YAML: the last one wins
    unsupported = unsupported_settings(config)
    assert not any(key.startswith("notifications") for key in unsupported)  # implemented
    (endpoint,) = config.notifications.endpoints
    assert endpoint.headers == {"Authorization": ["Bearer a-token"]}
    assert endpoint.ignored_media_types == {"application/octet-stream"}
    assert endpoint.ignore.actions == ["pull"]
    assert not any(key.startswith("http.tls.letsencrypt") for key in unsupported)  # implemented
    assert not any(key.startswith("health") for key in unsupported)  # implemented
    (http_check,) = config.health.http
    assert http_check.headers == {"Authorization": ["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="]}
    assert http_check.timeout == datetime.timedelta(seconds=3) and http_check.threshold == 3
    assert config.health.tcp[0].addr == "redis-server.domain.com:6379"
    assert config.health.file[0].file == "/path/to/checked/file"
    assert ("storage." + driver in unsupported) == (driver in ("azure", "gcs"))


def test_settings_the_registry_acts_on_are_not_reported_as_ignored(tmp_path: Path) -> None:
    text = """\
version: 0.1
storage:
  filesystem: {rootdirectory: /srv/registry, maxthreads: 30}
http:
  addr: /run/registry.sock
  net: unix
  readheadertimeout: 5s
  idletimeout: 60s
  tls: {ciphersuites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]}
  http2: {disabled: true}
"""
    assert unsupported_settings(load_config(write(tmp_path, text), {})) == []


def test_distribution_2_8_sections_load(tmp_path: Path) -> None:
    text = """\
version: "0.1"
loglevel: warn
storage:
  s3: {bucket: b, region: r}
  cache: {layerinfo: redis}
compatibility:
  schema1: {signingkeyfile: /etc/registry/key.json, enabled: true}
reporting:
  bugsnag: {apikey: k}
redis:
  addr: localhost:6379
  pool: {maxidle: 16, maxactive: 64, idletimeout: 300s}
validation:
  enabled: true
"""
    config = load_config(write(tmp_path, text), {})
    assert config.log.level == "warn"  # the deprecated loglevel, as Distribution
    assert config.storage.s3 is not None
    assert (config.storage.s3.bucket, config.storage.s3.region) == ("b", "r")
    assert config.storage.cache.blob_descriptor_cache == "redis"
    assert config.compatibility["schema1"]["enabled"] is True
    assert unsupported_settings(config) == [
        "validation.enabled",
        "redis.pool.maxidle",
        "redis.pool.idletimeout",
        "compatibility",
        "reporting",
    ]


def test_the_guide_s_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, STOCK_REGISTRY_2)
    config = load_config(
        path,
        {
            "REGISTRY_HTTP_TLS_CERTIFICATE": "/certs/domain.crt",
            "REGISTRY_HTTP_TLS_KEY": "/certs/domain.key",
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
            "REGISTRY_AUTH_HTPASSWD_PATH": "/auth/htpasswd",
            "REGISTRY_HTTP_SECRET": "0123",
            "REGISTRY_STORAGE_DELETE_ENABLED": "true",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/somewhere",
            "REGISTRY_HTTP_ADDR": "0.0.0.0:443",
            "REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS_0": "registry.example.com",
            "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE": "72h",
            "REGISTRY_LOG_LEVEL": "DEBUG",
        },
    )
    assert config.http.tls.certificate == "/certs/domain.crt"
    assert config.http.tls.key == "/certs/domain.key"
    assert config.auth.method_name == "htpasswd"
    assert config.auth.htpasswd is not None
    assert config.auth.htpasswd.realm == "Registry Realm"
    assert config.auth.htpasswd.path == "/auth/htpasswd"
    assert config.http.secret == "0123"  # a string keeps its text even when YAML says number
    assert config.storage.delete.enabled is True
    assert config.storage.filesystem is not None
    assert config.storage.filesystem.rootdirectory == "/somewhere"
    assert config.storage.cache.blobdescriptor == "inmemory"  # untouched parts of the file stay
    assert config.http.addr == "0.0.0.0:443"
    assert config.http.tls.letsencrypt.hosts == ["registry.example.com"]
    assert config.storage.maintenance.uploadpurging.age == datetime.timedelta(hours=72)
    assert config.log.level == "debug"


def test_registry_storage_names_the_driver_and_replaces_the_section(tmp_path: Path) -> None:
    path = write(tmp_path, STOCK_REGISTRY_2)
    environ = {"REGISTRY_STORAGE": "inmemory", "REGISTRY_STORAGE_DELETE_ENABLED": "true"}
    config = load_config(path, environ)
    assert config.storage.driver_name == "inmemory"
    assert config.storage.filesystem is None
    assert config.storage.delete.enabled is True
    assert config.storage.cache.blobdescriptor == ""  # as Distribution: the section is replaced


def test_two_drivers_from_file_and_environment_is_an_error(tmp_path: Path) -> None:
    message = failure(
        None, {"REGISTRY_STORAGE": "inmemory", "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/x"}
    )
    assert "storage: more than one storage driver given (filesystem, inmemory)" in message
    assert "REGISTRY_STORAGE, REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY" in message
    text = "version: 0.1\nstorage:\n  filesystem: {}\n  s3: {bucket: b}\n"
    assert "more than one storage driver given (filesystem, s3)" in failure(write(tmp_path, text))


def test_an_empty_registry_auth_removes_the_file_s_method(tmp_path: Path) -> None:
    text = "version: 0.1\nauth:\n  htpasswd: {realm: r, path: /p}\n"
    assert load_config(write(tmp_path, text), {}).auth.method_name == "htpasswd"
    assert load_config(write(tmp_path, text), {"REGISTRY_AUTH": ""}).auth.method_name is None


def test_every_implemented_key_exists_in_the_schema() -> None:
    def has(section: object, path: list[str]) -> bool:
        if not path:
            return True
        if not dataclasses.is_dataclass(section):
            return False
        if path[0] not in {f.name for f in dataclasses.fields(section)}:
            return False
        value = getattr(section, path[0])
        if value is None and len(path) == 1:  # naming a whole (unselected) variant
            return True
        if value is None:  # an unselected variant: look into its type's defaults
            value = typing.get_args(typing.get_type_hints(type(section))[path[0]])[0]()
        return has(value, path[1:])

    for key in IMPLEMENTED:
        assert has(RegistryConfig(), key.split(".")), key
    assert not has(RegistryConfig(), ["storage", "filesystem", "rootdir"])


def test_header_overrides_use_the_header_name(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, STOCK_REGISTRY_2),
        {
            "REGISTRY_HTTP_HEADERS_X-CONTENT-TYPE-OPTIONS": "[nosniff, other]",
            "REGISTRY_HTTP_HEADERS_STRICT-TRANSPORT-SECURITY": "[max-age=31536000]",
        },
    )
    assert config.http.headers == {
        "X-Content-Type-Options": ["nosniff", "other"],
        "strict-transport-security": ["max-age=31536000"],
    }


def test_the_token_method_from_the_environment() -> None:
    config = load_config(
        None,
        {
            "REGISTRY_AUTH": "token",
            "REGISTRY_AUTH_TOKEN_REALM": "https://auth.example/token",
            "REGISTRY_AUTH_TOKEN_SERVICE": "registry",
            "REGISTRY_AUTH_TOKEN_ISSUER": "portside",
            "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE": "/certs/bundle.pem",
            "REGISTRY_AUTH_TOKEN_SIGNINGALGORITHMS": "[ES256, RS256]",
        },
    )
    assert config.auth.method_name == "token"
    assert config.auth.token is not None
    assert config.auth.token.signingalgorithms == ["ES256", "RS256"]
    assert config.auth.token.autoredirectpath == "/auth/token/"


def test_podman_s_registry_auth_file_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        config = load_config(None, {"REGISTRY_AUTH_FILE": "/run/user/0/s3cr3t-auth.json"})
    assert config.auth.method_name is None
    assert "REGISTRY_AUTH_FILE" in caplog.text
    assert "s3cr3t" not in caplog.text


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        (
            "storage: {filesystem: {rootdirectory: [a]}}",
            {},
            "storage.filesystem.rootdirectory: expected a string",
        ),
        ("version: 0.2", {}, "version: unsupported version"),
        ("version: 0.10", {}, "version: unsupported version"),
        ("log: {level: trace}", {}, "log.level: expected one of"),
        ("storage: {ftp: {}}", {}, "storage.ftp: unknown key"),
        (
            "storage: {delete: {enabled: yes please}}",
            {},
            "storage.delete.enabled: expected true or false",
        ),
        (
            "storage: {maintenance: {uploadpurging: {age: 1 week}}}",
            {},
            "storage.maintenance.uploadpurging.age: expected a duration",
        ),
        (
            "storage: {cache: {blobdescriptor: memcached}}",
            {},
            "storage.cache.blobdescriptor: expected one of",
        ),
        ("auth: {htpasswd: {realm: r}}", {}, "auth.htpasswd.path: must be set"),
        (
            "auth: {htpasswd: {realm: r, path: p}, silly: {realm: r, service: s}}",
            {},
            "auth: more than one auth method given (htpasswd, silly)",
        ),
        (
            "auth: {token: {realm: r, service: s, issuer: i}}",
            {},
            "auth.token.rootcertbundle: rootcertbundle or jwks must be set",
        ),
        (
            "auth: {token: {realm: r, service: s, issuer: i, jwks: j, signingalgorithms: [none]}}",
            {},
            "auth.token.signingalgorithms: expected names from",
        ),
        ("auth: kerberos", {}, "auth: expected a mapping or a auth method"),
        ("http: {tls: {certificate: /c}}", {}, "http.tls.key: must be set when certificate is"),
        ("http: {addr: '5000'}", {}, "http.addr: expected HOST:PORT"),
        ("http: {addr: ':99999'}", {}, "http.addr: expected a port number"),
        (
            "http: {host: myregistry.example}",
            {},
            "http.host: expected an absolute http:// or https:// URL",
        ),
        (
            "http: {headers: {X-Frame-Options: DENY}}",
            {},
            "http.headers.X-Frame-Options: expected a list",
        ),
        (
            "validation: {manifests: {urls: {allow: ['(']}}}",
            {},
            "validation.manifests.urls.allow: item 0 is not a valid regular expression",
        ),
        (
            "",
            {"REGISTRY_AUTH": "htpasswd"},
            "auth.htpasswd.realm: must be set (environment: REGISTRY_AUTH)",
        ),
        (
            "",
            {"REGISTRY_STORAGE_DELETE_ENABLED": "sure"},
            "storage.delete.enabled: expected true or false"
            " (environment: REGISTRY_STORAGE_DELETE_ENABLED)",
        ),
        (
            "",
            {"REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS_3": "x"},
            "http.tls.letsencrypt.hosts: '3' is not an index of this list (it has 0 items)"
            " (environment: REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS_3)",
        ),
    ],
)
def test_bad_settings_stop_loading_and_name_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], expected: str
) -> None:
    message = failure(write(tmp_path, "version: 0.1\n" * ("version" not in text) + text), environ)
    assert expected in message
    if not environ:
        assert "config.yml, line" in message


def test_path_may_be_a_string(tmp_path: Path) -> None:
    assert load_config(str(write(tmp_path, STOCK_REGISTRY_2)), {}).http.addr == ":5000"


def test_no_version_in_a_file_means_0_1(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "http: {addr: ':1'}"), {}).version == "0.1"


def test_the_configuration_is_frozen_and_defaults_construct() -> None:
    assert load_config(None, {}) == RegistryConfig()

"""The registry API conformance suite (all 79 OCI checks, the four workflows in one
repository) against a registry storing in S3 (moto, then RGW) with the Redis blob-descriptor cache:
the same test function, run here with this package's ``registry_environ``."""

from __future__ import annotations

from tests.registry.test_conformance_suite import test_all_79_checks_in_one_repository

__all__ = ["test_all_79_checks_in_one_repository"]

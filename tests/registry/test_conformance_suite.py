"""The whole OCI conformance suite as its users run it: the four workflows in order, in
one repository of one registry, each seeing what the earlier ones left behind."""

from __future__ import annotations

from tests.registry import (
    test_conformance_discovery as discovery,
)
from tests.registry import (
    test_conformance_management as management,
)
from tests.registry import (
    test_conformance_pull as pull,
)
from tests.registry import (
    test_conformance_push as push,
)
from tests.registry.helpers import RegistryClient, Suite, run_checks


async def test_all_79_checks_in_one_repository(registry: RegistryClient) -> None:
    suite = Suite(registry)
    failures = await run_checks(suite, pull.PullState(), pull.CHECKS)
    failures += await run_checks(suite, push.PushState(), push.CHECKS)
    failures += await run_checks(suite, discovery.DiscoveryState(), discovery.CHECKS)
    failures += await run_checks(suite, management.ManagementState(), management.CHECKS)
    count = sum(len(m.CHECKS) for m in (pull, push, discovery, management))
    assert count == 79
    assert failures == [], "\n".join(failures)

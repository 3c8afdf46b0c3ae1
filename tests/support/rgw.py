"""Ceph's RADOS Gateway as the tests' real S3: a single-node cluster (one monitor, one
manager, one memstore OSD, one gateway) started by ``scripts/rgw-single-node``, the same
script the compose deployment's S3 image runs.

``RadosGateway`` has ``MotoServer``'s interface (``url``, ``s3_environ``,
``driver_config``, ``create_bucket``); the session-wide one comes from
``tests.support.backing_services.shared_services().rgw()``.
"""

from __future__ import annotations

import shutil

from tests.support.backing_services import S3Server
from tests.support.portside_servers import REPOSITORY_ROOT
from tests.support.tools import unavailable

SCRIPT = REPOSITORY_ROOT / "scripts" / "rgw-single-node"
DAEMONS = {
    "ceph-mon": "ceph-mon",
    "ceph-mgr": "ceph-mgr",
    "ceph-osd": "ceph-osd",
    "radosgw": "radosgw",
    "radosgw-admin": "radosgw",
    "ceph": "ceph-common",
    "monmaptool": "ceph-common",
}
READY_LINE = b"rgw-single-node: ready"


class RadosGateway(S3Server):
    """A whole Ceph cluster behind one S3 port; about 10-20 s to start on 2 busy cores
    (the cluster is created from nothing each time), so tests share one per session."""

    name = "rgw"
    start_timeout = 150.0
    new_session = True  # the script's daemons are in its process group

    def command(self) -> list[str]:
        missing = sorted({p for tool, p in DAEMONS.items() if shutil.which(tool) is None})
        if missing:
            unavailable("a single-node Ceph needs the Debian packages " + " ".join(missing))
        cluster = self.workdir / "cluster"
        shutil.rmtree(cluster, ignore_errors=True)  # a restart starts a new cluster
        return [str(SCRIPT), str(cluster), str(self.port), self.access_key, self.secret_key]

    def start(self) -> None:
        # Once more on failure, with a new cluster: on a machine loaded many times over
        # its cores, a daemon can lose a start-up race (docs/scaling.md says which).
        try:
            super().start()
        except RuntimeError:
            self.stop()
            super().start()

    def ready(self) -> bool:
        # The script prints its line once the S3 user exists and the gateway answers.
        try:
            return READY_LINE in self.log_path.read_bytes()
        except OSError:
            return False

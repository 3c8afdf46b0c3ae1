"""A real OpenLDAP ``slapd`` (Debian ``slapd``) for the LDAP authenticator's tests.

Each instance has its own ``slapd.conf`` and mdb database in a temporary directory and
listens on a free loopback port; it is seeded with ``ldapadd``: people under
``ou=people``, groups (``groupOfNames``, so the memberof overlay fills ``memberOf``)
under ``ou=groups``, a service account that may search, and a user marked disabled the
way many directories do it (``employeeType: disabled``, excluded by the filter).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.backing_services import Service
from tests.support.tools import require_tool

SUFFIX = "dc=example,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "admin-secret"
READER_DN = f"cn=reader,{SUFFIX}"
READER_PASSWORD = "reader-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
# uid: (password, employeeType or None); groups below.
PEOPLE_ENTRIES = {
    "lena": ("lena-ldap", None),
    "erin": ("erin-ldap", None),
    "carol": ("carol-ldap", None),
    "dave": ("dave-ldap", "disabled"),
}
GROUP_MEMBERS = {"developers": ["lena", "erin"], "ops": ["lena"]}
FILTER = "(&(uid=${account})(!(employeeType=disabled)))"

_CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {directory}/slapd.pid
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{root}"
rootpw {root_password}
directory {directory}/db
overlay memberof
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
"""


def _seed() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Test",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups",
        f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject"
        f"\ncn: reader\nuserPassword: {READER_PASSWORD}",
    ]
    for uid, (password, kind) in PEOPLE_ENTRIES.items():
        entry = (
            f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}"
            f"\nsn: {uid}\nuserPassword: {password}"
        )
        entries.append(entry + (f"\nemployeeType: {kind}" if kind else ""))
    for group, members in GROUP_MEMBERS.items():
        lines = [f"dn: cn={group},{GROUPS}", "objectClass: groupOfNames", f"cn: {group}"]
        lines += [f"member: uid={uid},{PEOPLE}" for uid in members]
        entries.append("\n".join(lines))
    return "\n\n".join(entries) + "\n"


class Slapd(Service):
    """slapd on 127.0.0.1:<port>, in the foreground (``-d 0``), seeded at start."""

    name = "slapd"

    def __init__(self, workdir: Path, tls: tuple[Path, Path, Path] | None = None) -> None:
        """``tls``: CA bundle, certificate and key files: StartTLS is then offered."""
        super().__init__(workdir)
        self.tls = tls
        self.binary = require_tool("slapd", "slapd")
        require_tool("ldapadd", "ldap-utils")
        self.seeded = False

    def command(self) -> list[str]:
        config = self.workdir / "slapd.conf"
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        tls = ""
        if self.tls is not None:
            ca, certificate, key = self.tls
            tls = (
                f"TLSCACertificateFile {ca}\nTLSCertificateFile {certificate}\n"
                f"TLSCertificateKeyFile {key}\n"
            )
        config.write_text(
            tls
            + _CONFIG.format(
                directory=self.workdir,
                suffix=SUFFIX,
                root=ROOT_DN,
                root_password=ROOT_PASSWORD,
            )
        )
        return [self.binary, "-f", str(config), "-h", f"ldap://127.0.0.1:{self.port}/", "-d", "0"]

    def start(self) -> None:
        super().start()
        if not self.seeded:  # a restart keeps its database
            try:
                self.ldap("ldapadd", _seed())
            except BaseException:
                self.stop()  # never leave a server behind a failed start
                raise
            self.seeded = True

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ldap(self, tool: str, ldif: str) -> None:
        """Run ``ldapadd``/``ldapmodify`` as the directory's root with ``ldif`` on stdin."""
        subprocess.run(
            [tool, "-x", "-H", f"ldap://{self.addr}/", "-D", ROOT_DN, "-w", ROOT_PASSWORD],
            input=ldif.encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )

    def set_password(self, uid: str, password: str) -> None:
        self.ldap(
            "ldapmodify",
            f"dn: uid={uid},{PEOPLE}\nchangetype: modify\nreplace: userPassword\n"
            f"userPassword: {password}\n",
        )

    def disable(self, uid: str) -> None:
        self.ldap(
            "ldapmodify",
            f"dn: uid={uid},{PEOPLE}\nchangetype: modify\nreplace: employeeType\n"
            "employeeType: disabled\n",
        )

    def config_yaml(self, bind_file: str = "reader-bind.txt", **extra: str) -> str:
        """The ``ldap:`` section of a tokenauth config pointing at this directory."""
        lines = [
            "ldap:",
            f"  addr: {self.addr}",
            f"  binddn: {READER_DN}",
            f"  bindpasswordfile: {bind_file}",
            f"  base: {PEOPLE}",
            f'  filter: "{FILTER}"',
            "  timeout: 3s",
        ]
        lines += [f"  {key}: {value}" for key, value in extra.items()]
        return "\n".join(lines) + "\n"

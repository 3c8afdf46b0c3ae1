"""An external program as an authorizer: docker_auth's ``ext_authz`` contract.

For each requested scope the program reads one JSON object on standard input, docker_auth's
``AuthRequestInfo``: ``{"Account", "Type", "Name", "Service", "IP", "Actions", "Labels"}``
(``Labels`` holds ``{"group": [...]}``), and answers with its exit code: 0 grants the
requested actions, 1 grants none; any other status, a crash or a timeout answers the
request 503. As an extension, a program exiting 0 may print a JSON list of actions
(``["pull"]``) to grant only those of the requested ones.
"""

from __future__ import annotations

import json
from typing import Any

from tokenauth.authz import AccessDecision, AccessRequest, AuthorizerUnavailable
from tokenauth.config import ExternalConfig
from tokenauth.external import ExternalProgram, ProgramFailed


class ExternalAuthorizer:
    name = "extauthz"

    def __init__(self, config: ExternalConfig) -> None:
        self.program = ExternalProgram(config, self.name)
        self.command = config.command
        self.last_error: str | None = None

    async def authorize(self, request: AccessRequest) -> AccessDecision | None:
        scope = request.scope
        info = {
            "Account": request.identity.account,
            "Type": scope.type,
            "Name": scope.name,
            "Service": request.service,
            "IP": str(request.ip) if request.ip is not None else "",
            "Actions": list(scope.actions),
            "Labels": {"group": list(request.identity.groups)},
        }
        try:
            answer = await self.program.ask(json.dumps(info).encode() + b"\n")
        except ProgramFailed as error:
            self.last_error = str(error)
            raise AuthorizerUnavailable(str(error)) from None
        if answer.status == 1:
            return AccessDecision(scope.intersect(()))
        if answer.status != 0:
            self.last_error = f"extauthz: the program exited with status {answer.status}"
            raise AuthorizerUnavailable(self.last_error)
        if not answer.output.strip():
            return AccessDecision(scope)
        try:
            actions = json.loads(answer.output)
        except ValueError:
            actions = None
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            self.last_error = "extauthz: the program printed something else than a JSON list"
            raise AuthorizerUnavailable(self.last_error)
        return AccessDecision(scope.intersect(actions))

    def health(self) -> dict[str, Any]:
        return {"command": self.command, "state": "ok", "last_error": self.last_error}

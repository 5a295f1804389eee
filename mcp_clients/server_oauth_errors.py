"""What can go wrong connecting to a server with its own authorization server (`auth: oauth`).

    TokenUnavailable (mcp_clients.tokens)   no token for this call; the message is safe to show the person
    ├── ConnectNeeded      the person must connect (or reconnect, or grant more access: `step_up`) first
    └── ServerAuthError    this server's authorization cannot be used as it is (ask its owners)
        ├── ResourceMismatch  its protected resource metadata names another resource (RFC 9728 §3.3)
        └── StepUpRefused     it keeps asking for more access than it grants (the step-up limit)
    ConnectFailed          a connection attempt that came back from the browser did not complete

`ConnectNeeded` is the machine-readable marker the turn turns into a "Connect <server>" button: it names the
registry server, and says whether the person is asked for more access than before.
"""

from __future__ import annotations

from mcp_clients.tokens import TokenUnavailable

__all__ = ["ConnectFailed", "ConnectNeeded", "ResourceMismatch", "ServerAuthError", "StepUpRefused"]


class ConnectNeeded(TokenUnavailable):
    def __init__(self, server: str, short_name: str, *, step_up: bool = False, why: str = "") -> None:
        what = f"grant {short_name} more access" if step_up else f"connect {short_name}"
        super().__init__(f"{what} first{f' ({why})' if why else ''}: press Connect {short_name}")
        self.server = server
        self.short_name = short_name
        self.step_up = step_up


class ServerAuthError(TokenUnavailable):
    pass


class ResourceMismatch(ServerAuthError):
    pass


class StepUpRefused(ServerAuthError):
    pass


class ConnectFailed(Exception):
    """The message is shown on the page the browser lands on; `reason` is a short code for the audit."""

    def __init__(self, message: str, *, reason: str, team: str = "", user: str = "", server: str = ""):
        super().__init__(message)
        self.reason = reason
        self.team = team
        self.user = user
        self.server = server

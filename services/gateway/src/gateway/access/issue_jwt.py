"""`python -m gateway.access.issue_jwt <user> [hours]` (`make token USER=alice`): a development
token signed with LIVECHAT_JWT_SECRET, valid 24 hours unless told otherwise.

The secret is read as the gateway reads it (its settings, from the environment: set on
the command line, `LIVECHAT_JWT_SECRET=... make token`, or exported); a secret shorter
than 32 bytes is refused with one line, as the gateway refuses to start with it.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import jwt

from gateway.access.auth import JWT_ALGORITHM, MAX_USER_ID_CHARS
from gateway.settings import GatewaySettings
from runtime.config_errors import ConfigError, load_settings

__all__ = ["issue_token", "main"]

DEFAULT_LIFETIME = timedelta(hours=24)


def issue_token(
    settings: GatewaySettings,
    user_id: str,
    *,
    lifetime: timedelta = DEFAULT_LIFETIME,
    now: datetime | None = None,
) -> str:
    """A JWT the gateway configured by `settings` accepts for `user_id`."""
    if settings.jwt_secret is None:
        raise ValueError("LIVECHAT_JWT_SECRET is not set")
    if not user_id.strip() or len(user_id) > MAX_USER_ID_CHARS:
        raise ValueError(f"a user id is 1-{MAX_USER_ID_CHARS} characters")
    issued = now or datetime.now(UTC)
    claims: dict[str, object] = {"sub": user_id, "iat": issued, "exp": issued + lifetime}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=JWT_ALGORITHM)


def _signing_settings() -> GatewaySettings:
    """The gateway's settings, with a secret fit to sign with (long enough: the settings
    refuse a shorter one); else ValueError (one line)."""
    try:
        settings = load_settings(GatewaySettings)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if settings.jwt_secret is None:
        raise ValueError(
            "LIVECHAT_JWT_SECRET is not set: run `LIVECHAT_JWT_SECRET=<the gateway's secret> "
            "make token USER=alice` with the secret the gateway runs with"
        )
    return settings


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m gateway.access.issue_jwt <user> [hours]", file=sys.stderr)
        return 2
    try:
        hours = float(args[1]) if len(args) == 2 else 24.0
        token = issue_token(_signing_settings(), args[0], lifetime=timedelta(hours=hours))
    except ValueError as exc:
        print(f"cannot issue a token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())

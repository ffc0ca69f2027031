"""Bearer tokens: what ``merc serve --token`` / ``MERC_TOKEN`` asks of every ``/v1`` request and stream."""
from __future__ import annotations

import hmac


class HTTPError(Exception):
    """An HTTP error answer: status, the `detail` message, extra headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def check_token(token: str | None, authorization: str | None) -> None:
    """HTTPError 401 unless ``authorization`` is ``Bearer <token>`` (nothing to check without a token)."""
    if not token:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPError(401, "missing or wrong token: send 'Authorization: Bearer <token>' (the token given to "
                             "merc serve with --token or MERC_TOKEN)", {"WWW-Authenticate": "Bearer"})

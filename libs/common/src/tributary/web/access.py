"""How a service's API is reached, from its settings: credentials, docs, /metrics.

:meth:`ApiAccess.from_settings` turns API_TOKENS, OIDC_*, HTTP_DOCS and
METRICS_PORT into what :func:`tributary.http.create_app` needs. ``ApiAccess()``
is an API without authentication (every caller has every scope), which the
settings only allow on a loopback address or with HTTP_ALLOW_INSECURE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from tributary.config import DocsMode, ServiceSettings
from tributary.web.identity import Authenticator
from tributary.web.oidc import DISCOVERY_PATH, JwksCache, JwtVerifier, OidcConfig
from tributary.web.tokens import parse_api_tokens


@dataclass(frozen=True)
class ApiAccess:
    authenticator: Authenticator = field(default_factory=Authenticator)
    docs: DocsMode = "off"
    #: /metrics on the API (behind <service>:metrics); False when METRICS_PORT serves it
    metrics_on_api: bool = True

    @property
    def oidc_discovery_url(self) -> str | None:
        verifier = self.authenticator.jwt
        if verifier is None:
            return None
        return verifier.config.issuer.rstrip("/") + DISCOVERY_PATH

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> ApiAccess:
        """``transport``: how the issuer is reached (tests pass a fake issuer's)."""
        tokens = parse_api_tokens(settings.api_tokens.get_secret_value())
        verifier = None
        if settings.oidc_issuer and settings.oidc_audience:
            config = OidcConfig(
                issuer=settings.oidc_issuer,
                audience=settings.oidc_audience,
                jwks_url=settings.oidc_jwks_url,
                algorithms=tuple(settings.oidc_algorithms.split(",")),
                leeway_s=settings.oidc_leeway_seconds,
                cache_s=settings.oidc_jwks_cache_seconds,
                min_refresh_s=settings.oidc_jwks_min_refresh_seconds,
            )
            verifier = JwtVerifier(config, JwksCache(config, transport))
        return cls(
            authenticator=Authenticator(tokens, verifier),
            docs=settings.http_docs,
            metrics_on_api=settings.metrics_port is None,
        )

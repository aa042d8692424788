"""The guard in front of every route but health and metrics: key → scope → model → rate limit.

``Auth.authenticate`` is the one key check, protocol-neutral (the prediction endpoints pass the
headers they read from the ASGI scope; a gRPC front end would pass its metadata). A key this
process remembers is checked at once, with no coroutine; one it must look up in the database is
answered as an awaitable (``KeyStore.verify``), and so are the checks built on it.
``Auth.authorize`` adds the prediction path's rate limit to it; ``requires`` adapts it to
Starlette endpoints, whose rate limit slowapi counts, answers and writes headers for. Requests are
rate-limited only once they are authorised, so a key's budget is spent on requests it was
allowed to make.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter
from slowapi.errors import RateLimitExceeded
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from core.errors import MdeployError, PermissionDenied, ResourceExhausted, Unauthenticated
from gateway.auth.failed_auth import FailedAuthentications
from gateway.auth.keys import KeyRecord, KeyStore
from gateway.auth.ratelimit import RateLimiter, RateLimitState
from gateway.auth.scopes import KeyScope
from gateway.database.engine import Database
from gateway.database.notifications import Notifications
from gateway.settings import GatewaySettings

Endpoint = Callable[[Request], Awaitable[Response]]

SCOPE_ATTRIBUTE = "__mdeploy_scope__"
"""Set on guarded endpoints to the scope they require, so tests can check the route table."""
SCOPES_ATTRIBUTE = "__mdeploy_scopes__"
"""Every scope a guarded endpoint accepts (its required scope first)."""


@dataclass(slots=True)  # per request: a frozen dataclass costs ~4x to build
class Grant:
    """An authorised request: whose key, and where its rate limit stands."""

    key: KeyRecord
    rate: RateLimitState


@dataclass
class Auth:
    """API keys and rate limits of one gateway process (``app.state.auth``)."""

    keys: KeyStore
    limiter: RateLimiter
    rate_limited: Counter | None = None
    """Counts requests refused with 429, labelled by scope (the gateway's metrics)."""
    failures: FailedAuthentications = field(
        default_factory=lambda: FailedAuthentications(
            GatewaySettings.model_fields["auth_failures_per_minute"].default
        )
    )
    """Failed authentications per client address: floods of bad keys are refused at once."""

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        database: Database,
        rate_limited: Counter | None = None,
        notifications: Notifications | None = None,
    ) -> Auth:
        """``notifications``: how keys changed by other processes are told (PostgreSQL); see KeyStore."""
        defaults = {
            KeyScope.PREDICT: settings.rate_limit_predict,
            KeyScope.FEEDBACK: settings.rate_limit_feedback,
            KeyScope.ADMIN: settings.rate_limit_admin,
        }
        limiter = RateLimiter(settings.rate_limit_storage, defaults, settings.rate_limit_fail_open)
        failures = FailedAuthentications(settings.auth_failures_per_minute)
        return cls(KeyStore(database, notifications), limiter, rate_limited, failures)

    def authorize(
        self,
        authorization: str | None,
        api_key: str | None,
        scope: KeyScope,
        model: str | None = None,
        client: str | None = None,
    ) -> Grant | Awaitable[Grant]:
        """The one way in, for every front end: the key presented in ``Authorization: Bearer`` or
        ``X-API-Key``, its scope and model list, then its rate limit.

        ``client`` is the caller's address, whose failed authentications are counted.
        Raises Unauthenticated (with ``WWW-Authenticate``), PermissionDenied, ResourceExhausted or
        Unavailable. For a key this process remembers, with a limiter that counts in this process,
        the answer is the Grant itself: the prediction path then runs no coroutine for it.
        Otherwise it is an awaitable of the Grant; :func:`granted` takes either.
        """
        key = self.authenticate(authorization, api_key, scope, model, client)
        if not isinstance(key, KeyRecord):
            return self._authorized_later(key, scope)
        return self._grant(key, scope)

    async def _authorized_later(self, key: Awaitable[KeyRecord], scope: KeyScope) -> Grant:
        return await granted(self._grant(await key, scope))

    def _grant(self, key: KeyRecord, scope: KeyScope) -> Grant | Awaitable[Grant]:
        if not self.limiter.in_process:
            return self._limited(key, scope)
        try:
            return Grant(key, self.limiter.hit_in_process(key, scope))
        except ResourceExhausted:
            self._refused(scope)
            raise

    def authenticate(
        self,
        authorization: str | None,
        api_key: str | None,
        scope: KeyScope,
        model: str | None = None,
        client: str | None = None,
    ) -> KeyRecord | Awaitable[KeyRecord]:
        """The presented key's record, if it holds ``scope`` (and may use ``model``); else raises
        Unauthenticated (with ``WWW-Authenticate``) or PermissionDenied. Counts no rate limit;
        a failure counts against ``client``'s address, and an address past its allowance of
        failures gets ResourceExhausted at once unless the key is one this process remembers.
        An awaitable of the record when the key had to be looked up (it raises when awaited)."""
        key = self._verified(authorization, api_key, client)
        if not isinstance(key, KeyRecord):
            return self._allowed_later(key, scope, model)
        return self._allowed(key, scope, model)

    async def _allowed_later(
        self, key: Awaitable[KeyRecord], scope: KeyScope, model: str | None
    ) -> KeyRecord:
        return self._allowed(await key, scope, model)

    def _verified(
        self, authorization: str | None, api_key: str | None, client: str | None
    ) -> KeyRecord | Awaitable[KeyRecord]:
        """The key's record (or an awaitable of it); a failure (Unauthenticated, with
        ``WWW-Authenticate``) counts against ``client``, which may be refused at once."""
        wait = self.failures.blocked_for(client)
        try:
            presented = presented_key(authorization, api_key)
            if wait is not None and not self.keys.remembers(presented):
                raise ResourceExhausted(
                    f"too many failed authentications from {client}; retry in {wait} s with a valid key",
                    headers={"Retry-After": str(wait)},
                )
            key = self.keys.verify(presented)
        except Unauthenticated as error:
            self._failed(error, client)
            raise
        if isinstance(key, KeyRecord):
            return key
        return self._looked_up(key, client)

    async def _looked_up(self, key: Awaitable[KeyRecord], client: str | None) -> KeyRecord:
        try:
            return await key
        except Unauthenticated as error:
            self._failed(error, client)
            raise

    def _failed(self, error: Unauthenticated, client: str | None) -> None:
        self.failures.failed(client)
        error.headers.setdefault("WWW-Authenticate", "Bearer")

    async def held_scope(
        self,
        authorization: str | None,
        api_key: str | None,
        scopes: Sequence[KeyScope],
        client: str | None = None,
    ) -> KeyScope:
        """The first of ``scopes`` the presented key holds: the scope its request counts in."""
        if len(scopes) == 1:
            return scopes[0]
        key = self._verified(authorization, api_key, client)
        if not isinstance(key, KeyRecord):
            key = await key
        for scope in scopes:
            if key.has_scope(scope):
                return scope
        wanted = " or ".join(repr(scope.value) for scope in scopes)
        held = ", ".join(sorted(key.scopes))
        raise PermissionDenied(f"API key {key.id} has neither scope {wanted} (it has: {held})")

    async def authorize_route(self, request: Request, scope: KeyScope, model: str | None) -> Grant:
        """``authorize`` for a Starlette route: the same key check, then slowapi's count, whose
        refusal (slowapi's RateLimitExceeded) its handler answers."""
        headers = request.headers
        client = request.client.host if request.client else None
        key = self.authenticate(headers.get("authorization"), headers.get("x-api-key"), scope, model, client)
        if not isinstance(key, KeyRecord):
            key = await key
        request.state.api_key = key  # slowapi's key function reads it
        try:
            return Grant(key, await self.limiter.hit_route(request, key, scope))
        except RateLimitExceeded:
            self._refused(scope)
            raise

    async def _limited(self, key: KeyRecord, scope: KeyScope) -> Grant:
        try:
            return Grant(key, await self.limiter.hit(key, scope))
        except ResourceExhausted:
            self._refused(scope)
            raise

    def _allowed(self, key: KeyRecord, scope: KeyScope, model: str | None) -> KeyRecord:
        if not key.has_scope(scope):
            held = ", ".join(sorted(key.scopes))
            raise PermissionDenied(f"API key {key.id} lacks the {scope.value!r} scope (it has: {held})")
        if model is not None and not key.allows_model(model):
            raise PermissionDenied(f"API key {key.id} may not use model {model!r}")
        return key

    def _refused(self, scope: KeyScope) -> None:
        if self.rate_limited is not None:
            self.rate_limited.labels(scope.value).inc()

    async def aclose(self) -> None:
        await self.limiter.aclose()
        self.keys.close()


def requires(
    scope: KeyScope, *alternatives: KeyScope, model_param: str | None = None
) -> Callable[[Endpoint], Endpoint]:
    """Guard a Starlette endpoint with ``scope`` (or one of ``alternatives``, tried in order);
    the key's record is at ``request.state.api_key``."""
    scopes = (scope, *alternatives)

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            auth: Auth = request.app.state.auth
            model = request.path_params.get(model_param) if model_param else None
            headers = request.headers
            client = request.client.host if request.client else None
            presented = headers.get("authorization"), headers.get("x-api-key")
            held = await auth.held_scope(*presented, scopes, client)
            grant = await auth.authorize_route(request, held, model)
            try:
                response = await endpoint(request)
            except MdeployError as error:
                error.headers = {**grant.rate.headers(), **error.headers}
                raise
            # slowapi's header injection (GatewayLimiter formats it), as on its 429s.
            return auth.limiter.slowapi._inject_headers(response, request.state.view_rate_limit)

        setattr(guarded, SCOPE_ATTRIBUTE, scope)
        setattr(guarded, SCOPES_ATTRIBUTE, scopes)
        return guarded

    return decorate


def required_scope(endpoint: object) -> KeyScope | None:
    """The scope a guarded endpoint requires; None for an unguarded one."""
    scope = getattr(endpoint, SCOPE_ATTRIBUTE, None)
    return scope if isinstance(scope, KeyScope) else None


def accepted_scopes(endpoint: object) -> tuple[KeyScope, ...]:
    """Every scope that lets a key through ``endpoint`` (the required one first); () if unguarded."""
    scopes = getattr(endpoint, SCOPES_ATTRIBUTE, None)
    if isinstance(scopes, tuple):
        return scopes
    scope = required_scope(endpoint)
    return (scope,) if scope is not None else ()


def route_scopes(routes: Iterable[BaseRoute], prefix: str = "") -> dict[str, KeyScope | None]:
    """``{"GET /path": scope or None}`` for every endpoint route, descending into mounts."""
    table: dict[str, KeyScope | None] = {}
    for route in routes:
        if isinstance(route, Mount):
            table.update(route_scopes(route.routes, prefix + route.path))
        elif isinstance(route, Route):
            methods = ",".join(sorted(route.methods or {"*"}))
            table[f"{methods} {prefix}{route.path}"] = required_scope(route.endpoint)
    return table


async def granted(answer: Grant | Awaitable[Grant]) -> Grant:
    """What :meth:`Auth.authorize` answered, awaited if it had to wait for the limiter."""
    return answer if isinstance(answer, Grant) else await answer


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    if authorization is None:
        return api_key
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must read 'Bearer <key>'")
    return token.strip()

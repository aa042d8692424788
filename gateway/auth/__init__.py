"""API keys, scopes and rate limits: who may call which route, and how often."""

from gateway.auth.authorization import Auth, Grant, required_scope, requires, route_scopes
from gateway.auth.keys import CreatedKey, KeyRecord, KeyStore, parse_expiry
from gateway.auth.ratelimit import RateLimiter, RateLimitState, parse_rate_limit
from gateway.auth.scopes import KeyScope

__all__ = [
    "Auth",
    "CreatedKey",
    "Grant",
    "KeyRecord",
    "KeyScope",
    "KeyStore",
    "RateLimitState",
    "RateLimiter",
    "parse_expiry",
    "parse_rate_limit",
    "required_scope",
    "requires",
    "route_scopes",
]

"""An Envoy edge in front of several gateway hosts: the static v3 bootstrap ``mdeploy edge-config`` writes.

Two listeners, one per gateway door: HTTP (HTTP/1.1 or h2c from clients, HTTP/1.1 to the
gateways' uvicorn) and gRPC (HTTP/2 end to end, so ``tritonclient.grpc`` works unchanged). Each
balances round-robin over its cluster of gateways, actively health-checked (HTTP
``GET /v2/health/ready``; ``grpc.health.v1`` for the inference service) and with outlier detection.

Retries are chosen by what a repeat can do:

- any request: connection refused, a refused HTTP/2 stream, a reset before the request was sent.
  The gateway never saw it.
- predictions (``POST .../infer``, ``POST ...:predict``; every gRPC call but the repository's
  load and unload) also after a reset or timeout with no response yet, and on 503 / UNAVAILABLE
  (gRPC: CANCELLED too): a prediction changes nothing but counters, a prediction-log row and the
  feedback ledger's entry for its request id, and Envoy sends the same ``x-request-id`` again, so
  the entry the client can reward is the answer it got.
- ``GET`` / ``HEAD`` also on any 5xx.
- everything else (uploads, deployment changes, keys, feedback, RepositoryModelLoad/Unload)
  never once the gateway may have acted on it: it could happen twice.

A retry goes to another gateway (``previous_hosts``), within a per-try timeout, and the retries
in flight are capped by a retry budget so that a failing fleet is not hit with extra load.

A gateway host that vanishes without a word (power, link, partition: no RST, no FIN) is not left
to the per-try timeout: TCP_USER_TIMEOUT and TCP keepalive on Envoy's upstream sockets end its
connections within ``unreachable_timeout_s``, and the requests on them count as reset. A live
gateway's kernel acknowledges at once however slow its answer, so slow answers are not cut.
Two other means would not do: ``close_connections_on_host_health_failure`` only drains HTTP
connection pools (Envoy 1.40: the requests on them stay), and HTTP/2 PINGs faster than grpcio's
ping policy allows (one per 5 minutes while it sends nothing) make a gateway close the
connection during a slow call.

Draining: Envoy itself stops gracefully through its admin API (``/healthcheck/fail``, then
``/drain_listeners?graceful``, wait ``--drain-time-s``, then SIGTERM); ``/edge/ready`` answers 503
from the first step on, for a load balancer in front. A gateway's own SIGTERM closes its
listening sockets at once: Envoy's new connections are refused (retried elsewhere), its health
checks fail, and requests in flight finish within the gateway's ``shutdown_grace_s``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from core import __version__
from core.errors import InvalidInput
from protos.servicing import SERVICE_NAME

Json = dict[str, Any]

MAX_GATEWAYS = 64
HTTP_CLUSTER = "gateways_http"
GRPC_CLUSTER = "gateways_grpc"
EDGE_READY_PATH = "/edge/ready"
"""Answered by Envoy itself: 200 while it takes traffic, 503 once ``/healthcheck/fail`` was called."""
PREDICTION_PATHS = r"/v1/models/[^/]+(/versions/[^/]+)?:predict|/v2/models/[^/]+(/versions/[^/]+)?/infer"
_GRPC_METHOD = f"/{SERVICE_NAME}/"
_GRPC_CHANGES = ("RepositoryModelLoad", "RepositoryModelUnload")
"""gRPC methods that change what is served: never repeated once sent."""
_GRPC_STREAM = "ModelStreamInfer"
# uvicorn closes idle keep-alive connections after 5 s; Envoy closes its own first, so that it
# never sends a request on a connection the gateway is closing.
_UPSTREAM_IDLE_S = 3.0
_MAX_DOWNSTREAM_CONNECTIONS = 50_000
_MIN_UNREACHABLE_S = 2.0
"""Keepalive probes go once a second (it counts whole seconds): a margin above one."""
_IPPROTO_TCP = 6
_TCP_USER_TIMEOUT = 18  # Linux
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host (IPv4, IPv6 or DNS name) and a TCP port."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str) -> HostPort:
        """``host:port`` or ``[ipv6]:port``; InvalidInput naming ``what`` when it is not one."""
        text = text.strip()
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
        else:
            host, sep, port = text.rpartition(":")
            if ":" in host:
                raise InvalidInput(f"{what} {text!r}: write an IPv6 address in brackets, as [::1]:8000")
        if not sep or not host or not port:
            raise InvalidInput(f"{what} {text!r} is not HOST:PORT")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise InvalidInput(f"{what} {text!r}: the port must be a number from 1 to 65535")
        if not _valid_host(host, bracketed=text.startswith("[")):
            raise InvalidInput(f"{what} {text!r}: {host!r} is neither an IP address nor a host name")
        return cls(host, int(port))

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def is_wildcard(self) -> bool:
        return self.is_ip and ipaddress.ip_address(self.host).is_unspecified

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _valid_host(host: str, *, bracketed: bool) -> bool:
    if bracketed:
        try:
            return ipaddress.ip_address(host).version == 6
        except ValueError:
            return False
    if re.fullmatch(r"[\d.]+", host):  # looks numeric: only a real IPv4 address will do
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return _HOST_NAME.fullmatch(host) is not None


def parse_gateways(text: str, what: str) -> tuple[HostPort, ...]:
    """A comma-separated list of 1 to ``MAX_GATEWAYS`` distinct ``host:port``."""
    items = [item for item in (part.strip() for part in text.split(",")) if item]
    if not items:
        raise InvalidInput(f"{what} is empty: give at least one HOST:PORT")
    if len(items) > MAX_GATEWAYS:
        raise InvalidInput(f"{what} lists {len(items)} gateways; at most {MAX_GATEWAYS}")
    hosts = tuple(HostPort.parse(item, what) for item in items)
    seen: set[HostPort] = set()
    for host in hosts:
        if host in seen:
            raise InvalidInput(f"{what}: {host} is listed twice")
        seen.add(host)
    return hosts


def with_port_offset(gateways: Sequence[HostPort], offset: int) -> tuple[HostPort, ...]:
    """The same hosts, each port moved by ``offset`` (the gRPC API next to the HTTP one)."""
    moved = []
    for gateway in gateways:
        port = gateway.port + offset
        if not 1 <= port <= 65535:
            raise InvalidInput(
                f"--grpc-port-offset {offset} puts the gRPC port of {gateway} at {port}, outside 1-65535; "
                "give --grpc-gateways instead"
            )
        moved.append(HostPort(gateway.host, port))
    return tuple(moved)


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    """What ``mdeploy edge-config`` is told; ``check()`` bounds each value."""

    gateways: tuple[HostPort, ...]
    """The gateways' HTTP APIs."""
    grpc_gateways: tuple[HostPort, ...] = ()
    """The gateways' gRPC APIs; empty: the edge has no gRPC listener."""
    listen: HostPort = HostPort("0.0.0.0", 8080)
    """Where clients reach the HTTP API."""
    grpc_listen: HostPort = HostPort("0.0.0.0", 8081)
    """Where clients reach the gRPC API."""
    admin: HostPort = HostPort("127.0.0.1", 9901)
    """Envoy's admin API: statistics, /clusters, draining. Never expose it."""
    health_interval_s: float = 2.0
    """Active health checks of each gateway, this often; two failures in a row take it out."""
    per_try_timeout_s: float = 35.0
    """One attempt's deadline before a retry; above the gateways' backend_timeout_s (30 s) so that
    their own 504 comes first."""
    timeout_s: float = 300.0
    """A request's deadline at the edge, retries included (gRPC: the client's grpc-timeout)."""
    retries: int = 2
    """Retries after the first attempt, each on another gateway where there is one."""
    drain_time_s: int = 15
    """``envoy --drain-time-s``: how long a graceful drain keeps the listeners open."""
    unreachable_timeout_s: float = 5.0
    """How long a gateway's host may leave Envoy's data unacknowledged, or its keepalive probes
    unanswered, before Envoy drops the connection (Linux TCP_USER_TIMEOUT and TCP keepalive) and
    retries the requests on it elsewhere; 0: off (Envoy not on Linux)."""

    def check(self) -> None:
        _bounded("--health-interval-s", self.health_interval_s, 0.1, 60)
        _bounded("--per-try-timeout-s", self.per_try_timeout_s, 0.1, 3600)
        _bounded("--timeout-s", self.timeout_s, 1, 3600)
        _bounded("--retries", self.retries, 0, 5)
        _bounded("--drain-time-s", self.drain_time_s, 0, 600)
        if self.unreachable_timeout_s != 0:
            _bounded("--unreachable-timeout-s", self.unreachable_timeout_s, _MIN_UNREACHABLE_S, 300, off=0)
        if self.per_try_timeout_s >= self.timeout_s:
            raise InvalidInput(
                f"--per-try-timeout-s {self.per_try_timeout_s:g} must be below --timeout-s "
                f"{self.timeout_s:g}, or no retry would fit in the request's deadline"
            )
        if not self.gateways:
            raise InvalidInput("--gateways is empty: give at least one HOST:PORT")
        listening = [("--listen", self.listen), ("--admin", self.admin)]
        if self.grpc_gateways:
            listening.append(("--grpc-listen", self.grpc_listen))
        _check_apart(listening)


def _check_apart(listening: list[tuple[str, HostPort]]) -> None:
    """Envoy's own sockets must not collide (a wildcard address takes the port on every address)."""
    for i, (flag, address) in enumerate(listening):
        for other_flag, other in listening[i + 1 :]:
            same_host = address.host == other.host or address.is_wildcard or other.is_wildcard
            if address.port == other.port and same_host:
                raise InvalidInput(f"{flag} {address} and {other_flag} {other} would share a port")


def _bounded(flag: str, value: float, low: float, high: float, *, off: float | None = None) -> None:
    if not (low <= value <= high) or math.isnan(value):
        also = "" if off is None else f", or {off:g} for off"
        raise InvalidInput(f"{flag} {value:g} is out of range: give {low:g} to {high:g}{also}")


def render(options: EdgeOptions) -> str:
    """The bootstrap as YAML, with a header that says how to run and stop Envoy with it."""
    options.check()
    admin = f"http://{options.admin}"
    header = [
        f"Envoy edge for mdeploy gateways, written by `mdeploy edge-config` (mdeploy {__version__}).",
        f"Run:   envoy -c THIS_FILE --drain-time-s {options.drain_time_s} --drain-strategy gradual",
        f"Stop:  curl -X POST {admin}/healthcheck/fail   (now {EDGE_READY_PATH} answers 503)",
        f"       curl -X POST '{admin}/drain_listeners?graceful'",
        f"       wait {options.drain_time_s} s (--drain-time-s), then send Envoy SIGTERM.",
        f"Check: curl {admin}/ready ; curl '{admin}/clusters?format=json'",
    ]
    comment = "".join(f"# {line}\n" for line in header)
    return comment + yaml.safe_dump(bootstrap(options), sort_keys=False, default_flow_style=False)


def bootstrap(options: EdgeOptions) -> Json:
    """The Envoy v3 static bootstrap (the document ``envoy -c`` reads), as plain data."""
    options.check()
    listeners = [_listener("http", options.listen, _http_routes(options), grpc=False)]
    clusters = [_cluster(HTTP_CLUSTER, options.gateways, options, grpc=False)]
    if options.grpc_gateways:
        listeners.append(_listener("grpc", options.grpc_listen, _grpc_routes(options), grpc=True))
        clusters.append(_cluster(GRPC_CLUSTER, options.grpc_gateways, options, grpc=True))
    return {
        "node": {"id": "mdeploy-edge", "cluster": "mdeploy-edge"},
        "admin": {"address": _socket_address(options.admin)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        # Edge practice: a cap on client connections, so a flood cannot exhaust file descriptors.
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": _MAX_DOWNSTREAM_CONNECTIONS,
                    },
                }
            ]
        },
    }


def _seconds(value: float) -> str:
    """A protobuf Duration in its JSON form."""
    return f"{round(value, 3):g}s"


def _socket_address(address: HostPort) -> Json:
    return {"socket_address": {"address": address.host, "port_value": address.port}}


# ---- listeners and routes ----


def _listener(name: str, address: HostPort, routes: list[Json], *, grpc: bool) -> Json:
    manager: Json = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": f"edge_{name}",
        "codec_type": "HTTP2" if grpc else "AUTO",
        # Clients are outside: their address is the peer's, and x-envoy-* headers are not trusted.
        "use_remote_address": True,
        # A client's own x-request-id is what it sends feedback with; Envoy makes one when absent.
        "preserve_external_request_id": True,
        "normalize_path": True,
        # HTTP/2 clients get a GOAWAY, then this long to stop opening streams on a draining edge.
        "drain_timeout": "5s",
        "route_config": {
            "name": name,
            "virtual_hosts": [{"name": "gateways", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [_router()] if grpc else [_edge_ready(), _router()],
    }
    return {
        "name": name,
        "address": _socket_address(address),
        # DEFAULT: drains on /healthcheck/fail and /drain_listeners, not only on hot restart.
        "drain_type": "DEFAULT",
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }


def _router() -> Json:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }


def _edge_ready() -> Json:
    """Envoy's own readiness for a load balancer in front of it: 503 once it is told to fail."""
    return {
        "name": "envoy.filters.http.health_check",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
            "pass_through_mode": False,
            "headers": [{"name": ":path", "string_match": {"exact": EDGE_READY_PATH}}],
        },
    }


def _method_is(pattern: str) -> Json:
    return {"name": ":method", "string_match": {"safe_regex": {"regex": pattern}}}


def _http_routes(options: EdgeOptions) -> list[Json]:
    timeout = _seconds(options.timeout_s)

    def route(match: Json, policy: Json) -> Json:
        return {
            "match": match,
            "route": {"cluster": HTTP_CLUSTER, "timeout": timeout, "retry_policy": policy},
        }

    predictions = {"safe_regex": {"regex": PREDICTION_PATHS}, "headers": [_method_is("POST")]}
    reads = {"prefix": "/", "headers": [_method_is("GET|HEAD")]}
    return [
        route(predictions, _retry(options, "reset,retriable-status-codes", per_try=True, status=503)),
        route(reads, _retry(options, "reset,5xx", per_try=True)),
        route({"prefix": "/"}, _retry(options, "reset-before-request", per_try=False)),
    ]


def _grpc_routes(options: EdgeOptions) -> list[Json]:
    def route(match: Json, policy: Json) -> Json:
        action: Json = {
            "cluster": GRPC_CLUSTER,
            # No route timeout: the client's grpc-timeout is the deadline (streams may be long).
            "timeout": "0s",
            "max_stream_duration": {"grpc_timeout_header_max": "0s"},
            "retry_policy": policy,
        }
        return {"match": match, "route": action}

    unsent = _retry(options, "reset-before-request", per_try=False)
    changes = [route({"path": f"{_GRPC_METHOD}{method}"}, unsent) for method in _GRPC_CHANGES]
    # CANCELLED in response headers comes from a gateway shutting down (calls it had taken but not
    # begun are dropped so); a client's own cancel never returns through Envoy.
    repeatable = "reset,unavailable,cancelled"
    # A stream may wait long for its first answer: no per-try timeout there.
    stream = route({"path": f"{_GRPC_METHOD}{_GRPC_STREAM}"}, _retry(options, repeatable, per_try=False))
    rest = route({"prefix": "/"}, _retry(options, repeatable, per_try=True))
    return [*changes, stream, rest]


def _retry(options: EdgeOptions, conditions: str, *, per_try: bool, status: int | None = None) -> Json:
    """A retry policy on ``conditions`` besides the ones that are always safe (the request was
    never delivered), on another gateway each time where there is one."""
    policy: Json = {
        "retry_on": f"connect-failure,refused-stream,{conditions}",
        "num_retries": options.retries,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
                    "PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 5,
        "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
    }
    if status is not None:
        policy["retriable_status_codes"] = [status]
    if per_try:
        policy["per_try_timeout"] = _seconds(options.per_try_timeout_s)
    return policy


# ---- clusters ----


def _cluster(name: str, gateways: Sequence[HostPort], options: EdgeOptions, *, grpc: bool) -> Json:
    interval = _seconds(options.health_interval_s)
    protocol: Json = {
        "common_http_protocol_options": {"idle_timeout": _seconds(_UPSTREAM_IDLE_S)},
        "explicit_http_config": {"http2_protocol_options": {}} if grpc else {"http_protocol_options": {}},
    }
    check: Json = {
        # A busy gateway may take a while to answer; only a silent one fails the check.
        "timeout": "1s",
        "interval": interval,
        # Checked this often even while no request flows (Envoy's default would be 60 s).
        "no_traffic_interval": interval,
        "unhealthy_threshold": 2,
        "healthy_threshold": 2,
    }
    if grpc:
        check["grpc_health_check"] = {"service_name": SERVICE_NAME}
    else:
        check["http_health_check"] = {"path": "/v2/health/ready"}  # 503 there: out at once
    cluster: Json = {
        "name": name,
        # Host names are resolved (every address a name has is a gateway); IPs are used as given.
        "type": "STATIC" if all(g.is_ip for g in gateways) else "STRICT_DNS",
        "connect_timeout": "1s",
        # Not least-request: it would favour a gateway that fails fast (a dead one, or one without
        # backends answering 503 at once), and pick it again for the retries of its own failures.
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket_address(g)}} for g in gateways]}
            ],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                **protocol,
            }
        },
        "health_checks": [check],
        "outlier_detection": {
            # Connection failures and resets count apart from answers: three in a row eject.
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 3,
            "consecutive_5xx": 5,
            "consecutive_gateway_failure": 5,
            "interval": "1s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 50,
        },
        "circuit_breakers": {
            "thresholds": [{"priority": "DEFAULT", "retry_budget": _retry_budget(len(gateways))}]
        },
    }
    if options.unreachable_timeout_s:
        cluster |= _unreachable_after(options.unreachable_timeout_s)
    return cluster


def _unreachable_after(seconds: float) -> Json:
    """A gateway host that vanished without a word (power, link, partition: no RST, no FIN) ends
    the requests on Envoy's connections to it within ``seconds``, as resets the routes retry.

    TCP_USER_TIMEOUT bounds how long sent data may stay unacknowledged (a request being sent);
    keepalive probes, each second a connection is silent, cover a request delivered and waiting
    for its answer, and the user timeout decides when their silence ends it. A live gateway's
    kernel acknowledges both however long its answer takes, so a slow prediction runs on."""
    return {
        "upstream_bind_config": {
            "socket_options": [
                {
                    "description": "TCP_USER_TIMEOUT",
                    "level": _IPPROTO_TCP,
                    "name": _TCP_USER_TIMEOUT,
                    "int_value": round(seconds * 1000),
                    "state": "STATE_PREBIND",
                }
            ]
        },
        "upstream_connection_options": {
            # Linux ends a silent connection at the user timeout, not after the probe count; the
            # count gives about the same bound should the user timeout not apply.
            "tcp_keepalive": {
                "keepalive_time": 1,
                "keepalive_interval": 1,
                "keepalive_probes": max(1, math.ceil(seconds) - 1),
            }
        },
    }


def _retry_budget(gateways: int) -> Json:
    """Room to retry every request that was in flight on one lost gateway (1/n of them), plus a
    margin; a whole fleet failing at once is not sent more than that again."""
    percent = min(100, max(25, math.ceil(100 / gateways) + 20))
    return {"budget_percent": {"value": float(percent)}, "min_retry_concurrency": 16}

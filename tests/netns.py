"""Simulated hosts on one machine: Linux network namespaces joined to a bridge by veth pairs.

``Network(["edge", "gw1", ...])`` makes, for one test run:

* a "switch" namespace holding a Linux bridge;
* one namespace per host, its loopback up, joined to the bridge by a veth pair whose host end
  is ``eth0`` and has an address of a private /24 that nothing on this machine uses;
* nothing in the machine's own namespace: no interface, address or route is added, changed or
  removed there (every ``ip`` command names its namespace), so the real network is untouched.

``host.run(argv)`` starts a process inside a host (``ip netns exec``, which execs: the pid is the
program's own); ``host.call(fn)`` runs Python in a thread that has entered the host's network
namespace (``setns``), so sockets it opens, and processes it starts, are that host's: clients,
readiness probes, and helpers such as ``tests.services.PostgresServer`` that start their process
with ``subprocess``. ``host.link_down()`` / ``link_up()`` pull and put back its cable;
``host.kill_processes()`` kills everything running in it, as when the machine dies.

Leaving the ``with`` block, even after a failure, kills every process in the namespaces and
deletes them (the veth pairs and the bridge go with them). Namespaces are named
``mdmh-<pid>-<n>-<host>``; entering a ``Network`` first removes those of runs whose process is
gone (a killed pytest), with whatever still runs in them.

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2: ``unavailable_reason()`` says why not.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

PREFIX = "mdmh"
NETNS_DIR = Path("/run/netns")
INTERFACE = "eth0"
BRIDGE = "br0"
_CLONE_NEWNET = 0x40000000
_networks = itertools.count(1)
_libc = ctypes.CDLL(None, use_errno=True)
_inside = threading.local()  # .netns: the namespace this thread entered

T = TypeVar("T")


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message has its command line and what it said."""


def ip(*args: str) -> str:
    """``ip ARGS``; its stdout, or NetnsError with its stderr."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


def unavailable_reason() -> str | None:
    """Why this machine cannot run a ``Network`` (not root, no ``ip``, no namespaces, no bridge or
    veth in the kernel), or None. Tries it: a throwaway namespace with a bridge and a veth pair."""
    if os.geteuid() != 0:
        return "needs root: the hosts are Linux network namespaces joined by veth pairs"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
    except (NetnsError, OSError, subprocess.SubprocessError) as error:
        return f"cannot create a network namespace: {error}"
    try:
        ip("-n", probe, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    except NetnsError as error:
        return f"no Linux bridge or veth pairs in this kernel: {error}"
    finally:
        with contextlib.suppress(NetnsError):
            ip("netns", "del", probe)
    return None


def _enter(netns: str) -> None:
    """Move the calling thread (only it) into network namespace ``netns``."""
    descriptor = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if _libc.setns(descriptor, _CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {netns}: {os.strerror(error)}")
    finally:
        os.close(descriptor)
    _inside.netns = netns


def namespaces() -> list[str]:
    """Every named network namespace (``ip netns list``)."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def pids_in(netns: str) -> list[int]:
    """The processes whose network namespace is ``netns`` (never this process itself)."""
    try:
        listed = ip("netns", "pids", netns).split()
    except NetnsError:
        return []
    return [pid for pid in map(int, listed) if pid != os.getpid()]


def kill_all_in(netns: str, timeout_s: float = 10.0) -> None:
    """SIGKILL every process in ``netns`` and wait until they are gone."""
    deadline = time.monotonic() + timeout_s
    while pids := pids_in(netns):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise NetnsError(f"processes {pids} in {netns} outlived SIGKILL")
        time.sleep(0.02)


def _delete(netns: str) -> None:
    kill_all_in(netns)
    with contextlib.suppress(NetnsError):
        ip("netns", "del", netns)


def remove_stale() -> list[str]:
    """Delete the namespaces of earlier runs whose process is gone (and what still runs there)."""
    removed = []
    for name in namespaces():
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != PREFIX or not parts[1].isdigit():
            continue
        owner = int(parts[1])
        if owner == os.getpid() or Path(f"/proc/{owner}").exists():
            continue
        _delete(name)
        removed.append(name)
    return removed


def _used_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of this machine's addresses and routes (its own namespace)."""
    used = []
    for line in ip("-4", "-o", "addr", "show").splitlines() + ip("-4", "route", "show").splitlines():
        for word in line.split():
            with contextlib.suppress(ValueError):
                if "/" in word or word.count(".") == 3:
                    used.append(ipaddress.IPv4Network(word, strict=False))
    return used


def free_subnet(rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A /24 of 10.0.0.0/8 (RFC 1918) that overlaps no address or route of this machine."""
    used = _used_networks()
    rng = rng or random.Random()
    for _ in range(1000):
        candidate = ipaddress.IPv4Network(f"10.{rng.randint(100, 254)}.{rng.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise NetnsError("no free /24 in 10.0.0.0/8")


class Host:
    """One simulated machine: a network namespace with ``eth0`` at ``address`` on the bridge."""

    def __init__(self, name: str, netns: str, address: str, peer: str, switch: str) -> None:
        self.name = name
        self.netns = netns
        self.address = address
        self._peer = peer
        self._switch = switch
        self._executor: ThreadPoolExecutor | None = None
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"Host({self.name}, {self.address})"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run inside this host (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, **popen: Any
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside this host; ``env`` is added to this process's environment."""
        return subprocess.Popen(self.command(argv), env={**os.environ, **(env or {})}, **popen)

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` in a thread inside this host's network namespace (this
        thread when it is inside already: a call from a call never waits for a free thread)."""
        if getattr(_inside, "netns", None) == self.netns:
            return function(*args, **kwargs)
        return self.submit(function, *args, **kwargs).result()

    def submit(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """``call`` without waiting: up to 8 run at once."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=8,
                thread_name_prefix=f"netns-{self.name}",
                initializer=_enter,
                initargs=(self.netns,),
            )
        return self._executor.submit(function, *args, **kwargs)

    def thread(self, target: Callable[[], object], name: str) -> threading.Thread:
        """A started daemon thread running ``target`` inside this host (join it before the
        network closes: a thread in a namespace keeps the namespace alive)."""

        def inside() -> None:
            _enter(self.netns)
            target()

        started = threading.Thread(target=inside, name=f"{self.name}-{name}", daemon=True)
        started.start()
        self._threads.append(started)
        return started

    def link_down(self) -> None:
        """Pull the cable: both ends of the veth pair go down."""
        ip("-n", self.netns, "link", "set", INTERFACE, "down")
        ip("-n", self._switch, "link", "set", self._peer, "down")

    def link_up(self) -> None:
        ip("-n", self._switch, "link", "set", self._peer, "up")
        ip("-n", self.netns, "link", "set", INTERFACE, "up")

    def link_is_up(self) -> bool:
        return "state UP" in ip("-n", self.netns, "link", "show", INTERFACE)

    def pids(self) -> list[int]:
        return pids_in(self.netns)

    def kill_processes(self) -> None:
        """SIGKILL everything running in this host, as when the machine dies."""
        kill_all_in(self.netns)

    def close(self) -> None:
        """Stop this host's Python threads (they hold the namespace open); a thread still busy
        after 30 s is left to finish (its namespace goes when it does)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._threads += list(self._executor._threads)
            self._executor = None
        deadline = time.monotonic() + 30
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads.clear()


class Network:
    """Hosts on one switch, for the length of a ``with`` block (module docstring)."""

    def __init__(self, hosts: Iterable[str], subnet: str | None = None) -> None:
        self.names = list(hosts)
        if len(set(self.names)) != len(self.names) or not self.names:
            raise ValueError(f"host names must be unique and at least one: {self.names}")
        self.tag = f"{PREFIX}-{os.getpid()}-{next(_networks)}"
        self.switch = f"{self.tag}-switch"
        self._subnet = ipaddress.IPv4Network(subnet) if subnet else None
        self.subnet: ipaddress.IPv4Network | None = None
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __enter__(self) -> Network:
        self.stale_removed = remove_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        self.subnet = self._subnet or free_subnet()
        addresses = self.subnet.hosts()
        self._add_namespace(self.switch)
        ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", self.switch, "link", "set", BRIDGE, "up")
        for index, name in enumerate(self.names):
            netns = f"{self.tag}-{name}"
            self._add_namespace(netns)
            peer = f"p{index}"  # lives in the switch namespace only
            veth = ("type", "veth", "peer", "name", INTERFACE, "netns", netns)
            ip("-n", self.switch, "link", "add", peer, *veth)
            ip("-n", self.switch, "link", "set", peer, "master", BRIDGE)
            address = str(next(addresses))
            ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", INTERFACE)
            host = Host(name, netns, address, peer, self.switch)
            host.link_up()
            self.hosts[name] = host

    def close(self) -> None:
        """Kill every process, stop the threads, delete every namespace this network made."""
        errors = []
        for netns in self._made:
            try:
                kill_all_in(netns)
            except NetnsError as error:
                errors.append(str(error))
        for host in self.hosts.values():
            host.close()
        for netns in reversed(self._made):
            try:
                _delete(netns)
            except NetnsError as error:
                errors.append(str(error))
        self._made.clear()
        self.hosts.clear()
        if errors:
            raise NetnsError("; ".join(errors))

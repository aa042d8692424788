"""Load generator process: N ModelInfer calls kept in flight for a fixed window.

Runs in its own process so its CPU is counted apart from the server's, and prints one JSON
object (:class:`LoadResult`) on stdout. Two generators, compared by ``bench_server``:

* ``future``: grpc's sync C-core stub, ``call.future(...)`` re-issued from the completion
  callback. No event loop; completions run on the channel's one polling thread.
* ``aio``: grpc.aio on uvloop, one coroutine per in-flight request.

Both send a request serialized once (the callable has no serializer, so the bytes go out
as they are) and do not parse the replies (no deserializer): the client does the least
possible work per request. One reply is parsed and checked before the load starts.

Run: ``python -m loadtests.server.loadgen --address H:P --model M --width W --concurrency N``
(``--row-shape 3,224,224`` for other inputs, ``--rows R`` for R rows per request).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import grpc
import numpy as np

from loadtests.common import loop
from loadtests.common.procstat import machine_busy_s, process_cpu_s, self_cpu_s
from loadtests.server.statistics import Counters, model_counters
from protos import codecs
from protos.generated import inference_pb2 as pb

METHOD = "/inference.GRPCInferenceService/ModelInfer"
GENERATORS = ("future", "aio")


@dataclass(frozen=True)
class Window:
    """perf_counter() bounds of the measurement; before ``start`` is warm-up."""

    start: float
    end: float

    @classmethod
    def after(cls, warmup_s: float, duration_s: float) -> Window:
        start = time.perf_counter() + warmup_s
        return cls(start, start + duration_s)

    def holds(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass
class CpuMeter:
    """Over the window: CPU seconds of this process, of the server and of the whole machine,
    and (for mdeploy-server, ``statistics_of`` set) the model's statistics."""

    server_pid: int
    address: str
    statistics_of: str | None = None
    client_s: float = 0.0
    server_s: float = 0.0
    machine_s: float = 0.0
    counters: Counters | None = None

    def begin(self) -> None:
        if self.statistics_of:
            self.counters = model_counters(self.address, self.statistics_of)
        self.client_s, self.server_s = -self_cpu_s(), -process_cpu_s(self.server_pid)
        self.machine_s = -machine_busy_s()

    def end(self) -> None:
        self.client_s += self_cpu_s()
        self.server_s += process_cpu_s(self.server_pid)
        self.machine_s += machine_busy_s()
        if self.statistics_of and self.counters is not None:
            self.counters = model_counters(self.address, self.statistics_of) - self.counters

    @property
    def others_s(self) -> float:
        """CPU that neither side used: other processes sharing the machine."""
        return max(self.machine_s - self.client_s - self.server_s, 0.0)


@dataclass
class Samples:
    """Latencies (s) of the calls that completed inside the window, and failures."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def fail(self, error: BaseException | None) -> None:
        self.errors += 1
        self.first_error = self.first_error or repr(error)


@dataclass(frozen=True)
class LoadResult:
    generator: str
    concurrency: int
    window_s: float
    requests: int
    errors: int
    first_error: str
    p50_ms: float
    p99_ms: float
    client_cpu_s: float
    server_cpu_s: float
    others_cpu_s: float
    counters: Counters | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.window_s

    @property
    def others_cores(self) -> float:
        return self.others_cpu_s / self.window_s

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadResult:
        fields = json.loads(text)
        counters = fields.pop("counters")
        return cls(**fields, counters=Counters(**counters) if counters else None)


def build_payload(model: str, row_shape: tuple[int, ...], rows: int = 1, seed: int = 0) -> bytes:
    """A ModelInferRequest with ``x`` FP32 [rows, *row_shape] as raw contents, serialized once."""
    request = pb.ModelInferRequest(model_name=model)
    values = np.random.default_rng(seed).standard_normal((rows, *row_shape)).astype(np.float32)
    codecs.encode_input(request, "x", values)
    return request.SerializeToString()


Metadata = tuple[tuple[str, str], ...]


def check_reply(channel: grpc.Channel, payload: bytes, metadata: Metadata = ()) -> None:
    """One call with parsing: the server must answer this request with outputs."""
    call = channel.unary_unary(METHOD, None, None)
    reply = pb.ModelInferResponse.FromString(call(payload, timeout=30, metadata=metadata))
    outputs = codecs.decode_response_outputs(reply)
    if not outputs:
        raise RuntimeError(f"reply without outputs: {reply}")


class FutureLoop:
    """Keeps ``concurrency`` sync-stub futures in flight until the window ends."""

    def __init__(
        self, channel: grpc.Channel, payload: bytes, concurrency: int, window: Window, metadata: Metadata = ()
    ) -> None:
        self._call = channel.unary_unary(METHOD, None, None)  # bytes in, bytes out
        self._payload = payload
        self._metadata = metadata
        self._window = window
        self._samples = Samples()
        self._in_flight = concurrency
        self._lock = threading.Lock()
        self._drained = threading.Event()

    def run(self, meter: CpuMeter) -> Samples:
        for _ in range(self._in_flight):
            self._issue()
        _sleep_until(self._window.start)
        meter.begin()
        _sleep_until(self._window.end)
        meter.end()
        self._drained.wait(60)
        return self._samples

    def _issue(self) -> None:
        future = self._call.future(self._payload, metadata=self._metadata)
        future.add_done_callback(functools.partial(self._done, time.perf_counter()))

    def _done(self, started: float, future: grpc.Future[bytes]) -> None:
        now = time.perf_counter()
        error = future.exception()
        if error is not None:
            self._samples.fail(error)
        elif self._window.holds(now):
            self._samples.latencies.append(now - started)
        if now < self._window.end:
            self._issue()
            return
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.set()


async def aio_load(
    address: str, payload: bytes, concurrency: int, window: Window, meter: CpuMeter, metadata: Metadata = ()
) -> Samples:
    """``concurrency`` coroutines, each awaiting one call after another until the window ends."""
    samples = Samples()
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(METHOD, None, None)

        async def worker() -> None:
            while True:
                started = time.perf_counter()
                ok = True
                try:
                    await call(payload, metadata=metadata)
                except grpc.aio.AioRpcError as error:
                    samples.fail(error)
                    ok = False
                now = time.perf_counter()
                if ok and window.holds(now):
                    samples.latencies.append(now - started)
                if now >= window.end:
                    return

        async def meter_window() -> None:
            await asyncio.sleep(window.start - time.perf_counter())
            meter.begin()
            await asyncio.sleep(window.end - time.perf_counter())
            meter.end()

        await asyncio.gather(meter_window(), *(worker() for _ in range(concurrency)))
    return samples


def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def summarize(
    generator: str, concurrency: int, window: Window, samples: Samples, meter: CpuMeter
) -> LoadResult:
    latencies = np.asarray(samples.latencies) * 1e3
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies.size else (float("nan"), float("nan"))
    return LoadResult(
        generator,
        concurrency,
        window.end - window.start,
        len(samples.latencies),
        samples.errors,
        samples.first_error,
        float(p50),
        float(p99),
        meter.client_s,
        meter.server_s,
        meter.others_s,
        meter.counters,
    )


def run(args: argparse.Namespace) -> LoadResult:
    row_shape = tuple(int(d) for d in args.row_shape.split(",")) if args.row_shape else (args.width,)
    payload = build_payload(args.model, row_shape, args.rows)
    metadata: Metadata = tuple(_pair(item) for item in args.metadata)
    with grpc.insecure_channel(args.address) as channel:
        check_reply(channel, payload, metadata)
    meter = CpuMeter(args.server_pid, args.address, args.model if args.statistics else None)
    if args.generator == "future":
        with grpc.insecure_channel(args.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            window = Window.after(args.warmup, args.duration)
            samples = FutureLoop(channel, payload, args.concurrency, window, metadata).run(meter)
    else:
        window = Window.after(args.warmup, args.duration)
        coroutine = aio_load(args.address, payload, args.concurrency, window, meter, metadata)
        samples = loop.run(coroutine)
    return summarize(args.generator, args.concurrency, window, samples, meter)


def command(
    address: str,
    measured_pid: int,
    model: str,
    width: int,
    concurrency: int,
    *,
    generator: str = "future",
    warmup_s: float = 1.0,
    duration_s: float = 5.0,
    statistics: bool = False,
    metadata: Metadata = (),
) -> list[str]:
    """The command line of one generator process (run from the repository root)."""
    return [
        sys.executable,
        "-m",
        "loadtests.server.loadgen",
        f"--address={address}",
        f"--server-pid={measured_pid}",
        f"--model={model}",
        f"--width={width}",
        f"--concurrency={concurrency}",
        f"--generator={generator}",
        f"--warmup={warmup_s}",
        f"--duration={duration_s}",
        *(["--statistics"] if statistics else []),
        *(f"--metadata={key}={value}" for key, value in metadata),
    ]


def _pair(item: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadgen", description=__doc__)
    add = parser.add_argument
    add("--address", required=True, help="HOST:PORT of the server")
    add("--server-pid", type=int, required=True, help="process whose CPU is measured over the window")
    add("--model", required=True)
    add("--width", type=int, help="features of one FP32 input row (a model with [batch, width] input)")
    add("--row-shape", help="dims of one input row, comma-separated, instead of --width (e.g. 3,224,224)")
    add("--rows", type=int, default=1, help="rows per request (default 1)")
    add("--concurrency", type=int, default=64)
    add("--generator", choices=GENERATORS, default="future")
    add("--warmup", type=float, default=1.0, help="seconds of load before the window")
    add("--duration", type=float, default=5.0, help="seconds measured")
    add(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sent with every call (repeatable), e.g. authorization=Bearer <key>",
    )
    add("--statistics", action="store_true", help="read the model's ModelStatistics at the window's edges")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.width is None) == (args.row_shape is None):
        parser.error("give one of --width and --row-shape")
    result = run(args)
    print(result.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

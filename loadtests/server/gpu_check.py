"""GPU check: mdeploy-server on CUDA, checked and measured against onnxruntime in one run.

Run through ``loadtests/gpu_check.sh`` (which sets up the runtime and the CUDA libraries), or
``python -m loadtests.server.gpu_check --device cuda:0|cpu OUT_DIR``. In this order it:

1. makes its models on the spot: the compute-bound MLP 1024→2048→2048→10 and, where torch and
   torchvision import, a ResNet-50 with random weights exported to ONNX (``resnet_export``);
2. starts ``mdeploy-server --device DEVICE`` on them;
3. checks through ``tritonclient.grpc`` that each model runs on the expected execution provider
   (ModelConfig's ``execution_provider``) and that its outputs match in-process onnxruntime on
   the CPU within ``TOLERANCE`` of the largest reference output;
4. measures the server (1-row requests at 1 and 64 in flight; requests of 1, 32 and 256 rows one
   at a time) and in-process onnxruntime on the device and on the CPU at those batch sizes, the
   device's rows/s over batch sizes up to 4096 (what the GPU batch default rests on), and
   onnxruntime's I/O binding against a plain run;
5. prints one table and writes it as ``gpu_check.json`` and ``gpu_check.txt`` into OUT_DIR.

Exit status 1 when a check failed or a load saw errors. ``--device cpu`` is the dry run: every
step, with the CPU provider where the GPU's would be.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as triton

from core.server_process import ServerProcess, start_server_process
from examples.onnx_models import mlp, write_version
from loadtests.common.paths import ROOT
from loadtests.server import resnet_export
from loadtests.server.loadgen import LoadResult
from protos.generated import model_config_pb2 as mc
from servers import runtime

# Server and in-process outputs may differ by this share of the largest reference output: on a
# GPU, cuBLAS and cuDNN run FP32 matrix products in TF32 by default (10-bit mantissa).
TOLERANCE = 1e-2
BATCHES = (1, 32, 256)
IN_FLIGHT = (1, 64)
SWEEP = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096)
MAX_BATCH = 1024  # what the check's models are configured with: the server's GPU default
CONFIG = f"max_batch_size: {MAX_BATCH}\ndynamic_batching {{ }}\n"


@dataclass(frozen=True)
class Timing:
    warmup_s: float
    duration_s: float
    min_runs: int = 3


FULL = Timing(1.0, 3.0)
QUICK = Timing(0.2, 0.6, 2)


@dataclass(frozen=True)
class CheckModel:
    name: str
    kind: str
    row_shape: tuple[int, ...]
    path: Path

    def rows(self, count: int, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((count, *self.row_shape)).astype(np.float32)


@dataclass
class Results:
    device: str
    environment: dict[str, str]
    tolerance: float = TOLERANCE
    checks: list[dict[str, Any]] = field(default_factory=list)
    server: list[dict[str, Any]] = field(default_factory=list)
    in_process: list[dict[str, Any]] = field(default_factory=list)
    sweep: list[dict[str, Any]] = field(default_factory=list)
    io_binding: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks) and all(r["errors"] == 0 for r in self.server)


# ---- models ----


def build_models(repository: Path, notes: list[str]) -> list[CheckModel]:
    path = write_version(repository, "mlp", 1, mlp([1024, 2048, 2048, 10], seed=0), CONFIG)
    models = [CheckModel("mlp", "MLP 1024→2048→2048→10", (1024,), path)]
    resnet = export_resnet50(repository / "resnet50" / "1" / "model.onnx", notes)
    if resnet is not None:
        (repository / "resnet50" / "config.pbtxt").write_text(CONFIG)
        models.append(CheckModel("resnet50", "ResNet-50, random weights", (3, 224, 224), resnet))
    return models


def export_resnet50(path: Path, notes: list[str]) -> Path | None:
    """ResNet-50 as ONNX, made by its own process (``loadtests.server.resnet_export``); None without torch."""
    command = [sys.executable, "-m", "loadtests.server.resnet_export", str(path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode == resnet_export.MISSING:
        notes.append(f"ResNet-50 left out: {json.loads(done.stdout)['missing']} (the MLP alone is checked)")
        return None
    if done.returncode != 0:
        raise RuntimeError(f"ResNet-50 export failed ({done.returncode}):\n{done.stderr[-4000:]}")
    made = json.loads(done.stdout.strip().splitlines()[-1])
    notes.append(
        f"ResNet-50 exported with torch {made['torch']}, torchvision {made['torchvision']} "
        f"in {made['seconds']:.0f} s"
    )
    return path


# ---- sessions in this process ----


def session_on(path: Path, device: str) -> ort.InferenceSession:
    """A session as the server makes it (its create_session), with its default threads."""
    return runtime.create_session(
        path,
        mc.ModelConfig(name=path.parent.parent.name),
        device=device,
        intra_op_threads=0,
        inter_op_threads=0,
    )


def cpu_reference(path: Path) -> ort.InferenceSession:
    return session_on(path, "cpu")


def rows_per_s(run: Callable[[], object], rows: int, timing: Timing) -> tuple[float, float]:
    """(rows/s, ms per run) of ``run`` called back to back for the window, at least min_runs times."""
    deadline = time.perf_counter() + timing.warmup_s
    while time.perf_counter() < deadline:
        run()
    runs, started = 0, time.perf_counter()
    while runs < timing.min_runs or time.perf_counter() - started < timing.duration_s:
        run()
        runs += 1
    elapsed = time.perf_counter() - started
    return runs * rows / elapsed, 1e3 * elapsed / runs


def measure_in_process(
    model: CheckModel, provider_label: str, session: ort.InferenceSession, timing: Timing
) -> list[dict[str, Any]]:
    results = []
    for batch in BATCHES:
        feeds = {"x": model.rows(batch)}
        rate, ms = rows_per_s(functools.partial(session.run, None, feeds), batch, timing)
        results.append(
            {"model": model.name, "provider": provider_label, "batch": batch, "rows_per_s": rate, "ms": ms}
        )
    return results


def measure_sweep(model: CheckModel, session: ort.InferenceSession, timing: Timing) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for batch in SWEEP:
        feeds = {"x": model.rows(batch)}
        rate, ms = rows_per_s(functools.partial(session.run, None, feeds), batch, timing)
        results.append({"model": model.name, "batch": batch, "rows_per_s": rate, "ms": ms})
    best = max(r["rows_per_s"] for r in results)
    for r in results:
        r["share_of_best"] = r["rows_per_s"] / best
    return results


def measure_io_binding(
    model: CheckModel, session: ort.InferenceSession, timing: Timing
) -> list[dict[str, Any]]:
    """A plain run against one through I/O binding (input bound from host memory, output to host)."""
    results = []
    output = session.get_outputs()[0].name
    for batch in BATCHES[1:]:
        x = model.rows(batch)

        def bound(x: np.ndarray = x) -> object:
            binding = session.io_binding()
            binding.bind_cpu_input("x", x)
            binding.bind_output(output, "cpu")
            session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()

        plain, _ = rows_per_s(functools.partial(session.run, None, {"x": x}), batch, timing)
        with_binding, _ = rows_per_s(bound, batch, timing)
        results.append(
            {
                "model": model.name,
                "batch": batch,
                "run_rows_per_s": plain,
                "io_binding_rows_per_s": with_binding,
                "gain": with_binding / plain,
            }
        )
    return results


# ---- the server ----


@contextmanager
def server_on(repository: Path, device: str) -> Iterator[ServerProcess]:
    server = start_server_process(
        ["--grpc-port", "0", "--grpc-address", "127.0.0.1", "--model-repository", str(repository),
         "--device", device],
        ready_timeout_s=600,
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop(timeout_s=30)


def check_model(
    client: triton.InferenceServerClient, model: CheckModel, expected_provider: str
) -> dict[str, Any]:
    config = client.get_model_config(model.name, as_json=True)["config"]
    provider = config.get("parameters", {}).get("execution_provider", {}).get("string_value", "?")
    rows = model.rows(8, seed=1)
    x = triton.InferInput("x", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows)
    served = client.infer(model.name, [x]).as_numpy("y")
    expected = cpu_reference(model.path).run(None, {"x": rows})[0]
    assert served is not None
    error = float(np.max(np.abs(served - expected)))
    scale = float(np.max(np.abs(expected)))
    return {
        "model": model.name,
        "kind": model.kind,
        "provider": provider,
        "providers": config.get("parameters", {}).get("execution_providers", {}).get("string_value", "?"),
        "expected_provider": expected_provider,
        "max_abs_error": error,
        "max_abs_reference": scale,
        "same_top_class": bool(np.all(served.argmax(axis=1) == expected.argmax(axis=1))),
        "passed": provider == expected_provider and error <= TOLERANCE * scale,
    }


def load(
    server: ServerProcess, model: CheckModel, rows: int, concurrency: int, timing: Timing
) -> dict[str, Any]:
    """One load-generator run; again with a longer window while fewer than min_runs answers fit."""
    duration = timing.duration_s
    while True:
        result = load_once(server, model, rows, concurrency, Timing(timing.warmup_s, duration))
        if result.requests >= timing.min_runs or result.errors or duration >= 60:
            break
        # Long requests: a window for min_runs of them at the rate seen (4x when none finished).
        seen = duration / result.requests if result.requests else 4 * duration
        duration = min(60.0, 1.5 * timing.min_runs * seen)
    return {
        "model": model.name,
        "rows_per_request": rows,
        "in_flight": concurrency,
        "rows_per_s": result.rps * rows,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "first_error": result.first_error,
        "server_cores": result.server_cpu_s / result.window_s,
    }


def load_once(
    server: ServerProcess, model: CheckModel, rows: int, concurrency: int, timing: Timing
) -> LoadResult:
    command = [
        sys.executable, "-m", "loadtests.server.loadgen", f"--address={server.address}",
        f"--server-pid={server.process.pid}", f"--model={model.name}",
        f"--row-shape={','.join(map(str, model.row_shape))}", f"--rows={rows}",
        f"--concurrency={concurrency}", f"--warmup={timing.warmup_s}", f"--duration={timing.duration_s}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr}")
    return LoadResult.from_json(done.stdout)


def measure_server(server: ServerProcess, model: CheckModel, timing: Timing) -> list[dict[str, Any]]:
    """1-row requests at each in-flight level, then larger requests one at a time (batch 1 is the first)."""
    rows = [load(server, model, 1, c, timing) for c in IN_FLIGHT]
    return rows + [load(server, model, batch, 1, timing) for batch in BATCHES if batch > 1]


# ---- report ----


def environment(device: str) -> dict[str, str]:
    info = {
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers available": ", ".join(runtime.available_providers()),
        "device asked": device,
    }
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if smi.returncode == 0:
            info["gpu"] = smi.stdout.strip()
    except OSError:
        info["gpu"] = "none (no nvidia-smi)"
    return info


def render(results: Results) -> str:
    lines = [f"mdeploy GPU check — device {results.device}"]
    lines += [f"  {key}: {value}" for key, value in results.environment.items()]
    sections = (render_checks(results), render_server(results), render_sweep(results), render_io(results))
    for section in sections:
        lines += ["", *section] if section else []
    lines += ["", *results.notes, f"Result: {'PASS' if results.passed else 'FAIL'}"]
    return "\n".join(lines)


def render_checks(results: Results) -> list[str]:
    lines = [f"Checks (outputs within {results.tolerance:g} of max |reference|, onnxruntime CPU):"]
    for c in results.checks:
        lines.append(
            f"  {'PASS' if c['passed'] else 'FAIL'} {c['model']:<9} provider {c['provider']} "
            f"(expected {c['expected_provider']}), max |Δ| {c['max_abs_error']:.2e} of "
            f"{c['max_abs_reference']:.2e}, same top class: {c['same_top_class']}"
        )
    return lines


def render_server(results: Results) -> list[str]:
    in_process = {(r["model"], r["provider"], r["batch"]): r for r in results.in_process}
    labels = [results.device] + (["cpu"] if results.device != "cpu" else [])
    header = f"  {'model':<9} {'load':<20} {'server':>9} {'p50 ms':>8} {'p99 ms':>8}"
    header += "".join(f" {'ORT ' + label:>11}" for label in labels) + f" {'server/ORT':>10}"
    lines = ["Server (mdeploy-server over gRPC) and in-process onnxruntime (ORT), rows/s:", header]
    for r in results.server:
        rows, in_flight = r["rows_per_request"], r["in_flight"]
        load_text = f"1 row, {in_flight} in flight" if rows == 1 else f"batch {rows}, 1 in flight"
        # 1-row requests at 64 in flight are merged by the server: no one in-process batch matches.
        batch = rows if in_flight == 1 else None
        refs = [in_process.get((r["model"], label, batch)) for label in labels]
        ratio = f"{r['rows_per_s'] / refs[0]['rows_per_s']:.2f}" if refs[0] else "—"
        line = f"  {r['model']:<9} {load_text:<20} {r['rows_per_s']:>9.0f}"
        line += f" {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
        line += "".join(f" {ref['rows_per_s']:>11.0f}" if ref else f" {'—':>11}" for ref in refs)
        errors = f"  {r['errors']} errors: {r['first_error']}" if r["errors"] else ""
        lines.append(f"{line} {ratio:>10}{errors}")
    return lines


def render_sweep(results: Results) -> list[str]:
    if not results.sweep:
        return []
    lines = ["In-process onnxruntime on the device over batch size (rows/s, share of the best):"]
    lines += [
        f"  {r['model']:<9} batch {r['batch']:>5}: {r['rows_per_s']:>11.0f}  "
        f"{r['ms']:>8.2f} ms/run  {100 * r['share_of_best']:>5.1f}%"
        for r in results.sweep
    ]
    knee = next(r["batch"] for r in results.sweep if r["share_of_best"] >= 0.9)
    return [*lines, f"  smallest batch within 90% of the best: {knee}"]


def render_io(results: Results) -> list[str]:
    if not results.io_binding:
        return []
    return ["I/O binding (input from host memory, output to host) against a plain run:"] + [
        f"  {r['model']:<9} batch {r['batch']:>4}: run {r['run_rows_per_s']:.0f}, "
        f"io_binding {r['io_binding_rows_per_s']:.0f} rows/s ({r['gain']:.2f}x)"
        for r in results.io_binding
    ]


def run(device: str, out: Path, timing: Timing) -> Results:
    results = Results(device, environment(device))
    expected = runtime.CPU if device == "cpu" else runtime.CUDA
    with tempfile.TemporaryDirectory(prefix="mdeploy-gpu-check-") as folder:
        models = build_models(Path(folder), results.notes)
        started = time.perf_counter()
        with server_on(Path(folder), device) as server:
            results.notes.append(f"mdeploy-server ready in {time.perf_counter() - started:.1f} s")
            with triton.InferenceServerClient(server.address) as client:
                results.checks = [check_model(client, m, expected) for m in models]
            for model in models:
                results.server += measure_server(server, model, timing)
        for model in models:
            on_device = session_on(model.path, device)
            results.in_process += measure_in_process(model, device, on_device, timing)
            if device != "cpu":
                results.in_process += measure_in_process(model, "cpu", cpu_reference(model.path), timing)
            if model.name == "mlp":
                results.sweep = measure_sweep(model, on_device, Timing(0.2, timing.duration_s / 3, 2))
                results.io_binding = measure_io_binding(model, on_device, timing)
    out.mkdir(parents=True, exist_ok=True)
    table = render(results)
    (out / "gpu_check.txt").write_text(table + "\n")
    (out / "gpu_check.json").write_text(json.dumps(asdict(results), indent=2) + "\n")
    print(table, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for gpu_check.json and gpu_check.txt")
    parser.add_argument(
        "--device", default="cuda:0", help="cuda:<n> (default cuda:0), or cpu for the dry run"
    )
    parser.add_argument("--quick", action="store_true", help="short windows (what CI's dry run uses)")
    args = parser.parse_args(argv)
    results = run(args.device, args.out, QUICK if args.quick else FULL)
    return 0 if results.passed else 1


if __name__ == "__main__":
    sys.exit(main())

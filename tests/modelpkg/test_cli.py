"""``mdeploy package`` and ``mdeploy inspect``: results on stdout, one-line errors, exit codes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pytest
import skops.io

from examples.onnx_models import mlp
from mdeploy.cli import main
from modelpkg import read_package
from tests.converters import support

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli")
    pipeline, digits = support.sklearn_pipeline(), support.digits()
    files = {
        "skops": folder / "digits.skops",
        "pickle": folder / "digits.pkl",
        "samples": folder / "rows.npy",
        "labels": folder / "labels.txt",
        "data": folder / "train.csv",
    }
    skops.io.dump(pipeline, files["skops"])
    joblib.dump(pipeline, files["pickle"])
    np.save(files["samples"], digits.x_test[:8])
    files["labels"].write_text("\n".join(f"digit-{i}" for i in range(10)) + "\n")
    files["data"].write_text("pixels,label\n")
    return files


@pytest.fixture(scope="module")
def packaged(model_files: dict[str, Path]) -> Path:
    output = model_files["skops"].with_name("digits.pkg")
    code = main(
        [
            "package", str(model_files["skops"]), "--name", "digits", "--version", "3",
            "--samples", str(model_files["samples"]), "--labels", str(model_files["labels"]),
            "--input-name", "pixels", "--output-name", "label", "--output-name", "probabilities",
            "--data", str(model_files["data"]), "--metric", "accuracy=0.97", "f1=0.96",
            "--tag", "demo", "--description", "Digits from the CLI", "--max-batch-size", "32",
            "--preferred-batch-size", "8", "--device", "cpu", "--tolerance", "1e-4",
            "--created-by", "ci", "-q", "-o", str(output),
        ]
    )  # fmt: skip
    assert code == 0
    return output


def test_inspect_shows_what_was_put_in(packaged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["inspect", str(packaged)]) == 0
    shown = capsys.readouterr().out
    digest = read_package(packaged).digest
    for expected in [
        "digits", "version 3", f"sha256:{digest}", "Digits from the CLI", "demo", "sklearn",
        "skl2onnx", "accuracy=0.97", "f1=0.96", "max batch 32", "preferred [8]", "device cpu",
        "pixels", "FP32", "[-1, 64]", "label", "INT64", "probabilities", "[-1, 10]",
        "probabilities: digit-0, digit-1", "tolerance 0.0001, passed", "8 sample rows", "by ci",
        "train.csv", "model.onnx", "samples.npz",
    ]:  # fmt: skip
        assert expected in shown, expected


def test_inspect_json_is_the_manifest_and_digest(packaged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["inspect", str(packaged), "--json", "--verify"]) == 0
    document = json.loads(capsys.readouterr().out)
    package = read_package(packaged)
    assert document["digest"] == package.digest
    assert document["manifest"] == package.manifest.model_dump(mode="json")
    assert document["manifest"]["metrics"] == {"accuracy": 0.97, "f1": 0.96}
    data_file = document["manifest"]["provenance"]["data"][0]
    assert data_file["sha256"] == hashlib.sha256(Path(data_file["path"]).read_bytes()).hexdigest()
    assert document["verified"]["passed"] is True


def test_the_console_script_runs_as_a_subprocess(packaged: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mdeploy.cli import main; sys.exit(main())",
            "inspect",
            str(packaged),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "probabilities" in done.stdout


def test_help_says_why_pickles_need_trust(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["package", "--help"]) == 0
    assert "runs whatever code the file holds" in " ".join(capsys.readouterr().out.split())


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


BAD_PACKAGE_ARGS: list[tuple[list[str], int, str]] = [
    ([], 2, "the following arguments are required: MODEL"),
    (["{missing}"], 2, "does not exist"),
    (["{skops}", "--metric", "accuracy"], 2, "expected NAME=NUMBER"),
    (["{skops}", "--tolerance", "-1"], 2, "expected a non-negative number"),
    (["{skops}", "--framework", "torch"], 2, "invalid choice: 'torch'"),
    (["{skops}", "--name", "bad name"], 2, "name: String should match pattern"),
    (["{pickle}"], 2, "would run arbitrary code"),
    (["{skops}", "--samples", "{labels}"], 2, "must be .npy, .npz or .parquet"),
    (["{skops}", "--labels", "{missing}"], 2, "labels file"),
    (["{skops}", "--preferred-batch-size", "500"], 2, "exceed max_batch_size"),
    (["{skops}", "--framework", "keras"], 1, "cannot load a Keras model"),
    (["{skops}", "--tolerance", "0"], 1, "parity failed: output"),
    (["{skops}", "-o", "/nonexistent/dir/x.pkg"], 2, "output folder /nonexistent/dir does not exist"),
]


@pytest.mark.parametrize(("extra", "code", "message"), BAD_PACKAGE_ARGS)
def test_bad_package_input_is_one_line_and_an_exit_code(
    model_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    code: int,
    message: str,
) -> None:
    names = {key: str(path) for key, path in model_files.items()} | {
        "missing": str(tmp_path / "missing.keras")
    }
    arguments = [argument.format(**names) for argument in extra]
    defaults = ["--name", "d", "--samples", names["samples"], "-o", str(tmp_path / "out.pkg"), "-q"]
    assert main(["package", *defaults, *arguments]) == code  # later options override the defaults
    assert message in _error(capsys)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["inspect", "{missing}"], 1, "No such file or directory"),
        (["inspect", "{samples}"], 1, "package is not a valid zip archive"),
        (["inspect"], 2, "the following arguments are required: PACKAGE"),
        ([], 2, "the following arguments are required: COMMAND"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_inspect_input_is_one_line_and_an_exit_code(
    model_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    message: str,
) -> None:
    names: dict[str, Any] = {"samples": model_files["samples"], "missing": tmp_path / "missing.pkg"}
    assert main([argument.format(**names) for argument in argv]) == code
    assert message in _error(capsys)


def test_package_quantize_prints_what_it_traded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    onnx.save(mlp([256, 512, 10], seed=1), tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", rows[:8])
    np.save(tmp_path / "eval.npy", rows)
    np.save(tmp_path / "y.npy", np.arange(64) % 10)
    common = ["package", str(tmp_path / "mlp.onnx"), "--name", "mlp", "--samples", str(tmp_path / "x.npy")]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(10)))
    arguments = [
        *common,
        "--labels",
        str(labels),
        "--quantize",
        "dynamic",
        "--eval-data",
        str(tmp_path / "eval.npy"),
        "--eval-labels",
        str(tmp_path / "y.npy"),
        "-o",
        str(tmp_path / "q.pkg"),
        "-q",
    ]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "dynamic int8 quantization: float model sha256:" in printed
    assert "of 64 evaluation data rows; accuracy" in printed
    assert "tolerance 0.05" in printed
    weak = main([*common, "--quantize", "static", "-o", str(tmp_path / "s.pkg"), "-q"])
    assert weak == 0
    assert "weak calibration" in capsys.readouterr().err
    assert main([*common, "--calibration", str(tmp_path / "x.npy"), "-o", str(tmp_path / "c.pkg")]) == 2
    assert "--calibration goes with --quantize" in capsys.readouterr().err

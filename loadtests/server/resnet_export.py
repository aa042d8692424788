"""Export torchvision's ResNet-50 with random weights to ONNX, batch dimension variable.

Run as ``python -m loadtests.server.resnet_export OUT.onnx``: a process of its own, so that the GPU
check's measuring process never imports torch (which loads its own CUDA libraries). Prints one
JSON line (torch and torchvision versions, seconds); exits 3 when torch or torchvision is absent.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

MISSING = 3


def export(path: Path) -> dict[str, str | float]:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.randn(2, 3, 224, 224),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        opset_version=18,
        external_data=False,  # one file: the server's repository holds model.onnx alone
    )
    return {
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m loadtests.server.resnet_export OUT.onnx", file=sys.stderr)
        return 2
    try:
        done = export(Path(args[0]))
    except ImportError as error:
        print(json.dumps({"missing": str(error)}))
        return MISSING
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())

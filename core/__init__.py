"""core: what every layer shares and nothing of the project's own below it.

Errors with their HTTP status and gRPC code, tensor signatures, the batcher and tensor
batches, request validation, child processes, and the onnxruntime import.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mdeploy")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

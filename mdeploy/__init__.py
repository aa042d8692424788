"""mdeploy: packaged, versioned model serving. This layer is what users call: the CLI, the
Python client, and ``serve``, which wires the gateway, a local server and the demo together."""

from core import __version__

__all__ = ["__version__"]

"""servers: the gRPC inference server on onnxruntime.

Importing any part of it checks first that a runtime wheel is installed, so the error names
the extra to install (``mdeploy[cpu]`` or ``mdeploy[gpu]``) rather than a bare missing module.
"""

from core.onnxruntime_import import import_onnxruntime

import_onnxruntime()

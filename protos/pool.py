"""The descriptor pool that holds mdeploy's protocol messages.

Our messages have the same full names as Triton's (``inference.ModelInferRequest``...) so
that the service path is ``/inference.GRPCInferenceService/...``. In protobuf's default pool
two files may not define the same names, which is why MLServer, KServe and tritonclient cannot
be imported into one process. The generated modules register here instead, so mdeploy and
tritonclient coexist.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()

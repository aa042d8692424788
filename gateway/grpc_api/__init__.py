"""The gateway's gRPC API: KServe v2 / Triton ``GRPCInferenceService`` behind the same keys and limits."""

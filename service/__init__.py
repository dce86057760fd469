"""agentserve's gRPC service: loads policy artifacts from a model repository and serves Act."""

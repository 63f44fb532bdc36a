"""gRPC service: proto, generated stubs, server and status table."""

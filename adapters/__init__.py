"""The edges: gRPC server and client, channels, feeds and stores."""

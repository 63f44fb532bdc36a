"""Starting and joining Ray, loading the configuration, the CLI."""

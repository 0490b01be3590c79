"""Code shared by the producer and the workers: settings, errors, Redis keys, the limiter,
the model registry, request parsing and the batch ledger."""

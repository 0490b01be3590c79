"""Entry points for the limiter tests' child processes (importable under multiprocessing spawn)."""

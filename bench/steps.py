"""No-op steps for the benchmarks."""


def noop() -> None:
    return None

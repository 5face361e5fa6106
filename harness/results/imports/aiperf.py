"""placeholder until the aiperf reader lands."""

from pathlib import Path


def detect(path: Path) -> bool:
    return False


def read(path: Path):
    raise NotImplementedError

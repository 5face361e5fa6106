"""harness: verify a parallel LLM serving strategy on real hardware (and its CPU twin)."""

__version__ = "0.1.0"
SCHEMA_VERSION = 1

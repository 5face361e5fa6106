"""The Llama model: single-device code (llama.py), weight sources (weights.py), per-rank build
(build.py)."""

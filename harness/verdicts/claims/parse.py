"""Read a strategy report into claims: a claims YAML (docs/claims.md) or a seed-format markdown
report.

The entry point ``load_claims`` picks the reader. The records live in claim, the whole-text facts
(model, hardware, strategy) in facts, the markdown label rules in markdown_rules, the YAML schema in
yaml_schema and the readings of size units in units; their public names are re-exported here.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.errors import UsageError
from harness.verdicts.claims.claim import CLAIM_IDS, PER_GROUP, PER_STAGE, Claim, ClaimsDoc, number
from harness.verdicts.claims.facts import GPU_NAMES
from harness.verdicts.claims.markdown_rules import NUM, RULES, parse_markdown
from harness.verdicts.claims.yaml_schema import parse_yaml

__all__ = [
    "CLAIM_IDS",
    "GPU_NAMES",
    "NUM",
    "PER_GROUP",
    "PER_STAGE",
    "RULES",
    "Claim",
    "ClaimsDoc",
    "load_claims",
    "number",
    "parse_markdown",
    "parse_yaml",
]


def load_claims(path: str | Path) -> ClaimsDoc:
    """A claims YAML (a mapping with ``claims``) or a markdown report; UsageError when unreadable
    or when no claim is recognised."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"report: {path} not found; give a claims YAML or a markdown report"
        ) from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as e:
        raise UsageError(
            f"report: {path} is not a readable text file ({e.__class__.__name__})"
        ) from None
    data = None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        if p.suffix.lower() in (".yaml", ".yml"):
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise UsageError(
                f"report: {path}:{where} is not valid YAML; fix the syntax there"
            ) from None
    if isinstance(data, dict) and "claims" in data:
        doc = parse_yaml(data, str(p))
    elif p.suffix.lower() in (".yaml", ".yml"):
        raise UsageError(
            f"report: {path} has no 'claims' mapping; see docs/claims.md for the schema"
        )
    else:
        doc = parse_markdown(text, str(p))
    if not doc.claims:
        raise UsageError(
            f"report: {path} holds no recognisable claim (lines like '**Memory per GPU**: 35GB' "
            "or a claims YAML, docs/claims.md)"
        )
    return doc

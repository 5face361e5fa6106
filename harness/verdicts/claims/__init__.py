"""Claims of a strategy report: parse (markdown report or claims YAML) and verify (claim ->
verdict).

Part of ``harness.verdicts``; may import ``harness.spec``, ``harness.plan``, ``harness.results``,
``harness.errors``."""

from harness.verdicts.claims.parse import CLAIM_IDS, Claim, ClaimsDoc, load_claims
from harness.verdicts.claims.verify import Report, Verdict, verify

__all__ = ["CLAIM_IDS", "Claim", "ClaimsDoc", "Report", "Verdict", "load_claims", "verify"]

"""Claims of a strategy report: parse (markdown report or claims YAML) and verify (claim -> verdict)."""

from harness.claims.parse import CLAIM_IDS, Claim, ClaimsDoc, load_claims
from harness.claims.verify import Report, Verdict, verify

__all__ = ["CLAIM_IDS", "Claim", "ClaimsDoc", "Report", "Verdict", "load_claims", "verify"]

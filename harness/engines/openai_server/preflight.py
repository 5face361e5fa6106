"""What a server someone else runs (``kind: openai``) must do before the run starts (one line,
exit 2, nothing written): answer ``GET engine.url/v1/models``."""

from __future__ import annotations

import urllib.error
import urllib.request

from harness.errors import UsageError


def preflight(spec, options=None) -> None:
    """``options``: the launch options (unused: a server has no torchrun world)."""
    url = spec.engine.url.rstrip("/") + "/v1/models"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (the user's own server URL)
            r.read(1)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise UsageError(
            f"engine.url: nothing answers GET {url} ({getattr(err, 'reason', err)}); start the "
            f"server or fix the URL"
        ) from None

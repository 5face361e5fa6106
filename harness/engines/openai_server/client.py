"""The streaming client: one request = one ``POST /v1/completions`` with ``stream: true``, read as
server-sent events, timed on the harness's monotonic clock.

The request body (vLLM's OpenAI server): the prompt as token ids, ``max_tokens`` = the trace's
output length, ``ignore_eos``, greedy (``temperature: 0``), ``return_token_ids`` (vLLM sends each
chunk's new token ids in ``choices[0].token_ids``), ``stream_options.include_usage``.
Per chunk with choices: every token id it carries gets the chunk's receive time (one chunk per
token in practice; vLLM merges several tokens into one chunk when its API server lags, and those
tokens share the time; ITL then counts one gap per chunk, as ``vllm bench serve`` does:
``harness.measure.metrics.itls_s``). A server that sends no ``token_ids`` (not vLLM) counts one
token per chunk. Events of any size are read (``LineSplitter`` over the raw body: the first event
carries the whole prompt's ids, over aiohttp's line limit for a long prompt). The finish time is
the chunk with ``finish_reason`` (the last token); the usage chunk and ``[DONE]`` only end the
stream. An ``{"error": ...}`` event (vLLM sends it with HTTP 200 when its
engine fails) or a non-200 answer makes the request failed (``finish_s`` set, not completed).
Note: EOS comes out as a token with empty text under ``ignore_eos``; count ids, never text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import aiohttp

from harness.measure.metrics import RequestRecord


@dataclass
class StreamResult:
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None
    usage: dict | None = None


def completion_body(model: str, prompt: list[int], max_tokens: int) -> dict:
    return {
        "model": model,
        "prompt": list(prompt),
        "max_tokens": int(max_tokens),
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }


def _on_chunk(data: dict, rec: RequestRecord, out: StreamResult, now: float) -> None:
    if "error" in data:
        err = data["error"]
        out.error = str(err.get("message") if isinstance(err, dict) else err)
        return
    if data.get("usage"):
        out.usage = data["usage"]
    choices = data.get("choices") or []
    if not choices:
        return
    ch = choices[0]
    ids = ch.get("token_ids")
    if ids is None:
        ids = [None] if ch.get("text") or ch.get("finish_reason") is None else []
    if ids:
        if rec.first_token_s is None:
            rec.first_token_s = now
        rec.token_times_s.extend([now] * len(ids))
        out.tokens.extend(int(t) for t in ids if t is not None)
    if ch.get("finish_reason") is not None:
        out.finish_reason = str(ch["finish_reason"])
        rec.finish_s = rec.token_times_s[-1] if rec.token_times_s else now


def feed_line(line: str, rec: RequestRecord, out: StreamResult, now: float) -> bool:
    """One line of the event stream received at ``now``; True when the stream is over ([DONE] or an
    error)."""
    line = line.strip()
    if not line.startswith("data:"):
        return False
    payload = line[5:].strip()
    if payload == "[DONE]":
        return True
    try:
        _on_chunk(json.loads(payload), rec, out, now)
    except json.JSONDecodeError:
        out.error = f"unreadable event: {payload[:200]}"
    return out.error is not None


class LineSplitter:
    """The body's bytes, as they come, → its complete lines (without the newline), of any
    length."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            self._parts.append(data)
            return []
        *lines, rest = data.split(b"\n")
        lines[0] = b"".join([*self._parts, lines[0]])
        self._parts = [rest] if rest else []
        return lines


async def stream_request(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    prompt: list[int],
    rec: RequestRecord,
    clock: Callable[[], float],
    on_first_token: Callable[[int], None] | None = None,
) -> StreamResult:
    """Send one request and fill ``rec`` (sent, first token, token times, finish, completed) as the
    answer streams in; ``clock`` gives seconds since the run's start. ``on_first_token(id)`` is
    called as soon as the first token is read (MLPerf LoadGen's ``FirstTokenComplete``)."""
    out = StreamResult()
    body = completion_body(model, prompt, rec.output_len)
    rec.sent_s = clock()
    try:
        async with session.post(url + "/v1/completions", json=body) as resp:
            if resp.status != 200:
                text = (await resp.text())[:300]
                out.error = f"HTTP {resp.status}: {text}"
            else:
                lines, done = LineSplitter(), False
                async for data in resp.content.iter_any():
                    for raw in lines.feed(data):
                        had_first = rec.first_token_s is not None
                        done = feed_line(raw.decode("utf-8", "replace"), rec, out, clock())
                        if on_first_token and not had_first and rec.first_token_s is not None:
                            on_first_token(out.tokens[0] if out.tokens else 0)
                        if done:
                            break
                    if done:
                        break
    except (aiohttp.ClientError, ConnectionError, TimeoutError, ValueError) as e:
        out.error = f"{type(e).__name__}: {e}"
    if out.error is not None or out.finish_reason is None:
        out.error = out.error or "stream ended without a finish_reason"
        rec.finish_s = clock()
        rec.completed = False
    else:
        rec.completed = True
    return out

"""Letta's JSON envelopes: the summary, heartbeats, logins and alerts inside message text.

Interface::

    from vmem.app.agentfile.envelopes import _envelope, _summary_body, _summary_envelope
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any, Mapping


def _envelope(text: str) -> dict[str, Any] | None:
    """Letta's JSON envelope ``{"type": ..., ...}`` in ``text``, or None."""
    s = text.strip()
    if not (s.startswith("{") and s.endswith("}") and '"type"' in s):
        return None
    try:
        obj = json.loads(s)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("type"), str):
        return obj
    return None


# "Note: prior messages (69 of 80 total messages) have been hidden from view ...",
# "Note: 12 messages from the beginning of the conversation have been hidden from view ...", ...
_HIDDEN = re.compile(r"^Note: (?:\d+ )?(?:prior )?messages\b.*?hidden from view", re.DOTALL)
_SUMMARY_HEAD = re.compile(r"The following is a summary of the previous(?: \d+)? messages:\n ?")


def _summary_body(env: Mapping[str, Any]) -> str | None:
    """The summary text of a system_alert envelope that is Letta's summary, else None."""
    msg = env.get("message")
    if env.get("type") != "system_alert" or not isinstance(msg, str) or not _HIDDEN.match(msg):
        return None
    head = _SUMMARY_HEAD.search(msg)
    return msg[head.end():] if head else ""


def _letta_time(t: _dt.datetime) -> str:
    """A timestamp as Letta writes it inside envelopes."""
    return t.strftime("%Y-%m-%d %I:%M:%S %p %Z%z")


def _summary_envelope(summary: str, t: _dt.datetime) -> str:
    msg = ("Note: prior messages have been hidden from view due to conversation memory constraints.\n"
           f"The following is a summary of the previous messages:\n {summary}")
    return json.dumps({"type": "system_alert", "message": msg, "time": _letta_time(t)}, indent=2, ensure_ascii=False)

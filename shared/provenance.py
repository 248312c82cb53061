"""Where an event came from: a ``browser`` source (a public write key, pasted into web
pages, so anyone can send with it) or a ``server`` source (a secret key on the sender's
own servers). Intake stamps the kind of the key's source into every event's context
(``context.funnel.source_kind``), replacing anything a client put there; consumers read
it with :func:`source_kind` and hold browser events to what a public key may do:

* a purchase (``Order Completed``) from a browser counts for neither the customer stage
  (lead-scoring) nor membership and revenue (member-retargeting): it is a behaviour only;
* an identify from a browser may link the visitor to a user id, but never merges two
  leads that are both known (each holds more than anonymous ids), never resolves people
  by an e-mail or an external id (those are claims, recorded as conflicts when another
  lead holds them), and only fills in traits the lead does not have yet.

Events without a stamp (before this existed, or made inside Funnel) count as server
events.
"""

from __future__ import annotations

from typing import Any

BROWSER, SERVER = "browser", "server"
SOURCE_KINDS = (BROWSER, SERVER)
CONTEXT_KEY = "funnel"  # intake owns this context key: clients cannot set it


def stamp(context: dict[str, Any], kind: str) -> dict[str, Any]:
    """``context`` with the source kind intake vouches for (any client value dropped)."""
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {kind!r}")
    out = {k: v for k, v in context.items() if k != CONTEXT_KEY}
    out[CONTEXT_KEY] = {"source_kind": kind}
    return out


def source_kind(context: Any) -> str:
    """The kind intake stamped into an event's context; ``server`` when there is none."""
    stamped = context.get(CONTEXT_KEY) if isinstance(context, dict) else None
    kind = stamped.get("source_kind") if isinstance(stamped, dict) else None
    return kind if kind in SOURCE_KINDS else SERVER


def from_browser(context: Any) -> bool:
    return source_kind(context) == BROWSER

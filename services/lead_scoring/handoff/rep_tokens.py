"""Personal tokens of sales reps: who accepted a lead is the person signed in, not a name
picked from a list. A rep's token acts with the ``sales`` role as that rep, on the API
(bearer) and on the pages (sign-in). Tokens are random, shown once, stored hashed.

Failure modes: :func:`issue` raises ``LookupError`` for an unknown rep.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.lead_scoring.models import Rep, RepToken
from shared.db import utcnow
from shared.http import Principal

PREFIX = "rep_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(session: Session, rep_id: int) -> str:
    """A new token for the rep, replacing any earlier one (which stops working now)."""
    if session.get(Rep, rep_id) is None:
        raise LookupError(f"no rep {rep_id}")
    token = PREFIX + secrets.token_urlsafe(32)
    session.execute(delete(RepToken).where(RepToken.rep_id == rep_id))
    session.add(RepToken(rep_id=rep_id, token_hash=token_hash(token), created_at=utcnow()))
    session.flush()
    return token


def revoke(session: Session, rep_id: int) -> bool:
    """Remove the rep's token; False when there was none."""
    result = session.execute(delete(RepToken).where(RepToken.rep_id == rep_id))
    return bool(getattr(result, "rowcount", 0))


def principal(session: Session, token: str) -> Principal | None:
    """The rep a token belongs to, as a sales principal; None for anything else. Looked
    up by hash, so the comparison never touches the token itself."""
    if not token.startswith(PREFIX):
        return None
    row = session.execute(
        select(Rep.id, Rep.name)
        .join(RepToken, RepToken.rep_id == Rep.id)
        .where(RepToken.token_hash == token_hash(token))
    ).first()
    if row is None:
        return None
    return Principal(role="sales", person_id=row.id, name=row.name)


def current_hash(session: Session, rep_id: int) -> str | None:
    """The hash of the rep's token now (page sessions are bound to it)."""
    return session.scalar(select(RepToken.token_hash).where(RepToken.rep_id == rep_id))

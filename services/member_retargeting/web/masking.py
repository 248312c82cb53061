"""What marketing sees of a person's contact details: e-mails and phones masked
(``g***@e***.com``, ``***78``) unless the viewer may see personal data — an account
granted PII (``/admin/accounts``), or an admin. The shared marketing token never may.
The one place the web layer decides it; the API and the pages both ask here."""

from __future__ import annotations

from flask import g, has_request_context, session

from shared.privacy import mask_email, mask_phone


def sees_pii() -> bool:
    principal = getattr(g, "funnel_principal", None)
    if principal is not None:  # the API: the bearer token's principal
        return bool(principal.pii or principal.role == "admin")
    return has_request_context() and bool(session.get("pii"))  # the pages


def email(value: str | None) -> str | None:
    return value if sees_pii() else mask_email(value)


def phone(value: str | None) -> str | None:
    return value if sees_pii() else mask_phone(value)

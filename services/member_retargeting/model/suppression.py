"""Suppression keys: the SHA-256 of a normalised e-mail or phone, so the list of people
never to contact holds no plain identifier (and a person erased stays suppressed). Pure."""

from __future__ import annotations

from services.member_retargeting.model.audiences import normal_email, normal_phone, sha256_hex

EMAIL, PHONE = "email", "phone"


def suppression_key(kind: str, value: str | None, region: str | None = None) -> str | None:
    """The hash a suppression of ``value`` is kept under, or None when it cannot be one."""
    if value is None:
        return None
    if kind == EMAIL:
        normal = normal_email(value, "meta")  # trimmed, lower-case: no provider's variations
    elif kind == PHONE:
        normal = normal_phone(value, "google", default_region=region)  # E.164 with "+"
    else:
        return None
    return sha256_hex(f"{kind}:{normal}") if normal else None

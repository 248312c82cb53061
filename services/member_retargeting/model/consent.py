"""Which consent purpose each channel's sending needs (purposes and how decisions are read
from events: :mod:`shared.consent`). Pure."""

from __future__ import annotations

from shared.consent import ADVERTISING, MARKETING

# What each channel's sending uses a person's data for.
CHANNEL_PURPOSE = {
    "email": MARKETING,
    "sms": MARKETING,
    "whatsapp": MARKETING,
    "webhook": MARKETING,
    "ads": ADVERTISING,
}

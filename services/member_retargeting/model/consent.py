"""Which consent purpose each channel's sending needs (purposes and how decisions are read
from events: :mod:`shared.consent`). Pure."""

from __future__ import annotations

from shared.consent import ADVERTISING, ANALYTICS, MARKETING

__all__ = ["ADVERTISING", "ANALYTICS", "CHANNEL_PURPOSE", "MARKETING", "MESSAGE_CHANNELS"]

# What each channel's sending uses a person's data for.
CHANNEL_PURPOSE = {
    "email": MARKETING,
    "sms": MARKETING,
    "whatsapp": MARKETING,
    "webhook": MARKETING,
    "ads": ADVERTISING,
}
# The channels that send a person a message: the frequency cap counts these (an ads
# audience is not a message, and never uses up anyone's cap).
MESSAGE_CHANNELS = tuple(
    sorted(c for c, purpose in CHANNEL_PURPOSE.items() if purpose == MARKETING)
)
# The suppression reason a person's own unsubscribe leaves (reports name it).
UNSUBSCRIBE_REASON = "unsubscribed"

"""Each campaign channel's consent purpose."""

from __future__ import annotations

import pytest

from services.member_retargeting.model.consent import CHANNEL_PURPOSE
from services.member_retargeting.web.schemas import CHANNELS
from shared.consent import ADVERTISING, MARKETING, PURPOSES


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_campaign_channel_needs_a_purpose(channel: str) -> None:
    # CHANNELS: what the HTTP schema lets a campaign send on
    assert CHANNEL_PURPOSE[channel] in PURPOSES


def test_no_purpose_for_a_channel_campaigns_cannot_use() -> None:
    assert set(CHANNEL_PURPOSE) == set(CHANNELS)


def test_channel_purposes() -> None:
    assert CHANNEL_PURPOSE == {
        "email": MARKETING,
        "sms": MARKETING,
        "whatsapp": MARKETING,
        "webhook": MARKETING,
        "ads": ADVERTISING,
    }

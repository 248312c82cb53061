"""What of an event is kept for rescoring: bounded properties."""

from __future__ import annotations


def test_kept_properties_are_bounded_and_the_shortcut_never_misjudges() -> None:
    import json
    import random

    from services.lead_scoring.model.history import MAX_KEPT_BYTES, _bounded, _surely_small

    rng = random.Random(7)
    alphabet = ["a", "é", "\n", "\u0001", "價", "😀", '"']
    for _ in range(2000):
        props = {
            "".join(rng.choices(alphabet, k=rng.randint(1, 40))): rng.choice(
                [
                    "".join(rng.choices(alphabet, k=rng.randint(0, 400))),
                    rng.randint(-(10**17), 10**17),
                    rng.random() * 10 ** rng.randint(-300, 300),
                    None,
                    True,
                ]
            )
            for _ in range(rng.randint(0, 30))
        }
        if _surely_small(props):
            assert len(json.dumps(props, default=str)) <= MAX_KEPT_BYTES
    huge = {"note": "x" * 20_000, "plan": "pro", "nested": {"a": 1}, "n": 10**30}
    assert not _surely_small(huge)
    assert _bounded(huge) == {"note": "x" * 500, "plan": "pro", "n": 10**30}
    assert _bounded({"path": "/docs", "n": 3}) == {"path": "/docs", "n": 3}

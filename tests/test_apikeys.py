"""The key format: recognisable, checksummed, hashed."""

from __future__ import annotations

import re

from partner_api import apikeys

README_PATTERN = r"pak_(live|test)_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}"


def test_generated_keys_match_the_published_pattern() -> None:
    live = apikeys.generate()
    test = apikeys.generate(test=True)

    assert re.fullmatch(README_PATTERN, live.plaintext)
    assert live.plaintext.startswith("pak_live_") and test.plaintext.startswith(
        "pak_test_"
    )
    assert apikeys.is_well_formed(live.plaintext)
    assert apikeys.key_id_of(live.plaintext) == live.key_id
    assert live.display_prefix == f"pak_live_{live.key_id}"
    assert live.key_hash == apikeys.hash_key(live.plaintext)
    assert live.plaintext not in live.key_hash


def test_keys_are_unique() -> None:
    keys = {apikeys.generate().plaintext for _ in range(200)}

    assert len(keys) == 200


def test_checksum_rejects_every_single_character_change() -> None:
    key = apikeys.generate().plaintext
    for position, original in enumerate(key):
        for replacement in apikeys.ALPHABET + "_":
            if replacement == original:
                continue

            changed = key[:position] + replacement + key[position + 1 :]
            assert not apikeys.is_well_formed(changed), (position, replacement)


def test_truncated_and_padded_keys_are_rejected() -> None:
    key = apikeys.generate().plaintext

    assert not apikeys.is_well_formed(key[:-1])
    assert not apikeys.is_well_formed(key + "0")
    assert not apikeys.is_well_formed("")
    assert not apikeys.is_well_formed(key.replace("pak_live_", "sk_live_"))

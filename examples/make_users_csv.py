"""Generate ``examples/users.csv``, the sample import file for the partner client.

The output is deterministic (fixed seed), so re-running this script reproduces
the committed CSV byte for byte. It contains exactly:

* 975 valid rows (20 of them with an internationalised email domain),
* 15 invalid rows, each broken in exactly one way (HTTP 400 expected),
* 10 duplicates: the email of an earlier valid row in a different letter case,
  with a fresh external id (HTTP 409 ``email_taken`` expected).
"""

from __future__ import annotations

import csv
import random
import string
from pathlib import Path

from faker import Faker

SEED = 20240611
OUTPUT = Path(__file__).with_name("users.csv")
FIELDS = ["email", "password", "first_name", "last_name", "external_id"]
N_VALID = 975
N_IDN = 20
N_DUPLICATES = 10

# en_IE gives O'Brien-style apostrophes; the others accents and non-Latin scripts.
LOCALES = [
    "en_US", "en_IE", "fr_FR", "de_DE", "es_ES", "pl_PL",
    "el_GR", "ru_RU", "ja_JP", "zh_CN",
]  # fmt: skip
# Reserved names only (RFC 2606), so no real mailbox can ever be hit.
DOMAINS = ["example.com", "example.org", "example.net", "mail.example"]
IDN_DOMAINS = [
    "bücher.example", "münchen.example", "zürich.example", "español.example",
    "kraków.example", "例え.example", "παράδειγμα.example", "пример.example",
]  # fmt: skip
PASSWORD_CHARS = string.ascii_letters + string.digits + "!#$%&*+-=?@^_,;:'\"~"

rng = random.Random(SEED)
Faker.seed(SEED)
fakers = {locale: Faker(locale) for locale in LOCALES}
used_emails: set[str] = set()
used_ids: set[str] = set()


def unique_email(local: str, domain: str) -> str:
    """Return ``local@domain``, suffixed with a number if it is already taken."""
    candidate, n = f"{local}@{domain}", 1
    while candidate.casefold() in used_emails:
        n += 1
        candidate = f"{local}{n}@{domain}"
    used_emails.add(candidate.casefold())
    return candidate


def new_external_id() -> str:
    while (external_id := f"crm-{rng.randrange(1_000_000):06d}") in used_ids:
        pass
    used_ids.add(external_id)
    return external_id


def password() -> str:
    return "".join(rng.choices(PASSWORD_CHARS, k=rng.randint(12, 20)))


def valid_row(idn: bool = False) -> dict[str, str]:
    fake = fakers[rng.choice(LOCALES)]
    # Faker's user names are transliterated to ASCII for every locale.
    domain = rng.choice(IDN_DOMAINS if idn else DOMAINS)
    return {
        "email": unique_email(fake.user_name().lower(), domain),
        "password": password() if rng.random() >= 0.3 else "",
        "first_name": fake.first_name() if rng.random() >= 0.03 else "",
        "last_name": fake.last_name() if rng.random() >= 0.03 else "",
        "external_id": new_external_id() if rng.random() >= 0.02 else "",
    }


def invalid_rows() -> list[dict[str, str]]:
    """One row per rule violation; everything else in the row is valid."""
    # 255 chars; every label and the domain itself stay within their own limits.
    too_long = f"very.long.address@{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 37}.example"
    broken = [
        {"email": "jean.dupont.example.com"},  # no @
        {"email": "marie curie@example.org"},  # space inside
        {"email": too_long},  # limit is 254
        {"email": "two@signs@example.net"},
        {"email": "nodomain@"},
        {"email": "double.dot@example..com"},
        {"email": ""},  # email is required
        {"password": "abc12"},
        {"password": "Abcdef7"},  # one below the minimum of 8
        {"password": "p" * 129},
        {"first_name": "Å" * 101},
        {"last_name": "Oldenburg-" * 15},  # 150 chars
        {"external_id": "crm-" + "9" * 125},  # 129 chars
        {"first_name": "Ding\x07Dong"},  # BEL control character
        {"last_name": "Esc\x1bape"},  # ESC control character
    ]
    rows = []
    for override in broken:
        row = valid_row()
        row.update(override)
        rows.append(row)
    return rows


def swap_case(email: str) -> str:
    """Change the letter case so the address differs only by case."""
    local, domain = email.split("@")
    return f"{local.upper()}@{domain.capitalize()}"


def build_rows() -> list[dict[str, str]]:
    rows = [valid_row() for _ in range(N_VALID - N_IDN)]
    rows += [valid_row(idn=True) for _ in range(N_IDN)]
    rng.shuffle(rows)
    # Each copy is inserted after its original, so the original is created first.
    # ASCII-only addresses keep "differs only by case" unambiguous.
    candidates = [row for row in rows[:700] if row["email"].isascii()]
    for original in rng.sample(candidates, N_DUPLICATES):
        duplicate = valid_row()
        duplicate["email"] = swap_case(original["email"])
        duplicate["external_id"] = new_external_id()
        after = next(i for i, row in enumerate(rows) if row is original)
        rows.insert(rng.randint(after + 1, len(rows)), duplicate)
    for row in invalid_rows():
        rows.insert(rng.randint(0, len(rows)), row)
    return rows


def main() -> None:
    rows = build_rows()
    with OUTPUT.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUTPUT}")


if __name__ == "__main__":
    main()

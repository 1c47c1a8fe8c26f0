import re
from collections import Counter, defaultdict

import pytest

from hcr_model.data.build import MANIFEST_PATH, PACKAGES, read_manifest
from hcr_model.data.selection import MANIFEST_FIELDS, Candidate, _match_dep5, assign_splits

ALLOWED_LICENSES = {
    "public-domain",
    "CC0-1.0",
    "CC-BY-1.0",
    "CC-BY-2.0",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-2.0",
    "CC-BY-SA-2.5",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "GPL-2",
    "GPL-2+",
    "GPL-3",
    "GPL-3+",
    "LGPL-3",
    "GFDL-NIV-1.2",
}


@pytest.fixture(scope="module")
def rows():
    return read_manifest(MANIFEST_PATH)


def test_manifest_header(rows):
    with MANIFEST_PATH.open() as handle:
        header = handle.readline().strip().split(",")

    assert header == MANIFEST_FIELDS


def test_manifest_ids_unique_and_safe(rows):
    ids = [row["photo_id"] for row in rows]

    assert len(ids) == len(set(ids))
    for photo_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", photo_id), photo_id


def test_manifest_originals_unique(rows):
    # The same bytes twice would put one photo in two splits.
    digests = Counter(row["sha256"] for row in rows)

    assert [digest for digest, count in digests.items() if count > 1] == []
    for row in rows:
        assert re.fullmatch(r"[0-9a-f]{64}", row["sha256"]), row["photo_id"]


def test_manifest_packages_and_members(rows):
    for row in rows:
        assert row["package"] in PACKAGES, row["photo_id"]
        if row["member"]:
            assert row["path"].endswith(".rcc"), row["photo_id"]
            assert row["member"].endswith(".webp"), row["photo_id"]
        else:
            assert row["path"].lower().endswith((".jpg", ".png")), row["photo_id"]


def test_manifest_licenses_allowed(rows):
    unknown = {row["license"] for row in rows} - ALLOWED_LICENSES

    assert unknown == set()


def test_manifest_split_values(rows):
    splits = Counter(row["split"] for row in rows)

    assert set(splits) == {"train", "val", "test"}
    assert 0.75 <= splits["train"] / len(rows) <= 0.85
    assert 0.07 <= splits["val"] / len(rows) <= 0.13
    assert 0.07 <= splits["test"] / len(rows) <= 0.13


def test_manifest_splits_stratified(rows):
    by_category = defaultdict(Counter)
    for row in rows:
        assert row["category"], row["photo_id"]
        by_category[row["category"]][row["split"]] += 1

    for category, counts in by_category.items():
        if sum(counts.values()) >= 4:
            assert counts["val"] >= 1, category
            assert counts["test"] >= 1, category


def test_manifest_covers_every_package(rows):
    assert {row["package"] for row in rows} == set(PACKAGES)


def test_manifest_leaves_out_drawings(rows):
    members = " ".join(row["member"] for row in rows)

    for folder in ("/lang/", "/paintings/", "/babyshapes/"):
        assert folder not in members


def test_assign_splits_deterministic():
    candidates = [Candidate("p", f"f{i}.jpg", "", "cat" if i < 20 else "tiny", photo_id=f"id{i}") for i in range(23)]

    first = assign_splits(candidates)
    second = assign_splits(list(reversed(candidates)))

    assert first == second
    assert Counter(first[f"id{i}"] for i in range(20)) == Counter(train=16, val=2, test=2)
    assert {first[f"id{i}"] for i in range(20, 23)} == {"train"}


def test_match_dep5_last_stanza_wins():
    stanzas = [(["*"], "GPL-3+"), (["src/a/*.jpg"], "CC-BY-2.0"), (["src/a/b.jpg"], "CC0-1.0")]

    assert _match_dep5(stanzas, "src/a/b.jpg") == "CC0-1.0"
    assert _match_dep5(stanzas, "src/a/c.jpg") == "CC-BY-2.0"
    assert _match_dep5(stanzas, "src/z.png") == "GPL-3+"


def test_match_dep5_ignores_converted_extension():
    stanzas = [(["*"], "GPL-3+"), (["src/fish1.jpg"], "public-domain")]

    assert _match_dep5(stanzas, "src/fish1.webp") == "public-domain"

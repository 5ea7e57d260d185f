"""The region-prefix lookup that alerts' policy and detection's overrides share."""

from shared.region_prefix import covers, longest_prefix


def test_a_prefix_covers_itself_and_its_descendants_only() -> None:
    assert covers("us/wa", "us/wa") and covers("us/wa", "us/wa/king-county")
    assert not covers("us/wa", "us/washington") and not covers("us/wa/king-county", "us/wa")


def test_both_wildcards_cover_every_region() -> None:
    assert covers("", "ca/bc") and covers("*", "ca/bc")


def test_the_longest_covering_prefix_wins_and_a_wildcard_comes_last() -> None:
    prefixes = ["*", "us", "us/wa/king-county", "us/wa", ""]
    assert longest_prefix(prefixes, "us/wa/king-county/98104") == "us/wa/king-county"
    assert longest_prefix(prefixes, "us/or") == "us"
    assert longest_prefix(prefixes, "ca/bc") in {"", "*"}
    assert longest_prefix(["us/wa"], "ca/bc") is None

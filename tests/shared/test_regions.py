from __future__ import annotations

import pytest

from shared import regions


def test_us_zip_resolves_to_a_path_with_its_parents() -> None:
    region = regions.by_postal_code("98104")
    assert region.id == "us/wa/king-county/98104"
    assert region.ancestors() == ["us/wa/king-county/98104", "us/wa/king-county", "us/wa", "us"]
    assert region.time_zone == "America/Los_Angeles"
    assert regions.get_region(region.id) == region


def test_city_and_state_resolve_to_a_county_or_a_catalog_city() -> None:
    assert regions.by_city("Seattle", "WA").id == "us/wa/king-county"
    assert regions.by_city("vancouver", "bc").id == "ca/bc/vancouver-coastal/vancouver"


def test_a_point_resolves_to_the_nearest_zip_and_is_not_kept() -> None:
    region = regions.by_point(47.6030, -122.3260)
    assert region.id == "us/wa/king-county/98104"
    assert "47.6" not in region.id + region.name


@pytest.mark.parametrize("call", [lambda: regions.by_postal_code("00000"),
                                  lambda: regions.by_postal_code("ABC"),
                                  lambda: regions.by_city("Nowhere", "ZZ"),
                                  lambda: regions.by_point(0.0, 0.0)])
def test_unknown_places_raise(call: object) -> None:
    with pytest.raises(regions.RegionNotFoundError):
        call()  # type: ignore[operator]

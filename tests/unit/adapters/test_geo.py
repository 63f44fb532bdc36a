"""Zip code <-> county index, on the real HUD crosswalk shipped in catalogs/geo.

Every pair asserted here was looked up in the CSV (whose leading zeros were stripped).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shush.adapters.feeds.errors import FeedUsageError
from shush.adapters.feeds.geo import BUNDLED_ZIP_COUNTY_CSV, ZipCountyIndex, normalize_zip
from shush.adapters.feeds.nws import WeatherAlert, read_alerts
from shush.engine.errors import CatalogError

NWS_DIR = Path(__file__).resolve().parents[2] / "data" / "nws"


@pytest.fixture(scope="module")
def index() -> ZipCountyIndex:
    return ZipCountyIndex.from_csv()


def _alert(name: str, position: int = 0) -> WeatherAlert:
    return read_alerts(NWS_DIR / name).alerts[position]


def test_bundled_table_loads(index: ZipCountyIndex) -> None:
    assert BUNDLED_ZIP_COUNTY_CSV.is_file()
    assert index.num_zips == 39456
    assert index.num_counties == 3223


def test_leading_zeros_are_restored(index: ZipCountyIndex) -> None:
    # CSV row "501,Suffolk County,NY,36103,H1" and "601,Adjuntas Municipio,PR,72001,H1"
    assert index.counties_for_zip("00501") == frozenset({"36103"})
    assert index.counties_for_zip("501") == frozenset({"36103"})
    assert "00601" in index.zips_for_county("72001")
    # CSV "4013" (Maricopa) is county 04013
    assert "85001" in index.zips_for_county("04013")
    assert index.county_name("04013") == "Maricopa County, AZ"


def test_zip_spanning_two_counties(index: ZipCountyIndex) -> None:
    # 36301 (Dothan, AL) lies in Geneva County (01061) and Houston County (01069)
    assert index.counties_for_zip("36301") == frozenset({"01061", "01069"})
    assert "36301" in index.zips_for_county("01061")
    assert "36301" in index.zips_for_county("01069")


def test_counts_per_county(index: ZipCountyIndex) -> None:
    assert len(index.zips_for_county("01031")) == 16  # Coffee, AL
    assert len(index.zips_for_county("01045")) == 14  # Dale, AL
    assert len(index.zips_for_county("01061")) == 15  # Geneva, AL
    assert len(index.zips_for_county("04013")) == 193  # Maricopa, AZ
    assert len(index.zips_for_county("06037")) == 494  # Los Angeles, CA
    assert index.zips_for_county("99999") == frozenset()


def test_alert_for_a_county_yields_its_zips(index: ZipCountyIndex) -> None:
    heat = _alert("finity69x2_nws_alerts_api.json")  # SAME 004013: Maricopa County, AZ
    zips = index.zips_for_alert(heat)
    assert zips == index.zips_for_county("04013")
    assert {"85001", "85004", "85251"} <= zips
    assert all(len(z) == 5 and z.isdigit() for z in zips)


def test_alert_for_several_counties_yields_the_union(index: ZipCountyIndex) -> None:
    freeze = _alert("beardicus_2022-12-23_AL_HardFreezeWarning_TAE.xml")  # Coffee, Dale, Geneva
    zips = index.zips_for_alert(freeze)
    assert len(zips) == 35  # 16 + 14 + 15 zips per county, 35 distinct (some span two)
    assert "36301" in zips
    flood = _alert("pynws_alerts_active_zone.json")  # 16 counties of OR and WA
    assert "97201" in index.zips_for_alert(flood)  # downtown Portland, Multnomah (41051)
    assert index.counties_for_zip("97201") == frozenset({"41051"})


def test_marine_alert_yields_no_zips(index: ZipCountyIndex) -> None:
    heat = _alert("finity69x2_nws_alerts_api.json")
    data = heat.model_dump(exclude={"fips_counties"})
    marine = WeatherAlert.model_validate({**data, "same_codes": ("057150",)})
    assert marine.fips_counties == ()
    assert index.zips_for_alert(marine) == frozenset()


def test_lookup_inputs_are_normalised_or_refused(index: ZipCountyIndex) -> None:
    assert normalize_zip("85001-1234") == "85001"
    assert index.counties_for_zip(" 85001 ") == frozenset({"04013"})
    assert index.zips_for_county("4013") == index.zips_for_county("04013")
    with pytest.raises(FeedUsageError) as caught:
        index.counties_for_zip("ABCDE")
    assert caught.value.field == "zip_code"
    with pytest.raises(FeedUsageError):
        index.zips_for_county("123")


def test_small_table(tmp_path: Path) -> None:
    table = tmp_path / "zips.csv"
    table.write_text("ZIP,COUNTYNAME,STATE,STCOUNTYFP,CLASSFP\n"
                     "501,Suffolk County,NY,36103,H1\n"
                     "36301,Geneva County,AL,1061,H1\n"
                     "36301,Houston County,AL,1069,H1\n")
    index = ZipCountyIndex.from_csv(table)
    assert index.num_zips == 2 and index.num_counties == 3
    assert index.zips_for_county("01061") == frozenset({"36301"})
    assert index.county_name("01069") == "Houston County, AL"


def test_bad_tables_raise_catalog_errors(tmp_path: Path) -> None:
    missing_column = tmp_path / "a.csv"
    missing_column.write_text("ZIP,COUNTYNAME\n501,Suffolk County\n")
    with pytest.raises(CatalogError) as caught:
        ZipCountyIndex.from_csv(missing_column)
    assert caught.value.field == "STCOUNTYFP"

    bad_row = tmp_path / "b.csv"
    bad_row.write_text("ZIP,STCOUNTYFP\n501,36103\n5O1,36103\n")
    with pytest.raises(CatalogError) as caught:
        ZipCountyIndex.from_csv(bad_row)
    assert (caught.value.item, caught.value.field) == ("line 3", "ZIP")
    assert caught.value.file == str(bad_row)

    empty = tmp_path / "c.csv"
    empty.write_text("ZIP,STCOUNTYFP\n")
    with pytest.raises(CatalogError, match="no rows"):
        ZipCountyIndex.from_csv(empty)

    with pytest.raises(CatalogError, match="cannot read"):
        ZipCountyIndex.from_csv(tmp_path / "missing.csv")

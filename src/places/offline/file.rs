//! A user's own places file for `places offline FILE`: JSON in one of three shapes.
//!
//! - A legacy Nearby Search response, `{"results": [place, ...], ...}` (other keys
//!   ignored), or a plain array of places. A place is an object with a string `name`, a
//!   string `place_id` and numbers `geometry.location.lat` (-90..=90) and `lng`
//!   (-180..=180); when given, `vicinity` must be a string and `types` an array of
//!   strings. Each place is answered exactly as written, every key kept in its order.
//! - A GeoJSON FeatureCollection (RFC 7946), as OpenStreetMap tools (Overpass, osmium
//!   export, osmtogeojson) and GIS tools write it. Each Feature with a Point geometry and
//!   a name becomes a place in the legacy shape; features of other geometries (ways and
//!   areas), with a null geometry or with no name are skipped.
//!
//! Errors name the line on which the bad place or feature starts, found from where
//! serde_json's `RawValue` of each element lies in the text.

use super::index::Index;
use super::{object, Offline, Places};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Properties a feature's `name` is taken from, the first one present: OpenStreetMap's
/// `name` (the local name), then its English and official names. Fixed, so that herd.conf
/// keeps one argument per `places` line.
const NAME_KEYS: [&str; 3] = ["name", "name:en", "official_name"];

/// Where a feature's `place_id` is taken from when the feature has no `id` member: the
/// properties Overpass (`@id`), osm2pgsql and GIS exports (`osm_id`, `id`) write.
const ID_KEYS: [&str; 3] = ["@id", "osm_id", "id"];

/// OpenStreetMap keys whose values become a feature's `types`, in this order
/// (`amenity=cafe` gives `"cafe"`; a value of `yes` gives the key itself, `"shop"`).
const TYPE_KEYS: [&str; 14] = [
    "amenity",
    "shop",
    "tourism",
    "leisure",
    "historic",
    "office",
    "craft",
    "healthcare",
    "sport",
    "railway",
    "public_transport",
    "aeroway",
    "natural",
    "place",
];

/// The other GeoJSON object types (RFC 7946 §1.4), refused at the top of a file.
const GEOJSON_TYPES: [&str; 8] = [
    "Feature",
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
];

/// A place checked and ready for the index: its id, latitude, longitude and answer.
type Checked = (String, f64, f64, Value);

/// Parses a user's places file; the error starts with `LINE: ` (or `LINE:COLUMN: `) and
/// the caller puts the file name before it.
pub(super) fn parse(bytes: &[u8]) -> Result<Offline, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_column(bytes, e.valid_up_to());
        format!("{line}:{column}: invalid UTF-8")
    })?;
    let json_error = |e: serde_json::Error| {
        let message = e.to_string();
        // serde_json ends its messages with " at line L column C", which we lead with.
        let what = message.split(" at line ").next().unwrap_or(&message);
        format!("{}:{}: {what}", e.line(), e.column())
    };
    // Checks the whole text and finds where the list of places is, without building it.
    let doc: &RawValue = serde_json::from_str(text).map_err(json_error)?;
    let (list, label, geojson) = if doc.get().starts_with('[') {
        (doc, "", false)
    } else if doc.get().starts_with('{') {
        let members: HashMap<String, &RawValue> =
            serde_json::from_str(doc.get()).map_err(json_error)?;
        let kind = members.get("type").map(|t| t.get().trim_matches('"'));
        match kind {
            Some("FeatureCollection") => match members.get("features") {
                Some(list) if list.get().starts_with('[') => (*list, "features", true),
                _ => return Err("1: a FeatureCollection needs a \"features\" array".into()),
            },
            Some(kind) if GEOJSON_TYPES.contains(&kind) => {
                return Err(format!(
                    "1: GeoJSON \"{kind}\" is not supported: expected a FeatureCollection"
                ))
            }
            _ => match members.get("results") {
                Some(list) if list.get().starts_with('[') => (*list, "results", false),
                _ => return Err("1: an object of places needs a \"results\" array".into()),
            },
        }
    } else {
        return Err("1: expected an array of places or an object with \"results\"".into());
    };
    let elements: Vec<&RawValue> = serde_json::from_str(list.get()).map_err(json_error)?;
    let mut places = Vec::with_capacity(elements.len());
    for (i, element) in elements.into_iter().enumerate() {
        let at = offset_in(text, element.get());
        let located = |what: &str| {
            let (line, _) = line_column(bytes, at);
            format!("{line}: {label}[{i}]: {what}")
        };
        // Deeper than serde_json's recursion limit is the only error left here.
        let value: Value = serde_json::from_str(element.get()).map_err(|e| {
            let message = e.to_string();
            located(message.split(" at line ").next().unwrap_or(&message))
        })?;
        let checked = if geojson {
            feature(value)
        } else {
            legacy_place(value).map(Some)
        };
        match checked {
            Ok(Some(place)) => places.push(place),
            Ok(None) => {}
            Err(what) => return Err(located(&what)),
        }
    }
    if u32::try_from(places.len()).is_err() {
        return Err("1: too many places".into());
    }
    // Slots in place-id order make ties between equal distances go by place id.
    places.sort_by(|a, b| a.0.cmp(&b.0));
    let coords: Vec<(f64, f64)> = places.iter().map(|p| (p.1, p.2)).collect();
    let values = places.into_iter().map(|p| p.3).collect();
    Ok(Offline {
        index: Index::build(&coords),
        places: Places::File(values),
    })
}

/// Where `inner`, a slice of `outer` (as serde_json's borrowed `RawValue`s are), starts
/// in it, in bytes.
fn offset_in(outer: &str, inner: &str) -> usize {
    (inner.as_ptr() as usize)
        .saturating_sub(outer.as_ptr() as usize)
        .min(outer.len())
}

/// The 1-based line and column of byte `at` of `text`.
fn line_column(text: &[u8], at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let lines = before.iter().filter(|&&b| b == b'\n').count();
    (lines + 1, at - line_start + 1)
}

/// Checks one place of a legacy-shaped file, returning it with its id and coordinates.
fn legacy_place(place: Value) -> Result<Checked, String> {
    if !place.is_object() {
        return Err("a place must be an object".into());
    }
    let string = |key: &str| match place.get(key) {
        None => Err(format!("missing \"{key}\"")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("\"{key}\" is not a string")),
    };
    string("name")?;
    let id = string("place_id")?;
    let location = place.get("geometry").and_then(|g| g.get("location"));
    let coordinate = |key: &str, limit: f64| {
        let path = format!("geometry.location.{key}");
        match location.and_then(|l| l.get(key)) {
            None => Err(format!("missing \"{path}\"")),
            Some(v) => in_range(v, &path, limit),
        }
    };
    let lat = coordinate("lat", 90.0)?;
    let lng = coordinate("lng", 180.0)?;
    if place.get("vicinity").is_some_and(|v| !v.is_string()) {
        return Err("\"vicinity\" is not a string".into());
    }
    if let Some(types) = place.get("types") {
        let strings = types
            .as_array()
            .is_some_and(|t| t.iter().all(Value::is_string));
        if !strings {
            return Err("\"types\" is not an array of strings".into());
        }
    }
    Ok((id, lat, lng, place))
}

/// The number `v` if it is one within ±`limit`; errors call it `path`.
fn in_range(v: &Value, path: &str, limit: f64) -> Result<f64, String> {
    match v.as_f64() {
        Some(x) if (-limit..=limit).contains(&x) => Ok(x),
        Some(x) => Err(format!("\"{path}\" {x} is out of range -{limit}..={limit}")),
        None => Err(format!("\"{path}\" is not a number")),
    }
}

/// A GeoJSON Feature as a legacy-shaped place, or `None` for a feature herd skips (not a
/// Point, or without a name).
fn feature(feature: Value) -> Result<Option<Checked>, String> {
    let Value::Object(feature) = feature else {
        return Err("a feature must be an object".into());
    };
    if feature.get("type").and_then(Value::as_str) != Some("Feature") {
        return Err("\"type\" is not \"Feature\"".into());
    }
    let no_properties = Map::new();
    let properties = match feature.get("properties") {
        None | Some(Value::Null) => &no_properties,
        Some(Value::Object(p)) => p,
        Some(_) => return Err("\"properties\" is not an object".into()),
    };
    let geometry = match feature.get("geometry") {
        None => return Err("missing \"geometry\"".into()),
        Some(Value::Null) => return Ok(None),
        Some(Value::Object(g)) => g,
        Some(_) => return Err("\"geometry\" is not an object".into()),
    };
    match geometry.get("type").and_then(Value::as_str) {
        Some("Point") => {}
        Some(_) => return Ok(None),
        None => return Err("\"geometry.type\" is not a string".into()),
    }
    let (lat, lng) = match geometry.get("coordinates").and_then(Value::as_array) {
        Some(position) if position.len() >= 2 => (
            in_range(&position[1], "geometry.coordinates[1]", 90.0)?,
            in_range(&position[0], "geometry.coordinates[0]", 180.0)?,
        ),
        _ => return Err("\"geometry.coordinates\" is not [longitude, latitude]".into()),
    };
    let mut name = None;
    for key in NAME_KEYS {
        match properties.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                name = Some(s.clone());
                break;
            }
            None | Some(Value::String(_)) | Some(Value::Null) => {}
            Some(_) => return Err(format!("\"properties.{key}\" is not a string")),
        }
    }
    let Some(name) = name else {
        return Ok(None);
    };
    let id_of = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let id = feature
        .get("id")
        .and_then(id_of)
        .or_else(|| {
            ID_KEYS
                .iter()
                .find_map(|k| properties.get(*k).and_then(id_of))
        })
        .ok_or_else(|| {
            format!(
                "no id: a feature needs an \"id\", or one of the properties {}",
                quoted(&ID_KEYS)
            )
        })?;
    let location = object([("lat", lat.into()), ("lng", lng.into())]);
    let mut place = object([
        ("geometry", object([("location", location)])),
        ("name", name.into()),
        ("place_id", id.clone().into()),
        ("types", types(properties).into()),
    ]);
    if let (Some(vicinity), Value::Object(map)) = (address(properties), &mut place) {
        map.insert("vicinity".into(), vicinity.into());
    }
    Ok(Some((id, lat, lng, place)))
}

/// `"a", "b" or "c"`.
fn quoted(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// A feature's types from its OpenStreetMap tags (`TYPE_KEYS`); a tag's `;`-separated
/// values each count.
fn types(properties: &Map<String, Value>) -> Vec<Value> {
    let mut types: Vec<Value> = Vec::new();
    for key in TYPE_KEYS {
        let Some(Value::String(values)) = properties.get(key) else {
            continue;
        };
        for value in values.split(';').map(str::trim).filter(|v| !v.is_empty()) {
            let value = if value == "yes" { key } else { value };
            if !types.iter().any(|t| t == value) {
                types.push(value.into());
            }
        }
    }
    types
}

/// A feature's vicinity from its OpenStreetMap address tags: "Street 12, City" (the
/// house number after the street, as most of Europe writes it and OpenStreetMap's own
/// map shows it), or whichever parts are there.
fn address(properties: &Map<String, Value>) -> Option<String> {
    let tag = |key: &str| {
        properties
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let street = tag("addr:street").map(|street| match tag("addr:housenumber") {
        Some(number) => format!("{street} {number}"),
        None => street.to_owned(),
    });
    match (street, tag("addr:city")) {
        (Some(street), Some(city)) => Some(format!("{street}, {city}")),
        (street, city) => street.or(city.map(str::to_owned)),
    }
}

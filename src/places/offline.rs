//! `places offline [FILE]`: what is near a point, from local data, with no network.
//!
//! The data is either the GeoNames cities with a population of at least 1000, built into
//! the binary (feature `builtin-places`, from `data/geonames-cities1000.places`, which
//! `tools/build-places.py` writes and documents), or a user's own JSON file of places.
//! Either way it is held in a latitude-row index: the places are cut into rows 0.1° of
//! latitude high and sorted by longitude within each row, so a query binary-searches the
//! longitude span of the circle in each row it crosses, with two spans across the
//! antimeridian and the whole row when the circle holds a pole. Each candidate is then
//! tested exactly on 3-D unit vectors: the squared chord between two points is four times
//! the haversine of their central angle, so "great-circle distance ≤ radius" is the
//! chord test below, to the last bits, with no trigonometry per place.
//!
//! A user's file is JSON in one of two shapes: a legacy Nearby Search response
//! (`{"results": [place, ...], ...}`, other keys ignored), or a plain array of places. A
//! place is an object with a string `name`, a string `place_id` and numbers
//! `geometry.location.lat` (-90..=90) and `lng` (-180..=180); when given, `vicinity` must
//! be a string and `types` an array of strings. Each place is answered exactly as written
//! in the file, every key kept in its order.

use serde_json::{Map, Value};
use std::f64::consts::PI;
use std::path::Path;

/// Mean radius of the Earth in metres (IUGG R1 = (2a + b) / 3 of WGS 84): the sphere
/// whose great-circle distances stray least, on average, from the ellipsoid's.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Rows of the index, one per `ROW_DEG` of latitude. At 0.1° (11 km) a 50 km query
/// searches about ten rows and a row's box overshoots the circle by little; rows of 0.05°
/// and 0.2° measured the same within noise, as the search is a few microseconds either way.
const ROWS: usize = 1800;

/// Height of one index row in degrees of latitude.
const ROW_DEG: f64 = 180.0 / ROWS as f64;

/// Slack added around the search box, in degrees (about 1 cm), so that rounding in the
/// box's trigonometry can never drop a place that the exact chord test would keep.
const BOX_SLACK_DEG: f64 = 1e-7;

/// Largest user places file read, in bytes. The built-in 170,000 places written out in
/// the legacy shape take 58 MB indented as Google sends it (28 MB compact) and load in
/// about a second; parsed JSON takes several times the memory of its text.
const MAX_FILE_BYTES: u64 = 128 << 20;

/// `types` of every built-in place: they are all towns and cities, which Google tags so.
#[cfg(feature = "builtin-places")]
const BUILTIN_TYPES: [&str; 2] = ["locality", "political"];

/// The built-in data; its format is described in `tools/build-places.py`.
#[cfg(feature = "builtin-places")]
static BUILTIN_BLOB: &[u8] = include_bytes!("../../data/geonames-cities1000.places");

/// First bytes of a built-in data file: the format's name and version.
#[cfg(feature = "builtin-places")]
const BLOB_MAGIC: &[u8; 8] = b"HERDPLC1";

/// Largest inflated payload accepted, in bytes: the current data inflates to 3.7 MB, and
/// a corrupt length field must not make us allocate without bound.
#[cfg(feature = "builtin-places")]
const MAX_INFLATED: u32 = 64 << 20;

/// Fewest payload bytes one place can take (id 1, latitude 4, longitude 4, region 1,
/// name 1): bounds the place count a payload of a given size can claim.
#[cfg(feature = "builtin-places")]
const MIN_PLACE_BYTES: usize = 11;

/// GeoNames coordinates are fixed-point with five decimals (about 1 m).
#[cfg(feature = "builtin-places")]
const FIXED_PER_DEGREE: f64 = 1e5;

/// An index of places that answers "what is within R metres of here, nearest first".
pub struct Offline {
    index: Index,
    places: Places,
}

/// What a place says about itself, by slot; slots are in place-id order.
enum Places {
    /// The built-in GeoNames data, column by column.
    #[cfg(feature = "builtin-places")]
    GeoNames {
        /// GeoNames ids, ascending.
        ids: Vec<u32>,
        /// Latitude and longitude in degrees.
        coords: Vec<(f64, f64)>,
        /// All names, each followed by `\n`.
        names: String,
        /// End of each name in `names`.
        name_ends: Vec<u32>,
        /// Index into `vicinities` of each place.
        regions: Vec<u16>,
        /// The distinct vicinity strings.
        vicinities: Vec<String>,
    },
    /// A user's places, each the object as read.
    File(Vec<Value>),
}

impl Offline {
    /// The data set built into the binary, or `None` when the `builtin-places` feature is
    /// off (or the embedded file is corrupt, which its tests rule out). It decodes and
    /// indexes 170,000 places, in some tens of milliseconds: call it once and share it.
    pub fn builtin() -> Option<Offline> {
        #[cfg(feature = "builtin-places")]
        {
            parse_blob(BUILTIN_BLOB).ok()
        }
        #[cfg(not(feature = "builtin-places"))]
        {
            None
        }
    }

    /// Reads a user's own JSON file of places (shapes in the module doc). An error says
    /// what is wrong and where: `places.json:12: results[3]: missing "name"`.
    pub fn from_json_file(path: &Path) -> Result<Offline, String> {
        use std::io::Read;
        let name = path.display();
        let cannot_read = |e: std::io::Error| format!("{name}: cannot read: {e}");
        let mut text = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut text))
            .map_err(cannot_read)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(format!(
                "{name}: larger than the {MAX_FILE_BYTES} bytes allowed"
            ));
        }
        parse_places_json(&text).map_err(|e| format!("{name}:{e}"))
    }

    /// The places within `radius_m` metres of (`lat`, `lng`), nearest first (great-circle
    /// distance), at most `bound` of them, as a legacy Nearby Search response object
    /// (`html_attributions`, `results`, `status`). Equal distances go in place-id order.
    /// A latitude outside -90..=90 or a value that is not a number finds nothing.
    pub fn nearby(&self, lat: f64, lng: f64, radius_m: f64, bound: usize) -> Value {
        let mut found = Vec::new();
        self.index.within(lat, lng, radius_m, &mut found);
        nearest(&mut found, bound);
        let results: Vec<Value> = found.iter().map(|&(_, slot)| self.place(slot)).collect();
        let status = if results.is_empty() {
            "ZERO_RESULTS"
        } else {
            "OK"
        };
        object([
            ("html_attributions", Value::Array(Vec::new())),
            ("results", Value::Array(results)),
            ("status", status.into()),
        ])
    }

    /// The result object of the place in `slot`.
    fn place(&self, slot: u32) -> Value {
        let i = slot as usize;
        match &self.places {
            #[cfg(feature = "builtin-places")]
            Places::GeoNames {
                ids,
                coords,
                names,
                name_ends,
                regions,
                vicinities,
            } => {
                // Every slot the index holds is < the number of places, and the columns
                // were all checked to have that length; `get` keeps this panic-free anyway.
                let start = match i.checked_sub(1).and_then(|p| name_ends.get(p)) {
                    Some(&end) => end as usize + 1,
                    None => 0,
                };
                let end = name_ends.get(i).map_or(start, |&e| e as usize);
                let name = names.get(start..end).unwrap_or_default();
                let vicinity = regions
                    .get(i)
                    .and_then(|&r| vicinities.get(usize::from(r)))
                    .map_or("", String::as_str);
                let id = ids.get(i).copied().unwrap_or_default();
                let (lat, lng) = coords.get(i).copied().unwrap_or_default();
                let location = object([("lat", lat.into()), ("lng", lng.into())]);
                object([
                    ("geometry", object([("location", location)])),
                    ("name", name.into()),
                    ("place_id", format!("geonames:{id}").into()),
                    ("types", BUILTIN_TYPES.map(Value::from).to_vec().into()),
                    ("vicinity", vicinity.into()),
                ])
            }
            Places::File(places) => places.get(i).cloned().unwrap_or(Value::Null),
        }
    }
}

/// A JSON object of `entries` in their order, allocated once at its final size (building
/// the answer takes longer than finding the places).
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut map = Map::with_capacity(N);
    for (key, value) in entries {
        map.insert(key.to_owned(), value);
    }
    Value::Object(map)
}

/// Sorts `found` nearest first (ties by slot, which is place-id order) and cuts it to
/// `bound`, selecting before sorting so a crowded circle costs little.
fn nearest(found: &mut Vec<(f64, u32)>, bound: usize) {
    let order = |a: &(f64, u32), b: &(f64, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if found.len() > bound {
        found.select_nth_unstable_by(bound, order);
        found.truncate(bound);
    }
    found.sort_unstable_by(order);
}

/// A place in the index: its unit vector, its longitude for the row search, its slot.
#[derive(Clone, Copy)]
struct Point {
    xyz: [f64; 3],
    lng: f64,
    slot: u32,
}

/// The latitude-row index over all places.
struct Index {
    /// `rows[r]..rows[r + 1]` are the points of row `r`; `ROWS + 1` entries.
    rows: Vec<u32>,
    /// Points, row by row, each row sorted by longitude.
    points: Vec<Point>,
}

impl Index {
    /// Indexes places given as (latitude, longitude) in degrees, by slot. Callers have
    /// checked the ranges and that there are fewer than 2^32 of them.
    fn build(coords: &[(f64, f64)]) -> Index {
        let mut keyed: Vec<(usize, Point)> = coords
            .iter()
            .zip(0u32..)
            .map(|(&(lat, lng), slot)| {
                let xyz = unit_vector(lat, lng);
                (row_of(lat), Point { xyz, lng, slot })
            })
            .collect();
        keyed.sort_unstable_by(|a, b| {
            (a.0.cmp(&b.0))
                .then(a.1.lng.total_cmp(&b.1.lng))
                .then(a.1.slot.cmp(&b.1.slot))
        });
        let mut rows = vec![0u32; ROWS + 1];
        for (row, _) in &keyed {
            rows[row + 1] += 1; // row_of returns < ROWS
        }
        for r in 0..ROWS {
            rows[r + 1] += rows[r];
        }
        let points = keyed.into_iter().map(|(_, p)| p).collect();
        Index { rows, points }
    }

    /// Appends to `out` (squared chord, slot) for every place within `radius_m` of
    /// (`lat`, `lng`), in no particular order.
    fn within(&self, lat: f64, lng: f64, radius_m: f64, out: &mut Vec<(f64, u32)>) {
        let valid = lat.is_finite() && lng.is_finite() && (-90.0..=90.0).contains(&lat);
        if !valid || radius_m.is_nan() || radius_m < 0.0 {
            return;
        }
        let q = unit_vector(lat, lng);
        let angle = radius_m / EARTH_RADIUS_M;
        let limit = chord2_limit(angle);
        let dlat = angle.min(PI).to_degrees() + BOX_SLACK_DEG;
        let (lat_lo, lat_hi) = (lat - dlat, lat + dlat);
        // Beyond this many degrees of longitude from the centre no point of the circle
        // lies, unless the circle holds a pole (Matuschek, "Finding points within a
        // distance of a latitude/longitude using bounding coordinates").
        let half_span = if lat_lo <= -90.0 || lat_hi >= 90.0 || angle >= PI / 2.0 {
            None
        } else {
            let s = angle.sin() / lat.to_radians().cos();
            (s < 1.0).then(|| s.asin().to_degrees() + BOX_SLACK_DEG)
        };
        let spans = lng_spans(lng, half_span);
        for r in row_of(lat_lo)..=row_of(lat_hi) {
            // `rows` has ROWS + 1 ascending entries ending at points.len(), by `build`.
            let row = &self.points[self.rows[r] as usize..self.rows[r + 1] as usize];
            for &(lo, hi) in spans.iter().flatten() {
                let start = row.partition_point(|p| p.lng < lo);
                let end = row.partition_point(|p| p.lng <= hi);
                for p in row.get(start..end).unwrap_or_default() {
                    let c2 = chord2(&p.xyz, &q);
                    if c2 <= limit {
                        out.push((c2, p.slot));
                    }
                }
            }
        }
    }
}

/// The longitude spans (at most two) within `half_span` degrees of `lng`, wrapped into
/// -180..=180; `None` for `half_span` means every longitude.
fn lng_spans(lng: f64, half_span: Option<f64>) -> [Option<(f64, f64)>; 2] {
    let Some(half) = half_span else {
        return [Some((f64::NEG_INFINITY, f64::INFINITY)), None];
    };
    let lng = if (-180.0..=180.0).contains(&lng) {
        lng
    } else {
        (lng + 180.0).rem_euclid(360.0) - 180.0
    };
    let (lo, hi) = (lng - half, lng + half);
    // half < 90° + slack, so at most one end crosses the antimeridian.
    if lo < -180.0 {
        [Some((-180.0, hi)), Some((lo + 360.0, 180.0))]
    } else if hi > 180.0 {
        [Some((lo, 180.0)), Some((-180.0, hi - 360.0))]
    } else {
        [Some((lo, hi)), None]
    }
}

/// The index row holding latitude `lat` (degrees), clamped into 0..ROWS.
fn row_of(lat: f64) -> usize {
    let r = ((lat + 90.0) / ROW_DEG).floor();
    if r <= 0.0 {
        0
    } else if r >= (ROWS - 1) as f64 {
        ROWS - 1
    } else {
        r as usize
    }
}

/// The point on the unit sphere at (`lat`, `lng`) degrees.
fn unit_vector(lat: f64, lng: f64) -> [f64; 3] {
    let (sin_lat, cos_lat) = lat.to_radians().sin_cos();
    let (sin_lng, cos_lng) = lng.to_radians().sin_cos();
    [cos_lat * cos_lng, cos_lat * sin_lng, sin_lat]
}

/// Squared chord between two unit vectors: 4·hav(θ) for central angle θ, accurate at
/// every distance (the differences are taken before squaring).
fn chord2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let (dx, dy, dz) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    dx * dx + dy * dy + dz * dz
}

/// Largest squared chord within a central angle of `angle` radians.
fn chord2_limit(angle: f64) -> f64 {
    if angle >= PI {
        f64::INFINITY
    } else {
        let chord = 2.0 * (angle / 2.0).sin();
        chord * chord
    }
}

/// Great-circle distance in metres for a squared chord (haversine: θ = 2·asin(c / 2)).
#[cfg(test)]
fn distance_m(chord2: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * (chord2.sqrt() / 2.0).min(1.0).asin()
}

/// Parses a user's places file; the error starts with `LINE: ` (or `LINE:COLUMN: `) and
/// the caller puts the file name before it.
fn parse_places_json(text: &[u8]) -> Result<Offline, String> {
    let doc: Value = serde_json::from_slice(text).map_err(|e| {
        let message = e.to_string();
        // serde_json ends its messages with " at line L column C", which we lead with.
        let what = message.split(" at line ").next().unwrap_or(&message);
        format!("{}:{}: {what}", e.line(), e.column())
    })?;
    let (list, label) = match doc {
        Value::Array(list) => (list, ""),
        Value::Object(mut map) => match map.remove("results") {
            Some(Value::Array(list)) => (list, "results"),
            _ => return Err("1: an object of places needs a \"results\" array".into()),
        },
        _ => return Err("1: expected an array of places or an object with \"results\"".into()),
    };
    let mut places = Vec::with_capacity(list.len());
    for (i, place) in list.into_iter().enumerate() {
        match check_place(&place) {
            Ok((id, lat, lng)) => places.push((id, lat, lng, place)),
            Err(what) => {
                let lines = element_lines(text, !label.is_empty());
                let line = lines.get(i).copied().unwrap_or(1);
                return Err(format!("{line}: {label}[{i}]: {what}"));
            }
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

/// Checks one place of a user file, returning its id and coordinates.
fn check_place(place: &Value) -> Result<(String, f64, f64), String> {
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
            Some(v) => match v.as_f64() {
                Some(x) if (-limit..=limit).contains(&x) => Ok(x),
                Some(x) => Err(format!("\"{path}\" {x} is out of range -{limit}..={limit}")),
                None => Err(format!("\"{path}\" is not a number")),
            },
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
    Ok((id, lat, lng))
}

/// The 1-based line on which each place of `text` (valid JSON) starts: the elements of
/// the top-level array, or of the object's last `"results"` key when `in_results`. An
/// empty answer (the key written with escapes, say) makes errors point at line 1.
fn element_lines(text: &[u8], in_results: bool) -> Vec<usize> {
    let mut scan = Scanner { text, pos: 0 };
    let starts = if in_results {
        scan.results_elements()
    } else {
        scan.array_elements()
    };
    let Some(starts) = starts else {
        return Vec::new();
    };
    let mut lines = Vec::with_capacity(starts.len());
    let (mut line, mut upto) = (1, 0);
    for start in starts {
        line += text
            .get(upto..start)
            .map_or(0, |s| s.iter().filter(|&&b| b == b'\n').count());
        upto = start;
        lines.push(line);
    }
    lines
}

/// Just enough of a JSON reader to find where values start, for error lines. It runs
/// only on text serde_json accepted, so its recursion is as shallow as serde_json's
/// (128 levels), and it gives up (`None`) rather than guess.
struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.text.get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// Skips a string, returning its raw text between the quotes.
    fn string(&mut self) -> Option<&[u8]> {
        self.expect(b'"')?;
        let start = self.pos;
        loop {
            match *self.text.get(self.pos)? {
                b'"' => break,
                b'\\' => self.pos += 2,
                _ => self.pos += 1,
            }
        }
        self.pos += 1;
        self.text.get(start..self.pos - 1)
    }

    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'[' => self.array_elements().map(drop),
            b'{' => self.members(|scan, _| scan.value()),
            _ => {
                while self
                    .text
                    .get(self.pos)
                    .is_some_and(|b| !b",]} \t\r\n".contains(b))
                {
                    self.pos += 1;
                }
                Some(())
            }
        }
    }

    /// Skips an array, returning where each element starts.
    fn array_elements(&mut self) -> Option<Vec<usize>> {
        self.expect(b'[')?;
        let mut starts = Vec::new();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(starts);
        }
        loop {
            self.peek()?;
            starts.push(self.pos);
            self.value()?;
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(starts);
                }
                _ => return None,
            }
        }
    }

    /// Skips an object, calling `member` with each key to read the value after `:`.
    fn members(&mut self, mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        loop {
            let key = self.string()?.to_vec();
            self.expect(b':')?;
            member(self, &key)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Element starts of the last `"results"` array of the top-level object.
    fn results_elements(&mut self) -> Option<Vec<usize>> {
        let mut found = None;
        self.members(|scan, key| {
            if key == b"results" && scan.peek()? == b'[' {
                found = Some(scan.array_elements()?);
                Some(())
            } else {
                scan.value()
            }
        })?;
        found
    }
}

/// Decodes and indexes a built-in data file (format in `tools/build-places.py`). Any
/// inconsistency is an error, never a panic.
#[cfg(feature = "builtin-places")]
fn parse_blob(blob: &[u8]) -> Result<Offline, String> {
    let (magic, rest) = blob.split_at_checked(8).ok_or("file is too short")?;
    if magic != BLOB_MAGIC {
        return Err("not a HERDPLC1 file".into());
    }
    let (len, compressed) = rest.split_at_checked(4).ok_or("file is too short")?;
    let len = u32::from_le_bytes(len.try_into().map_err(|_| "file is too short")?);
    if len > MAX_INFLATED {
        return Err(format!("payload of {len} bytes is over {MAX_INFLATED}"));
    }
    let payload = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(compressed, len as usize)
        .map_err(|e| format!("cannot inflate: {e:?}"))?;
    if payload.len() != len as usize {
        return Err("payload length does not match".into());
    }
    let mut r = Reader {
        buf: &payload,
        pos: 0,
    };
    let n = r.u32()? as usize;
    let m = r.u32()? as usize;
    if n == 0 || n > payload.len() / MIN_PLACE_BYTES {
        return Err(format!("place count {n} does not fit the payload"));
    }
    if m == 0 || m > usize::from(u16::MAX) + 1 {
        return Err(format!("vicinity count {m} is out of range"));
    }
    let vicinities = (0..m)
        .map(|_| r.line().map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ids = Vec::with_capacity(n);
    let mut id = 0u32;
    for _ in 0..n {
        let step = r.varint()?;
        id = id
            .checked_add(step)
            .filter(|_| step > 0)
            .ok_or("ids are not increasing")?;
        ids.push(id);
    }
    let lats = r.planes(n, 90)?;
    let lngs = r.planes(n, 180)?;
    let mut regions = Vec::with_capacity(n);
    for _ in 0..n {
        let region = r.varint()?;
        match u16::try_from(region) {
            Ok(region) if usize::from(region) < m => regions.push(region),
            _ => return Err(format!("region {region} is out of range")),
        }
    }
    let names = std::str::from_utf8(r.rest()).map_err(|_| "names are not UTF-8")?;
    let mut name_ends = Vec::with_capacity(n);
    for (end, _) in names.match_indices('\n') {
        // The payload is under MAX_INFLATED (< 2^32) bytes.
        name_ends.push(end as u32);
    }
    if name_ends.len() != n || !names.ends_with('\n') {
        return Err("names do not match the place count".into());
    }
    let coords: Vec<(f64, f64)> = lats
        .into_iter()
        .zip(lngs)
        .map(|(lat, lng)| {
            (
                f64::from(lat) / FIXED_PER_DEGREE,
                f64::from(lng) / FIXED_PER_DEGREE,
            )
        })
        .collect();
    Ok(Offline {
        index: Index::build(&coords),
        places: Places::GeoNames {
            ids,
            coords,
            names: names.to_owned(),
            name_ends,
            regions,
            vicinities,
        },
    })
}

/// A cursor over an inflated payload whose reads fail instead of running off the end.
#[cfg(feature = "builtin-places")]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

#[cfg(feature = "builtin-places")]
impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(count).filter(|&e| e <= self.buf.len());
        let bytes = end.and_then(|end| self.buf.get(self.pos..end));
        let bytes = bytes.ok_or("payload is truncated")?;
        self.pos += count;
        Ok(bytes)
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(
            bytes.try_into().map_err(|_| "payload is truncated")?,
        ))
    }

    /// An unsigned LEB128 number of at most 32 bits.
    fn varint(&mut self) -> Result<u32, String> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let [byte] = self.take(1)? else {
                return Err("payload is truncated".into());
            };
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| "number is out of range".into());
            }
        }
        Err("number is too long".into())
    }

    /// A `\n`-ended UTF-8 line.
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("payload is truncated")?;
        let line = self.take(len + 1)?;
        std::str::from_utf8(line.get(..len).unwrap_or_default())
            .map_err(|_| "text is not UTF-8".into())
    }

    /// `count` fixed-point coordinates stored as four byte planes of zigzag deltas, each
    /// within ±`limit` degrees.
    fn planes(&mut self, count: usize, limit: i64) -> Result<Vec<i32>, String> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.take(count.checked_mul(4).ok_or("place count is too large")?)?;
        let mut planes = bytes.chunks_exact(count);
        let mut plane = || planes.next().unwrap_or_default().iter();
        let (b0, b1, b2, b3) = (plane(), plane(), plane(), plane());
        let limit = limit * FIXED_PER_DEGREE as i64;
        let mut value = 0i64;
        let mut out = Vec::with_capacity(count);
        for (((&a, &b), &c), &d) in b0.zip(b1).zip(b2).zip(b3) {
            let zigzag = u32::from_le_bytes([a, b, c, d]);
            value += i64::from(zigzag >> 1) ^ -i64::from(zigzag & 1);
            match i32::try_from(value) {
                Ok(v) if value.abs() <= limit => out.push(v),
                _ => return Err("coordinate is out of range".into()),
            }
        }
        if out.len() != count {
            return Err("coordinates do not match the place count".into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A small deterministic generator (splitmix64), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in [lo, hi).
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The answer by scanning every place: the slots, nearest first, cut to `bound`.
    fn brute_force(
        vectors: &[[f64; 3]],
        lat: f64,
        lng: f64,
        radius_m: f64,
        bound: usize,
    ) -> Vec<u32> {
        let q = unit_vector(lat, lng);
        let limit = chord2_limit(radius_m / EARTH_RADIUS_M);
        let mut found: Vec<(f64, u32)> = (0u32..)
            .zip(vectors)
            .map(|(slot, v)| (chord2(v, &q), slot))
            .filter(|&(c2, _)| c2 <= limit)
            .collect();
        found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        found.truncate(bound);
        found.into_iter().map(|(_, slot)| slot).collect()
    }

    /// Every place's coordinates by slot, as its answer gives them.
    fn coords(data: &Offline) -> Vec<(f64, f64)> {
        (0..data.index.points.len() as u32)
            .map(|slot| {
                let place = data.place(slot);
                let location = &place["geometry"]["location"];
                let degrees = |key: &str| location[key].as_f64().expect("a number");
                (degrees("lat"), degrees("lng"))
            })
            .collect()
    }

    fn unit_vectors(coords: &[(f64, f64)]) -> Vec<[f64; 3]> {
        coords
            .iter()
            .map(|&(lat, lng)| unit_vector(lat, lng))
            .collect()
    }

    fn indexed(data: &Offline, lat: f64, lng: f64, radius_m: f64, bound: usize) -> Vec<u32> {
        let mut found = Vec::new();
        data.index.within(lat, lng, radius_m, &mut found);
        nearest(&mut found, bound);
        found.into_iter().map(|(_, slot)| slot).collect()
    }

    fn place_ids(answer: &Value) -> Vec<String> {
        answer["results"]
            .as_array()
            .expect("results is an array")
            .iter()
            .map(|p| p["place_id"].as_str().expect("place_id").to_string())
            .collect()
    }

    fn names(answer: &Value) -> Vec<&str> {
        answer["results"]
            .as_array()
            .expect("results is an array")
            .iter()
            .map(|p| p["name"].as_str().expect("name"))
            .collect()
    }

    /// Compares index and brute force on `count` random queries near `centre()`.
    fn check_against_brute_force(
        data: &Offline,
        vectors: &[[f64; 3]],
        rng: &mut Rng,
        count: usize,
        mut centre: impl FnMut(&mut Rng) -> (f64, f64),
    ) -> usize {
        let mut nonempty = 0;
        for _ in 0..count {
            let (lat, lng) = centre(rng);
            let radius_m = match rng.below(4) {
                0 => rng.range(1.0, 1000.0),
                _ => rng.range(1.0, 50_000.0),
            };
            let bound = 1 + rng.below(20);
            let expected = brute_force(vectors, lat, lng, radius_m, bound);
            let query = format!("query {lat} {lng} {radius_m} m, bound {bound}");
            assert_eq!(
                indexed(data, lat, lng, radius_m, bound),
                expected,
                "{query}"
            );
            let ids: Vec<String> = expected
                .iter()
                .map(|&slot| {
                    data.place(slot)["place_id"]
                        .as_str()
                        .expect("id")
                        .to_string()
                })
                .collect();
            assert_eq!(
                place_ids(&data.nearby(lat, lng, radius_m, bound)),
                ids,
                "{query}"
            );
            nonempty += usize::from(!expected.is_empty());
        }
        nonempty
    }

    #[cfg(feature = "builtin-places")]
    fn builtin() -> Offline {
        Offline::builtin().expect("the built-in data decodes")
    }

    #[cfg(feature = "builtin-places")]
    #[test]
    fn builtin_matches_brute_force_on_random_points() {
        let data = builtin();
        let mut rng = Rng(1);
        let coords = coords(&data);
        let vectors = unit_vectors(&coords);
        // Near real places, so most answers are not empty.
        let near_place = |rng: &mut Rng| {
            let (lat, lng) = coords[rng.below(coords.len())];
            (
                (lat + rng.range(-0.3, 0.3)).clamp(-90.0, 90.0),
                lng + rng.range(-0.3, 0.3),
            )
        };
        let nonempty = check_against_brute_force(&data, &vectors, &mut rng, 300, near_place);
        assert!(nonempty > 150, "only {nonempty} answers had places");
        // Anywhere on the globe, including the antimeridian and the poles.
        let anywhere = |rng: &mut Rng| {
            (
                rng.range(-1.0, 1.0).asin().to_degrees(),
                rng.range(-180.0, 180.0),
            )
        };
        check_against_brute_force(&data, &vectors, &mut rng, 100, anywhere);
        let edges = |rng: &mut Rng| match rng.below(4) {
            0 => (rng.range(-60.0, 60.0), 179.9),
            1 => (rng.range(-60.0, 60.0), -179.9),
            2 => (89.5, rng.range(-180.0, 180.0)),
            _ => (-89.5, rng.range(-180.0, 180.0)),
        };
        check_against_brute_force(&data, &vectors, &mut rng, 100, edges);
        // Fiji straddles the antimeridian: places on both sides of it.
        let fiji = |rng: &mut Rng| (rng.range(-17.5, -16.0), rng.range(179.5, 180.5));
        assert!(check_against_brute_force(&data, &vectors, &mut rng, 50, fiji) > 0);
    }

    /// Places crowded at the poles and on both sides of the antimeridian, where the real
    /// data has few, in a user file.
    fn synthetic(rng: &mut Rng, count: usize) -> Offline {
        let mut places = Vec::with_capacity(count);
        for i in 0..count {
            let (lat, lng) = match i % 5 {
                0 => (rng.range(88.0, 90.0), rng.range(-180.0, 180.0)),
                1 => (rng.range(-90.0, -88.0), rng.range(-180.0, 180.0)),
                2 => (rng.range(-80.0, 80.0), rng.range(179.0, 180.0)),
                3 => (rng.range(-80.0, 80.0), rng.range(-180.0, -179.0)),
                _ => [
                    (90.0, 0.0),
                    (-90.0, 45.0),
                    (10.0, 180.0),
                    (10.0, -180.0),
                    (0.0, 0.0),
                ][i % 25 / 5],
            };
            places.push(json!({
                "name": format!("p{i}"),
                "place_id": format!("id{i:06}"),
                "geometry": {"location": {"lat": lat, "lng": lng}},
            }));
        }
        let text = serde_json::to_vec(&json!({"results": places})).expect("serializes");
        parse_places_json(&text).expect("synthetic places parse")
    }

    #[test]
    fn poles_and_antimeridian_match_brute_force() {
        let mut rng = Rng(7);
        let data = synthetic(&mut rng, 20_000);
        let vectors = unit_vectors(&coords(&data));
        let edges = |rng: &mut Rng| match rng.below(8) {
            0 => (rng.range(-80.0, 80.0), 179.9),
            1 => (rng.range(-80.0, 80.0), -179.9),
            2 => (
                rng.range(-80.0, 80.0),
                if rng.below(2) == 0 { 180.0 } else { -180.0 },
            ),
            3 => (89.5, rng.range(-180.0, 180.0)),
            4 => (-89.5, rng.range(-180.0, 180.0)),
            5 => (
                if rng.below(2) == 0 { 90.0 } else { -90.0 },
                rng.range(-180.0, 180.0),
            ),
            6 => (rng.range(88.0, 90.0), rng.range(-180.0, 180.0)),
            _ => (rng.range(-90.0, -88.0), rng.range(-180.0, 180.0)),
        };
        let nonempty = check_against_brute_force(&data, &vectors, &mut rng, 400, edges);
        assert!(nonempty > 200, "only {nonempty} answers had places");
        // Radii from nothing to the whole Earth, and longitudes outside ±180.
        for &(lat, lng) in &[
            (0.0, 0.0),
            (10.0, 180.0),
            (89.9, 30.0),
            (-45.0, -179.99),
            (10.0, 540.0),
        ] {
            for radius_m in [0.0, 1.0, 1e5, 1e6, 5e6, 1.5e7, 2.1e7, 1e9, f64::INFINITY] {
                assert_eq!(
                    indexed(&data, lat, lng, radius_m, 20),
                    brute_force(&vectors, lat, lng, radius_m, 20),
                    "query {lat} {lng} {radius_m} m"
                );
            }
        }
        let everything = indexed(&data, 0.0, 0.0, f64::INFINITY, usize::MAX);
        assert_eq!(everything.len(), 20_000);
    }

    #[test]
    fn across_the_antimeridian_and_over_the_pole() {
        let text = br#"[
            {"name": "East", "place_id": "e", "geometry": {"location": {"lat": 0, "lng": 179.95}}},
            {"name": "West", "place_id": "w", "geometry": {"location": {"lat": 0, "lng": -179.9}}},
            {"name": "Pole", "place_id": "p", "geometry": {"location": {"lat": 90, "lng": 0}}},
            {"name": "Far side", "place_id": "f", "geometry": {"location": {"lat": 89.9, "lng": -90}}}
        ]"#;
        let data = parse_places_json(text).expect("parses");
        // 0.1° of longitude on the equator is 11.1 km.
        assert_eq!(
            names(&data.nearby(0.0, 180.0, 12_000.0, 5)),
            ["East", "West"]
        );
        assert_eq!(
            names(&data.nearby(0.0, -179.9, 20_000.0, 5)),
            ["West", "East"]
        );
        assert_eq!(names(&data.nearby(0.0, 179.85, 12_000.0, 5)), ["East"]);
        assert_eq!(names(&data.nearby(0.0, -180.0, 6_000.0, 5)), ["East"]);
        // From 89.9°N, 90°E: the pole is 11 km away, the far side 22 km.
        assert_eq!(
            names(&data.nearby(89.9, 90.0, 30_000.0, 5)),
            ["Pole", "Far side"]
        );
        assert_eq!(
            data.nearby(45.0, 0.0, 50_000.0, 5)["status"],
            "ZERO_RESULTS"
        );
    }

    #[test]
    fn distances_are_haversine() {
        // UCLA to Westwood (GeoNames 5408522), by the haversine formula in f64.
        let (a, b): ((f64, f64), (f64, f64)) = ((34.068930, -118.445127), (34.05612, -118.43063));
        let c2 = chord2(&unit_vector(a.0, a.1), &unit_vector(b.0, b.1));
        let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
        let h = ((p2 - p1) / 2.0).sin().powi(2)
            + p1.cos() * p2.cos() * ((b.1 - a.1).to_radians() / 2.0).sin().powi(2);
        let haversine = 2.0 * EARTH_RADIUS_M * h.sqrt().asin();
        assert!(
            (distance_m(c2) - haversine).abs() < 1e-6,
            "{} vs {haversine}",
            distance_m(c2)
        );
        // The same formula in Python's float arithmetic.
        assert!((haversine - 1952.508003970275).abs() < 1e-6, "{haversine}");
        // A quarter of the way round, and halfway.
        let quarter = chord2(&unit_vector(0.0, 0.0), &unit_vector(0.0, 90.0));
        assert!((distance_m(quarter) - PI / 2.0 * EARTH_RADIUS_M).abs() < 1e-6);
        let half = chord2(&unit_vector(90.0, 0.0), &unit_vector(-90.0, 0.0));
        assert!((distance_m(half) - PI * EARTH_RADIUS_M).abs() < 1e-3);
    }

    #[cfg(feature = "builtin-places")]
    #[test]
    fn near_ucla_are_westwood_brentwood_and_beverly_hills() {
        let data = builtin();
        let answer = data.nearby(34.068930, -118.445127, 10_000.0, 20);
        let expected = [
            "Bel Air",
            "Westwood",
            "Century City",
            "Brentwood",
            "Sawtelle",
            "Beverly Hills",
            "Culver City",
            "Santa Monica",
            "Pacific Palisades",
            "West Hollywood",
            "Mid-City",
            "Venice",
            "Sherman Oaks",
            "Marina del Rey",
            "Studio City",
        ];
        assert_eq!(names(&answer), expected);
        assert_eq!(answer["status"], "OK");
        let westwood = &answer["results"][1];
        assert_eq!(
            serde_json::to_string(westwood).expect("serializes"),
            r#"{"geometry":{"location":{"lat":34.05612,"lng":-118.43063}},"name":"Westwood","place_id":"geonames:5408522","types":["locality","political"],"vicinity":"California, United States"}"#
        );
        let keys: Vec<&String> = answer.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["html_attributions", "results", "status"]);
        // Cut to the bound, nearest first.
        assert_eq!(
            names(&data.nearby(34.068930, -118.445127, 10_000.0, 3)),
            expected[..3]
        );
        assert_eq!(
            names(&data.nearby(34.068930, -118.445127, 10_000.0, 1)),
            ["Bel Air"]
        );
        // Outside the US the vicinity is the country.
        let paris = data.nearby(48.8566, 2.3522, 3_000.0, 20);
        assert!(names(&paris).contains(&"Paris"), "{:?}", names(&paris));
        assert_eq!(paris["results"][0]["name"], "Paris 04 Hôtel-de-Ville");
        assert_eq!(paris["results"][0]["vicinity"], "France");
        // The open ocean.
        let ocean = data.nearby(-40.0, -130.0, 50_000.0, 5);
        assert_eq!(
            serde_json::to_string(&ocean).expect("serializes"),
            r#"{"html_attributions":[],"results":[],"status":"ZERO_RESULTS"}"#
        );
    }

    #[test]
    fn truncates_to_the_bound_with_ties_in_place_id_order() {
        let place = |id: &str, lng: f64| json!({"name": id, "place_id": id, "geometry": {"location": {"lat": 0.0, "lng": lng}}});
        // Equal distances either side of the centre: ties go by place id.
        let list = json!([
            place("d", 0.01),
            place("b", -0.01),
            place("c", 0.02),
            place("a", 0.01)
        ]);
        let data = parse_places_json(list.to_string().as_bytes()).expect("parses");
        for (bound, expected) in [
            (1, vec!["a"]),
            (2, vec!["a", "b"]),
            (3, vec!["a", "b", "d"]),
            (4, vec!["a", "b", "d", "c"]),
            (20, vec!["a", "b", "d", "c"]),
        ] {
            assert_eq!(place_ids(&data.nearby(0.0, 0.0, 5_000.0, bound)), expected);
        }
        assert_eq!(data.nearby(0.0, 0.0, 5_000.0, 0)["status"], "ZERO_RESULTS");
        // A user's place comes back exactly as written, extra keys and their order kept.
        let text = br#"{"status": "OK", "results": [{"place_id": "x", "rating": 4.5,
            "name": "Cafe", "geometry": {"location": {"lng": 1, "lat": 2}}, "types": ["cafe"]}]}"#;
        let data = parse_places_json(text).expect("parses");
        assert_eq!(
            serde_json::to_string(&data.nearby(2.0, 1.0, 1.0, 5)["results"]).expect("serializes"),
            r#"[{"place_id":"x","rating":4.5,"name":"Cafe","geometry":{"location":{"lng":1,"lat":2}},"types":["cafe"]}]"#
        );
    }

    #[test]
    fn bad_queries_find_nothing() {
        let data = parse_places_json(
            br#"[{"name": "A", "place_id": "a", "geometry": {"location": {"lat": 0, "lng": 0}}}]"#,
        )
        .expect("parses");
        assert_eq!(data.nearby(0.0, 0.0, 0.0, 5)["status"], "OK");
        for (lat, lng, radius_m) in [
            (f64::NAN, 0.0, 1e3),
            (0.0, f64::INFINITY, 1e3),
            (0.0, 0.0, -1.0),
            (0.0, 0.0, f64::NAN),
            (90.5, 0.0, 1e9),
        ] {
            assert_eq!(data.nearby(lat, lng, radius_m, 5)["status"], "ZERO_RESULTS");
        }
    }

    #[test]
    fn malformed_user_files_say_where() {
        let cases: &[(&str, &str)] = &[
            ("[\n  {\"name\": \"A\",\n  \"place_id\" \"a\"}\n]", "3:14: expected `:`"),
            ("", "1:0: EOF while parsing a value"),
            ("\n\n[1, 2", "3:5: EOF while parsing a list"),
            ("42", "1: expected an array of places or an object with \"results\""),
            ("{\"status\": \"OK\"}", "1: an object of places needs a \"results\" array"),
            (
                "{\"results\": [\n {\"name\": \"A\", \"place_id\": \"a\",\n  \"geometry\": {\"location\": {\"lat\": 1, \"lng\": 2}}},\n {\"name\": \"B\", \"place_id\": \"b\",\n  \"geometry\": {\"location\": {\"lng\": 2}}}\n]}",
                "4: results[1]: missing \"geometry.location.lat\"",
            ),
            (
                "[\n\n  {\"name\": 5, \"place_id\": \"a\"}]",
                "3: [0]: \"name\" is not a string",
            ),
            ("[{\"name\": \"x\"}]", "1: [0]: missing \"place_id\""),
            ("[\"just a string\"]", "1: [0]: a place must be an object"),
            (
                "[{\"name\": \"x\", \"place_id\": \"a\", \"geometry\": {\"location\": {\"lat\": \"1\", \"lng\": 2}}}]",
                "1: [0]: \"geometry.location.lat\" is not a number",
            ),
            (
                "[{\"name\": \"x\", \"place_id\": \"a\", \"geometry\": {\"location\": {\"lat\": 1, \"lng\": 200}}}]",
                "1: [0]: \"geometry.location.lng\" 200 is out of range -180..=180",
            ),
            (
                "[{}, {\"name\": \"x\", \"place_id\": \"a\", \"geometry\": {\"location\": {\"lat\": 1, \"lng\": 2}}, \"types\": \"bar\"}]",
                "1: [0]: missing \"name\"",
            ),
            (
                "[\n{\"name\": \"x\", \"place_id\": \"a\", \"geometry\": {\"location\": {\"lat\": 1, \"lng\": 2}}},\n{\"name\": \"y\", \"place_id\": \"b\", \"geometry\": {\"location\": {\"lat\": 1, \"lng\": 2}}, \"types\": [\"a\", 1]}]",
                "3: [1]: \"types\" is not an array of strings",
            ),
            (
                "{\"results\": [], \"x\": {\"results\": [1]},\n\"results\": [\n\"a\"]}",
                "3: results[0]: a place must be an object",
            ),
        ];
        for (text, expected) in cases {
            match parse_places_json(text.as_bytes()) {
                Ok(_) => panic!("accepted {text:?}"),
                Err(e) => assert_eq!(&e, expected, "for {text:?}"),
            }
        }
        // Invalid UTF-8 is an error with a line too.
        let err = parse_places_json(b"[\"\xff\"]").err().expect("rejected");
        assert!(err.starts_with("1:"), "{err}");
    }

    #[test]
    fn user_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("herd-offline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("places.json");
        std::fs::write(&path, "[\n{\"name\": \"x\"}\n]").expect("write");
        let err = Offline::from_json_file(&path).err().expect("rejected");
        assert_eq!(
            err,
            format!("{}:2: [0]: missing \"place_id\"", path.display())
        );
        std::fs::write(
            &path,
            r#"[{"name": "x", "place_id": "a", "geometry": {"location": {"lat": 1, "lng": 2}}}]"#,
        )
        .expect("write");
        let data = Offline::from_json_file(&path).expect("good file");
        assert_eq!(names(&data.nearby(1.0, 2.0, 10.0, 5)), ["x"]);
        let missing = dir.join("missing.json");
        let err = Offline::from_json_file(&missing).err().expect("rejected");
        assert!(
            err.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    /// Packs a payload into a data file as tools/build-places.py does.
    #[cfg(feature = "builtin-places")]
    fn pack(payload: &[u8]) -> Vec<u8> {
        let mut blob = BLOB_MAGIC.to_vec();
        blob.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        blob.extend_from_slice(&miniz_oxide::deflate::compress_to_vec_zlib(payload, 6));
        blob
    }

    /// A three-place payload written by hand from the format's description.
    #[cfg(feature = "builtin-places")]
    fn small_payload() -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&3u32.to_le_bytes());
        p.extend_from_slice(&2u32.to_le_bytes());
        p.extend_from_slice(b"Gamma\nAlpha, Beta\n");
        p.extend_from_slice(&[5, 1, 0x80, 0x01]); // ids 5, 6, 134
        let zigzag = |d: i64| ((d << 1) ^ (d >> 63)) as u32;
        for fixed in [
            [100_000i64, 100_001, -200_000],
            [-17_999_000, 18_000_000, 0],
        ] {
            let deltas = [fixed[0], fixed[1] - fixed[0], fixed[2] - fixed[1]];
            for k in 0..4 {
                p.extend(deltas.iter().map(|&d| (zigzag(d) >> (8 * k)) as u8));
            }
        }
        p.extend_from_slice(&[1, 0, 1]);
        p.extend_from_slice("Ä\nB\nC\n".as_bytes());
        p
    }

    #[cfg(feature = "builtin-places")]
    #[test]
    fn data_file_format_decodes_as_documented() {
        let data = parse_blob(&pack(&small_payload())).expect("decodes");
        assert_eq!(
            coords(&data),
            [(1.0, -179.99), (1.00001, 180.0), (-2.0, 0.0)]
        );
        let answer = data.nearby(1.0, 180.0, 2_000.0, 5);
        assert_eq!(
            serde_json::to_string(&answer).expect("serializes"),
            concat!(
                r#"{"html_attributions":[],"results":["#,
                r#"{"geometry":{"location":{"lat":1.00001,"lng":180.0}},"name":"B","place_id":"geonames:6","types":["locality","political"],"vicinity":"Gamma"},"#,
                r#"{"geometry":{"location":{"lat":1.0,"lng":-179.99}},"name":"Ä","place_id":"geonames:5","types":["locality","political"],"vicinity":"Alpha, Beta"}"#,
                r#"],"status":"OK"}"#
            )
        );
        assert_eq!(names(&data.nearby(-2.0, 0.0, 1.0, 5)), ["C"]);
    }

    #[cfg(feature = "builtin-places")]
    #[test]
    fn corrupt_data_files_are_errors_not_panics() {
        let mut rng = Rng(3);
        let good = BUILTIN_BLOB;
        for len in [0, 4, 8, 11, 12, 13, 100, good.len() / 2, good.len() - 1] {
            assert!(parse_blob(&good[..len]).is_err(), "cut to {len}");
        }
        for _ in 0..5 {
            let mut blob = good.to_vec();
            let at = 12 + rng.below(blob.len() - 12);
            blob[at] ^= 1 << rng.below(8);
            assert!(parse_blob(&blob).is_err(), "bit flipped at {at}");
        }
        let mut huge = good.to_vec();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_blob(&huge).is_err());
        for _ in 0..200 {
            let junk: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            assert!(parse_blob(&junk).is_err());
            let mut blob = BLOB_MAGIC.to_vec();
            blob.extend_from_slice(&junk);
            assert!(parse_blob(&blob).is_err());
        }
        // Damage past the checksum: every cut, and thousands of changed bytes.
        let payload = small_payload();
        for cut in 0..payload.len() {
            assert!(parse_blob(&pack(&payload[..cut])).is_err(), "cut to {cut}");
        }
        let mut accepted = 0;
        for _ in 0..5000 {
            let mut bad = payload.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(bad.len());
                bad[at] = rng.next() as u8;
            }
            if let Ok(data) = parse_blob(&pack(&bad)) {
                // Damage no check can see (a letter of a name) still answers.
                accepted += 1;
                let _ = data.nearby(1.0, 180.0, 50_000.0, 20);
            }
        }
        assert!(accepted < 2500, "{accepted} damaged files accepted");
        // Counts that promise more (or less) than the payload holds.
        for (at, value) in [
            (0usize, u32::MAX),
            (0, 0),
            (0, 2),
            (0, 4),
            (4, 0),
            (4, 70_000),
        ] {
            let mut bad = payload.clone();
            bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
            assert!(parse_blob(&pack(&bad)).is_err(), "count {value} at {at}");
        }
    }

    /// Query time: `cargo test --release --lib places::offline::tests::bench -- --ignored
    /// --nocapture`. Prints medians over 1000 queries of 50 km in the densest area of the
    /// data (around Milan, about 950 places within 50 km) and in Los Angeles: the index
    /// search alone, and the whole answer (search, sort, JSON) for bounds 20 and 5.
    #[cfg(feature = "builtin-places")]
    #[test]
    #[ignore]
    fn bench() {
        use std::time::{Duration, Instant};
        let start = Instant::now();
        let data = builtin();
        println!("decode and index: {:?}", start.elapsed());
        if let Places::GeoNames {
            ids,
            coords,
            names,
            name_ends,
            regions,
            vicinities,
        } = &data.places
        {
            use std::mem::size_of_val;
            let index = size_of_val(&data.index.rows[..]) + size_of_val(&data.index.points[..]);
            let columns = size_of_val(&ids[..])
                + size_of_val(&coords[..])
                + names.len()
                + size_of_val(&name_ends[..])
                + size_of_val(&regions[..])
                + vicinities.iter().map(String::len).sum::<usize>();
            println!("memory: index {index} bytes, place columns {columns} bytes");
        }
        let median = |mut times: Vec<Duration>| {
            times.sort();
            times[times.len() / 2]
        };
        let mut rng = Rng(11);
        for (area, lat, lng) in [("Milan", 45.75, 9.25), ("Los Angeles", 34.05, -118.25)] {
            let queries: Vec<(f64, f64)> = (0..1000)
                .map(|_| (lat + rng.range(-0.1, 0.1), lng + rng.range(-0.1, 0.1)))
                .collect();
            let (mut search, mut full20, mut full5) = (Vec::new(), Vec::new(), Vec::new());
            let (mut found, mut hits) = (0, Vec::new());
            for &(lat, lng) in &queries {
                let t = Instant::now();
                hits.clear();
                data.index.within(lat, lng, 50_000.0, &mut hits);
                search.push(t.elapsed());
                found += hits.len();
                for (bound, times) in [(20, &mut full20), (5, &mut full5)] {
                    let t = Instant::now();
                    let answer = data.nearby(lat, lng, 50_000.0, bound);
                    times.push(t.elapsed());
                    assert_eq!(answer["results"].as_array().map(Vec::len), Some(bound));
                }
            }
            println!(
                "{area}: {} places within 50 km on average; median search {:?}, \
                 median nearby with bound 20 {:?}, with bound 5 {:?}",
                found / queries.len(),
                median(search),
                median(full20),
                median(full5),
            );
        }
    }
}

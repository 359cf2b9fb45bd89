//! `places offline [FILE]`: what is near a point, from local data, with no network.
//!
//! The data is either the GeoNames cities with a population of at least 1000, built into
//! the binary ([`builtin`], feature `builtin-places`) and read in place, or a user's own
//! file of places ([`file`]: legacy Nearby Search JSON or a GeoJSON FeatureCollection),
//! read into memory. Either way the places are found through the latitude-row [`index`],
//! by great-circle distance, nearest first.

#[cfg(feature = "builtin-places")]
mod builtin;
mod file;
mod index;

use index::Index;
use serde_json::{Map, Value};
use std::path::Path;

/// Largest user places file read, in bytes. The built-in 170,000 places written out in
/// the legacy shape take 58 MB indented as Google sends it (28 MB compact) and load in
/// about a second; parsed JSON takes several times the memory of its text.
const MAX_FILE_BYTES: u64 = 128 << 20;

/// An index of places that answers "what is within R metres of here, nearest first".
pub struct Offline {
    index: Index,
    places: Places,
}

/// What a place says about itself, by slot; slots are in place-id order.
enum Places {
    /// The built-in GeoNames data, read in place.
    #[cfg(feature = "builtin-places")]
    GeoNames(builtin::GeoNames),
    /// A user's places, each the object answered.
    File(Vec<Value>),
}

impl Offline {
    /// The data set built into the binary, or `None` when the `builtin-places` feature is
    /// off (or the embedded file's header is corrupt, which its tests rule out). It reads
    /// only the header: the data stays in the binary's read-only pages, shared by every
    /// process that runs it, and costs no heap.
    pub fn builtin() -> Option<Offline> {
        #[cfg(feature = "builtin-places")]
        {
            let (index, columns) = builtin::read(std::borrow::Cow::Borrowed(builtin::BLOB)).ok()?;
            Some(Offline {
                index,
                places: Places::GeoNames(columns),
            })
        }
        #[cfg(not(feature = "builtin-places"))]
        {
            None
        }
    }

    /// Reads a user's own places file (shapes in [`file`]'s doc: legacy Nearby Search
    /// JSON, or a GeoJSON FeatureCollection of Point features). An error says what is
    /// wrong and where: `places.json:12: results[3]: missing "name"`.
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
        file::parse(&text).map_err(|e| format!("{name}:{e}"))
    }

    /// The places within `radius_m` metres of (`lat`, `lng`), nearest first (great-circle
    /// distance), at most `bound` of them, as a legacy Nearby Search response object
    /// (`html_attributions`, `results`, `status`). Equal distances go in place-id order.
    /// A latitude outside -90..=90 or a value that is not a number finds nothing.
    pub fn nearby(&self, lat: f64, lng: f64, radius_m: f64, bound: usize) -> Value {
        let mut found = Vec::new();
        self.index.within(lat, lng, radius_m, &mut found);
        nearest(&mut found, bound, |slot| self.tie_key(slot));
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

    /// What orders places at equal distances: the place id. A user file's slots are in
    /// place-id order; the built-in data's are in index order, so it is the GeoNames id.
    fn tie_key(&self, slot: u32) -> u64 {
        match &self.places {
            #[cfg(feature = "builtin-places")]
            Places::GeoNames(columns) => u64::from(columns.id(slot as usize)),
            Places::File(_) => u64::from(slot),
        }
    }

    /// The result object of the place in `slot`.
    fn place(&self, slot: u32) -> Value {
        match &self.places {
            #[cfg(feature = "builtin-places")]
            Places::GeoNames(columns) => columns.place(slot as usize),
            // Every slot the index holds is < the number of places; `get` keeps this
            // panic-free anyway.
            Places::File(places) => places.get(slot as usize).cloned().unwrap_or(Value::Null),
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

/// Sorts `found` (squared chord, slot) nearest first, ties by `tie_key` of the slot, and
/// cuts it to `bound`, selecting before sorting so a crowded circle costs little.
fn nearest(found: &mut Vec<(f64, u32)>, bound: usize, tie_key: impl Fn(u32) -> u64) {
    let order = |a: &(f64, u32), b: &(f64, u32)| {
        (a.0.total_cmp(&b.0)).then_with(|| tie_key(a.1).cmp(&tie_key(b.1)))
    };
    if found.len() > bound {
        found.select_nth_unstable_by(bound, order);
        found.truncate(bound);
    }
    found.sort_unstable_by(order);
}

#[cfg(test)]
mod tests;

//! The GeoNames cities1000 data built into the binary (feature `builtin-places`), read in
//! place: `data/geonames-cities1000.places` is embedded as it is, uncompressed and
//! pre-indexed by `tools/build-places.py` (which documents the format), and every value
//! is read from those bytes with `from_le_bytes` when a query needs it. Nothing is
//! decoded or copied at start, so the data costs no heap, its pages are the binary's own
//! read-only pages shared by every server on the host, and a query touches only the few
//! pages it reads.

use super::index::{bytes_at, f64_at, u32_at, Index, POINT_BYTES, ROWS_BYTES};
use serde_json::Value;
use std::borrow::Cow;

/// The built-in data.
pub(super) static BLOB: &[u8] = include_bytes!("../../../data/geonames-cities1000.places");

/// First bytes of a data file: the format's name and version.
pub(super) const MAGIC: &[u8; 8] = b"HERDPLC2";

/// Bytes before the row table: magic, then the counts n and m and the text lengths.
pub(super) const HEADER_BYTES: usize = 8 + 4 * 4;

/// Where the fields of a place record start, after the point's longitude and unit
/// vector: latitude f64, GeoNames id u32, end of its name u32, vicinity index u16.
const LAT: usize = POINT_BYTES;
const ID: usize = LAT + 8;
const NAME_END: usize = ID + 4;
const VICINITY: usize = NAME_END + 4;

/// Bytes of one place record.
pub(super) const RECORD_BYTES: usize = VICINITY + 2;

/// `types` of every built-in place: they are all towns and cities, which Google tags so.
const TYPES: [&str; 2] = ["locality", "political"];

/// The places of a data file (layout in `tools/build-places.py`): `n` records in index
/// order (slot = position) from byte `records`, and the texts after them.
pub(super) struct GeoNames {
    bytes: Cow<'static, [u8]>,
    n: usize,
    m: usize,
    records: usize,
    vic_ends: usize,
    names: usize,
    vic_text: usize,
}

/// Checks a data file's header and that its length is what the header promises, and
/// returns its index and places. O(1): the records are checked as they are read.
pub(super) fn read(bytes: Cow<'static, [u8]>) -> Result<(Index, GeoNames), String> {
    if bytes.get(..8) != Some(MAGIC.as_slice()) {
        return Err("not a HERDPLC2 file".into());
    }
    if bytes.len() < HEADER_BYTES {
        return Err("file is too short".into());
    }
    let [n, m, names_len, vic_len] = [8, 12, 16, 20].map(|at| u32_at(&bytes, at) as usize);
    if m > usize::from(u16::MAX) + 1 {
        return Err(format!("vicinity count {m} is out of range"));
    }
    let records_len = n
        .checked_mul(RECORD_BYTES)
        .ok_or("place count is too large")?;
    let len = [ROWS_BYTES, records_len, 4 * m, names_len, vic_len]
        .iter()
        .try_fold(HEADER_BYTES, |sum, part| sum.checked_add(*part));
    if len != Some(bytes.len()) {
        return Err(format!(
            "file is {} bytes, its header promises {len:?}",
            bytes.len()
        ));
    }
    let records = HEADER_BYTES + ROWS_BYTES;
    let vic_ends = records + records_len;
    let names = vic_ends + 4 * m;
    let places = GeoNames {
        bytes: bytes.clone(),
        n,
        m,
        records,
        vic_ends,
        names,
        vic_text: names + names_len,
    };
    let index = Index::read(bytes, HEADER_BYTES, records, n, RECORD_BYTES)?;
    Ok((index, places))
}

impl GeoNames {
    /// Byte `field` of the record of the place in `slot`.
    fn field(&self, slot: usize, field: usize) -> usize {
        self.records + RECORD_BYTES * slot + field
    }

    /// The GeoNames id of the place in `slot`.
    pub(super) fn id(&self, slot: usize) -> u32 {
        u32_at(&self.bytes, self.field(slot, ID))
    }

    /// Latitude and longitude of the place in `slot`, in degrees (GeoNames' five
    /// decimals, as the nearest doubles).
    pub(super) fn coords(&self, slot: usize) -> (f64, f64) {
        (
            f64_at(&self.bytes, self.field(slot, LAT)),
            f64_at(&self.bytes, self.field(slot, 0)),
        )
    }

    /// The `i`th of `count` texts that start at byte `text`, the end of text `j` being
    /// at byte `end(j)`; empty when the stored ends are damaged.
    fn text(
        &self,
        end: impl Fn(usize) -> usize,
        count: usize,
        text: usize,
        i: usize,
    ) -> Cow<'_, str> {
        if i >= count {
            return Cow::Borrowed("");
        }
        let at = |j: usize| u32_at(&self.bytes, end(j)) as usize;
        let (start, end) = (if i == 0 { 0 } else { at(i - 1) }, at(i));
        let bytes = (start <= end)
            .then(|| self.bytes.get(text + start..text + end))
            .flatten();
        String::from_utf8_lossy(bytes.unwrap_or_default())
    }

    /// The name of the place in `slot`.
    pub(super) fn name(&self, slot: usize) -> Cow<'_, str> {
        let end = |j: usize| self.field(j, NAME_END);
        self.text(end, self.n, self.names, slot)
    }

    /// The vicinity ("Lombardy, Italy") of the place in `slot`.
    pub(super) fn vicinity(&self, slot: usize) -> Cow<'_, str> {
        let v = u16::from_le_bytes(bytes_at(&self.bytes, self.field(slot, VICINITY)));
        let end = |j: usize| self.vic_ends + 4 * j;
        self.text(end, self.m, self.vic_text, usize::from(v))
    }

    /// The result object of the place in `slot`, keys in the order Google sends them.
    pub(super) fn place(&self, slot: usize) -> Value {
        let (lat, lng) = self.coords(slot);
        let location = super::object([("lat", lat.into()), ("lng", lng.into())]);
        super::object([
            ("geometry", super::object([("location", location)])),
            ("name", self.name(slot).into()),
            ("place_id", format!("geonames:{}", self.id(slot)).into()),
            ("types", TYPES.map(Value::from).to_vec().into()),
            ("vicinity", self.vicinity(slot).into()),
        ])
    }

    /// Checks every value of the data: ids unique, coordinates in range, text ends in
    /// order and on character boundaries, vicinity indexes in range. The server never
    /// runs this (it would read every page); the tests run it on the built-in data.
    #[cfg(test)]
    pub(super) fn check(&self) -> Result<(), String> {
        let mut ids: Vec<u32> = (0..self.n).map(|slot| self.id(slot)).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!("id {} is there twice", pair[0]));
        }
        for slot in 0..self.n {
            let (lat, lng) = self.coords(slot);
            if lat.abs() > 90.0 || lng.abs() > 180.0 {
                return Err(format!("slot {slot}: ({lat}, {lng}) is out of range"));
            }
            let v = u16::from_le_bytes(bytes_at(&self.bytes, self.field(slot, VICINITY)));
            if usize::from(v) >= self.m {
                return Err(format!("slot {slot}: vicinity {v} is out of range"));
            }
        }
        let name_end = |j: usize| self.field(j, NAME_END);
        self.check_texts(name_end, self.n, self.names, self.vic_text)?;
        let vic_end = |j: usize| self.vic_ends + 4 * j;
        self.check_texts(vic_end, self.m, self.vic_text, self.bytes.len())
    }

    /// Checks that the `count` texts in bytes `text..end`, text `j` ending at byte
    /// `end_of(j)`, are UTF-8, not empty, and fill the section.
    #[cfg(test)]
    fn check_texts(
        &self,
        end_of: impl Fn(usize) -> usize,
        count: usize,
        text: usize,
        end: usize,
    ) -> Result<(), String> {
        let all = std::str::from_utf8(&self.bytes[text..end]).map_err(|e| e.to_string())?;
        let mut start = 0;
        for i in 0..count {
            let stop = u32_at(&self.bytes, end_of(i)) as usize;
            if stop <= start || !all.is_char_boundary(stop) {
                return Err(format!("text {i} ends at {stop}, after {start}"));
            }
            start = stop;
        }
        if start != all.len() {
            return Err("texts do not fill their section".into());
        }
        Ok(())
    }
}

//! The latitude-row index over places, kept as little-endian bytes so that the built-in
//! data's index is read in place from the binary and a user file's is built in the same
//! layout (`tools/build-places.py` describes the built-in one).
//!
//! Places are cut into rows 0.1° of latitude high and sorted by longitude within each
//! row, so a query binary-searches the longitude span of the circle in each row it
//! crosses, with two spans across the antimeridian and the whole row when the circle holds
//! a pole. Each candidate is then tested exactly on 3-D unit vectors: the squared chord
//! between two points is four times the haversine of their central angle, so
//! "great-circle distance ≤ radius" is the chord test below, to the last bits, with no
//! trigonometry per place. The few sines per query come from the `libm` crate (Rust's
//! port of musl's), not the system's libm: then the process maps no libm.so at all.

use std::borrow::Cow;
use std::f64::consts::PI;

/// Mean radius of the Earth in metres (IUGG R1 = (2a + b) / 3 of WGS 84): the sphere
/// whose great-circle distances stray least, on average, from the ellipsoid's.
pub(super) const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Rows of the index, one per `ROW_DEG` of latitude. At 0.1° (11 km) a 50 km query
/// searches about ten rows and a row's box overshoots the circle by little; rows of 0.05°
/// and 0.2° measured the same within noise, as the search is a few microseconds either way.
pub(super) const ROWS: usize = 1800;

/// Height of one index row in degrees of latitude.
const ROW_DEG: f64 = 180.0 / ROWS as f64;

/// Slack added around the search box, in degrees (about 1 cm), so that rounding in the
/// box's trigonometry can never drop a place that the exact chord test would keep.
const BOX_SLACK_DEG: f64 = 1e-7;

/// Bytes of the row table: `ROWS + 1` u32 starts.
pub(super) const ROWS_BYTES: usize = (ROWS + 1) * 4;

/// Bytes of what every point record starts with: longitude f64, unit vector 3 × f64.
pub(super) const POINT_BYTES: usize = 8 + 24;

/// Bytes of a point record of an index built here: the point, then its slot as a u32.
const SLOTTED_BYTES: usize = POINT_BYTES + 4;

/// The index: a row table of `ROWS + 1` u32 (the points of row `r` are
/// `rows[r]..rows[r + 1]`), and `n` point records of `stride` bytes in row order, each
/// row sorted by longitude. A record starts with the longitude (f64) and the unit vector
/// (3 × f64); the place's slot follows as a u32 in an index built here, while the
/// built-in data stores its places in index order (slot = position) and the rest of
/// its records holds the place itself.
pub(super) struct Index {
    bytes: Cow<'static, [u8]>,
    rows: usize,
    records: usize,
    stride: usize,
    slotted: bool,
    n: usize,
}

impl Index {
    /// The index in `bytes` whose row table starts at `rows` and whose `n` records of
    /// `stride` bytes (slot = position) start at `records`; an error when `bytes` do not
    /// hold them. Rows are checked as they are read: a corrupt row reads as empty.
    #[cfg(feature = "builtin-places")]
    pub(super) fn read(
        bytes: Cow<'static, [u8]>,
        rows: usize,
        records: usize,
        n: usize,
        stride: usize,
    ) -> Result<Index, String> {
        let rows_end = rows.checked_add(ROWS_BYTES);
        let end = n
            .checked_mul(stride)
            .and_then(|len| len.checked_add(records));
        let fits = |end: Option<usize>| end.is_some_and(|end| end <= bytes.len());
        if !fits(rows_end) || !fits(end) || stride < POINT_BYTES || u32::try_from(n).is_err() {
            return Err("index does not fit the data".into());
        }
        Ok(Index {
            bytes,
            rows,
            records,
            stride,
            slotted: false,
            n,
        })
    }

    /// Indexes places given as (latitude, longitude) in degrees, by slot. Callers have
    /// checked the ranges and that there are fewer than 2^32 of them.
    pub(super) fn build(coords: &[(f64, f64)]) -> Index {
        let mut order: Vec<(usize, f64, u32)> = coords
            .iter()
            .zip(0u32..)
            .map(|(&(lat, lng), slot)| (row_of(lat), lng, slot))
            .collect();
        order.sort_unstable_by(|a, b| {
            (a.0.cmp(&b.0))
                .then(a.1.total_cmp(&b.1))
                .then(a.2.cmp(&b.2))
        });
        let n = order.len();
        let mut bytes = Vec::with_capacity(ROWS_BYTES + n * SLOTTED_BYTES);
        let mut rows = [0u32; ROWS + 1];
        for &(row, _, _) in &order {
            rows[row + 1] += 1; // row_of returns < ROWS
        }
        for r in 0..ROWS {
            rows[r + 1] += rows[r];
        }
        rows.iter().for_each(|r| bytes.extend(r.to_le_bytes()));
        for &(_, lng, slot) in &order {
            bytes.extend(lng.to_le_bytes());
            let (lat, lng) = coords[slot as usize];
            unit_vector(lat, lng)
                .iter()
                .for_each(|c| bytes.extend(c.to_le_bytes()));
            bytes.extend(slot.to_le_bytes());
        }
        Index {
            bytes: Cow::Owned(bytes),
            rows: 0,
            records: ROWS_BYTES,
            stride: SLOTTED_BYTES,
            slotted: true,
            n,
        }
    }

    /// Number of points.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.n
    }

    /// The points of row `r`, as a range of point positions; empty if the stored bounds
    /// are not in order.
    pub(super) fn row(&self, r: usize) -> (usize, usize) {
        let start = u32_at(&self.bytes, self.rows + 4 * r) as usize;
        let end = u32_at(&self.bytes, self.rows + 4 * (r + 1)) as usize;
        if start <= end && end <= self.n {
            (start, end)
        } else {
            (0, 0)
        }
    }

    /// Longitude of the point at `i`.
    pub(super) fn lng(&self, i: usize) -> f64 {
        f64_at(&self.bytes, self.records + self.stride * i)
    }

    /// Unit vector of the point at `i`.
    pub(super) fn xyz(&self, i: usize) -> [f64; 3] {
        let at = self.records + self.stride * i + 8;
        [0, 8, 16].map(|k| f64_at(&self.bytes, at + k))
    }

    /// Slot of the place at `i`.
    pub(super) fn slot(&self, i: usize) -> u32 {
        if self.slotted {
            u32_at(&self.bytes, self.records + self.stride * i + POINT_BYTES)
        } else {
            i as u32 // i < n < 2^32, checked in `read`
        }
    }

    /// Appends to `out` (squared chord, slot) for every place within `radius_m` of
    /// (`lat`, `lng`), in no particular order.
    pub(super) fn within(&self, lat: f64, lng: f64, radius_m: f64, out: &mut Vec<(f64, u32)>) {
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
            let s = libm::sin(angle) / libm::cos(lat.to_radians());
            (s < 1.0).then(|| libm::asin(s).to_degrees() + BOX_SLACK_DEG)
        };
        let spans = lng_spans(lng, half_span);
        for r in row_of(lat_lo)..=row_of(lat_hi) {
            let (row_start, row_end) = self.row(r);
            for &(lo, hi) in spans.iter().flatten() {
                let start = partition(row_start, row_end, |i| self.lng(i) < lo);
                let end = partition(start, row_end, |i| self.lng(i) <= hi);
                for i in start..end {
                    let c2 = chord2(&self.xyz(i), &q);
                    if c2 <= limit {
                        out.push((c2, self.slot(i)));
                    }
                }
            }
        }
    }
}

/// The first position in `lo..hi` where `pred` is false, `pred` being true then false
/// across the range (a binary search, as `slice::partition_point`).
fn partition(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// `N` bytes at `at`, or zeros past the end (which header checks rule out).
pub(super) fn bytes_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; N])
}

/// The little-endian u32 at `at`.
pub(super) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes_at(bytes, at))
}

/// The little-endian f64 at `at`.
pub(super) fn f64_at(bytes: &[u8], at: usize) -> f64 {
    f64::from_le_bytes(bytes_at(bytes, at))
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
pub(super) fn row_of(lat: f64) -> usize {
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
pub(super) fn unit_vector(lat: f64, lng: f64) -> [f64; 3] {
    let (sin_lat, cos_lat) = libm::sincos(lat.to_radians());
    let (sin_lng, cos_lng) = libm::sincos(lng.to_radians());
    [cos_lat * cos_lng, cos_lat * sin_lng, sin_lat]
}

/// Squared chord between two unit vectors: 4·hav(θ) for central angle θ, accurate at
/// every distance (the differences are taken before squaring).
pub(super) fn chord2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let (dx, dy, dz) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    dx * dx + dy * dy + dz * dz
}

/// Largest squared chord within a central angle of `angle` radians.
pub(super) fn chord2_limit(angle: f64) -> f64 {
    if angle >= PI {
        f64::INFINITY
    } else {
        let chord = 2.0 * libm::sin(angle / 2.0);
        chord * chord
    }
}

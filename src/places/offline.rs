//! `places offline [FILE]`: places from local data, nearest first, no network.
//!
//! STUB: the real index is being written; this placeholder keeps the crate compiling.

use serde_json::Value;
use std::path::Path;

/// An index of places that answers "what is within R metres of here, nearest first".
pub struct Offline {
    _private: (),
}

impl Offline {
    /// The data set built into the binary, or `None` when the `builtin-places`
    /// feature is off.
    pub fn builtin() -> Option<Offline> {
        None
    }

    /// Reads a user's own JSON file of places; the error names the file and line.
    pub fn from_json_file(path: &Path) -> Result<Offline, String> {
        Err(format!("{}: offline places files are not supported yet", path.display()))
    }

    /// The places within `radius_m` metres of (`lat`, `lng`), nearest first (great-circle
    /// distance), at most `bound` of them, as a legacy Nearby Search response object
    /// (`html_attributions`, `results`, `status`).
    pub fn nearby(&self, _lat: f64, _lng: f64, _radius_m: f64, _bound: usize) -> Value {
        serde_json::json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
    }
}

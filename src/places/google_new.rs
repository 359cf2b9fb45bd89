//! `places google [URL]`: the Places API (New) `searchNearby` request, and the
//! translation of its answer into the legacy Nearby Search shape.
//!
//! STUB: being written; this placeholder keeps the crate compiling.

use serde_json::Value;

/// Default endpoint of the Places API (New) Nearby Search.
pub const DEFAULT_URL: &str = "https://places.googleapis.com/v1/places:searchNearby";

/// The `X-Goog-FieldMask` header value: exactly the fields `translate` reads.
pub const FIELD_MASK: &str = "places.id";

/// The JSON body of a `searchNearby` POST.
pub fn request_body(_lat: f64, _lng: f64, _radius_m: f64, _bound: usize) -> String {
    String::new()
}

/// Translates an HTTP status and body from the New API into a legacy-shaped object.
pub fn translate(_http_status: u16, _body: &[u8]) -> Value {
    serde_json::json!({"html_attributions": [], "results": [], "status": "UNKNOWN_ERROR"})
}

//! `places google [URL]`: the body of a Places API (New) `searchNearby` request, and the
//! translation of its `{"places": [...]}` answer (or its error) into the legacy Nearby
//! Search shape of SPEC section 4, so classic clients keep working. Pure: the caller does
//! the HTTP and hands in the status and the body bytes.
//!
//! How answers map to legacy statuses (errors always carry an `error_message`: the API's
//! `message`, else a short description such as `places service answered HTTP 503`):
//!
//! | Places API (New) answer                                       | legacy `status`    |
//! |---------------------------------------------------------------|--------------------|
//! | 2xx with places                                               | `OK`               |
//! | 2xx with none (`{}` or `"places": []`)                        | `ZERO_RESULTS`     |
//! | `PERMISSION_DENIED`, `UNAUTHENTICATED`, HTTP 401, HTTP 403    | `REQUEST_DENIED`   |
//! | `INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `OUT_OF_RANGE`, HTTP 400 | `INVALID_REQUEST` |
//! | `RESOURCE_EXHAUSTED`, HTTP 429                                | `OVER_QUERY_LIMIT` |
//! | any other error or HTTP code, a body that is not JSON or not the expected shape | `UNKNOWN_ERROR` |
//!
//! The google.rpc `status` name of an `{"error": {...}}` body wins over the HTTP code.

use serde_json::{Map, Value};

/// Default endpoint of the Places API (New) Nearby Search.
pub const DEFAULT_URL: &str = "https://places.googleapis.com/v1/places:searchNearby";

/// The `X-Goog-FieldMask` header value: exactly the fields [`translate`] reads. The API
/// refuses a request without one, and bills by the fields named, so it names no more.
pub const FIELD_MASK: &str = "places.id,places.displayName,places.location,\
places.shortFormattedAddress,places.formattedAddress,places.types,places.rating,\
places.userRatingCount,places.businessStatus";

/// Largest `locationRestriction.circle.radius` the API accepts, in metres.
pub const MAX_RADIUS_M: f64 = 50_000.0;

/// Largest `maxResultCount` the API accepts, and the most results [`translate`] keeps
/// (SPEC section 4 bounds WHATSAT at 20 too).
pub const MAX_RESULTS: usize = 20;

/// Longest `error_message` passed on, in characters: enough for any message Google
/// writes, short enough that a strange service cannot bloat every WHATSAT reply.
pub const MAX_ERROR_MESSAGE: usize = 500;

/// The legacy status for each google.rpc status name that has a closer match than
/// `UNKNOWN_ERROR`; every other name maps to `UNKNOWN_ERROR`.
const RPC_STATUSES: &[(&str, &str)] = &[
    ("PERMISSION_DENIED", "REQUEST_DENIED"),
    ("UNAUTHENTICATED", "REQUEST_DENIED"),
    ("INVALID_ARGUMENT", "INVALID_REQUEST"),
    ("FAILED_PRECONDITION", "INVALID_REQUEST"),
    ("OUT_OF_RANGE", "INVALID_REQUEST"),
    ("RESOURCE_EXHAUSTED", "OVER_QUERY_LIMIT"),
];

/// Every google.rpc status name, so a known name that is not in [`RPC_STATUSES`]
/// (`INTERNAL`, `UNAVAILABLE`, ...) is taken at its word instead of falling back to the
/// HTTP code.
const RPC_NAMES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The error mapping as (google.rpc status or HTTP code, legacy status) rows, in the
/// order of the README table. Anything not listed maps to `UNKNOWN_ERROR`.
pub fn status_table() -> &'static [(&'static str, &'static str)] {
    &[
        ("PERMISSION_DENIED", "REQUEST_DENIED"),
        ("UNAUTHENTICATED", "REQUEST_DENIED"),
        ("HTTP 401", "REQUEST_DENIED"),
        ("HTTP 403", "REQUEST_DENIED"),
        ("INVALID_ARGUMENT", "INVALID_REQUEST"),
        ("FAILED_PRECONDITION", "INVALID_REQUEST"),
        ("OUT_OF_RANGE", "INVALID_REQUEST"),
        ("HTTP 400", "INVALID_REQUEST"),
        ("RESOURCE_EXHAUSTED", "OVER_QUERY_LIMIT"),
        ("HTTP 429", "OVER_QUERY_LIMIT"),
    ]
}

/// The JSON body of a `searchNearby` POST: `maxResultCount` is `bound` clamped to
/// 1..=[`MAX_RESULTS`], the radius is clamped to 0..=[`MAX_RADIUS_M`] metres (the caller
/// has already checked SPEC section 4's 0 < r ≤ 50 km; the clamp only keeps the API from
/// refusing a value at the edge). A NaN latitude, longitude or radius becomes `null`.
pub fn request_body(lat: f64, lng: f64, radius_m: f64, bound: usize) -> String {
    let radius = radius_m.clamp(0.0, MAX_RADIUS_M);
    serde_json::json!({
        "maxResultCount": bound.clamp(1, MAX_RESULTS),
        "locationRestriction": {
            "circle": {
                "center": {"latitude": lat, "longitude": lng},
                "radius": radius,
            }
        }
    })
    .to_string()
}

/// Translates the New API's HTTP status and body into a legacy Nearby Search object:
/// `error_message` (errors only), `html_attributions`, `results` (at most
/// [`MAX_RESULTS`]), `status`, in that order. Never panics, whatever the bytes.
pub fn translate(http_status: u16, body: &[u8]) -> Value {
    let success = (200..300).contains(&http_status);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();

    if let Some(error) = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| !e.is_null())
    {
        return api_error(http_status, error);
    }
    if !success {
        return failure(
            http_status_to_legacy(http_status),
            format!("places service answered HTTP {http_status}"),
        );
    }
    let Some(answer) = parsed else {
        return failure(
            "UNKNOWN_ERROR",
            "places service answered with something that is not JSON".to_string(),
        );
    };
    let Some(answer) = answer.as_object() else {
        return failure(
            "UNKNOWN_ERROR",
            "places service answered with JSON that is not an object".to_string(),
        );
    };
    let places: &[Value] = match answer.get("places") {
        // The New API answers `{}` when nothing is near.
        None => &[],
        Some(Value::Array(places)) => places,
        Some(_) => {
            return failure(
                "UNKNOWN_ERROR",
                "places service answered with \"places\" that is not a list".to_string(),
            )
        }
    };
    let results: Vec<Value> = places
        .iter()
        .filter_map(legacy_result)
        .take(MAX_RESULTS)
        .collect();
    let status = if results.is_empty() {
        "ZERO_RESULTS"
    } else {
        "OK"
    };
    legacy(None, results, status)
}

/// One legacy result from one New API place, keys in the legacy API's alphabetical
/// order; `None` for an entry that is not an object or has no usable location, since a
/// nearby result without a position would mislead every client.
fn legacy_result(place: &Value) -> Option<Value> {
    let place = place.as_object()?;
    let location = place.get("location")?;
    let lat = location.get("latitude").filter(|v| v.is_number())?;
    let lng = location.get("longitude").filter(|v| v.is_number())?;

    let mut result = Map::new();
    if let Some(business) = place
        .get("businessStatus")
        .and_then(Value::as_str)
        .filter(|s| *s != "BUSINESS_STATUS_UNSPECIFIED")
    {
        result.insert("business_status".into(), business.into());
    }
    let mut point = Map::new();
    point.insert("lat".into(), lat.clone());
    point.insert("lng".into(), lng.clone());
    let mut geometry = Map::new();
    geometry.insert("location".into(), Value::Object(point));
    result.insert("geometry".into(), Value::Object(geometry));
    let name = place
        .get("displayName")
        .and_then(|d| d.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    result.insert("name".into(), name.into());
    let id = place.get("id").and_then(Value::as_str).unwrap_or_default();
    result.insert("place_id".into(), id.into());
    if let Some(rating) = place.get("rating").filter(|v| v.is_number()) {
        result.insert("rating".into(), rating.clone());
    }
    let types: Vec<Value> = place
        .get("types")
        .and_then(Value::as_array)
        .map(|types| types.iter().filter(|t| t.is_string()).cloned().collect())
        .unwrap_or_default();
    result.insert("types".into(), Value::Array(types));
    if let Some(count) = place.get("userRatingCount").filter(|v| v.is_u64()) {
        result.insert("user_ratings_total".into(), count.clone());
    }
    let vicinity = ["shortFormattedAddress", "formattedAddress"]
        .iter()
        .find_map(|key| place.get(*key).and_then(Value::as_str))
        .unwrap_or_default();
    result.insert("vicinity".into(), vicinity.into());
    Some(Value::Object(result))
}

/// The legacy answer for an `{"error": {"code", "status", "message"}}` body.
fn api_error(http_status: u16, error: &Value) -> Value {
    let rpc = error.get("status").and_then(Value::as_str);
    let code = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    let status = match rpc {
        Some(name) if RPC_NAMES.contains(&name) => rpc_status_to_legacy(name),
        _ if !(200..300).contains(&http_status) => http_status_to_legacy(http_status),
        _ => code.map_or("UNKNOWN_ERROR", http_status_to_legacy),
    };
    let message = match error.get("message").and_then(Value::as_str) {
        Some(message) if !message.trim().is_empty() => message.to_string(),
        _ => match (rpc, code) {
            (Some(name), _) => format!("places service answered {name}"),
            (None, Some(code)) => format!("places service answered error {code}"),
            (None, None) => format!("places service answered HTTP {http_status}"),
        },
    };
    failure(status, message)
}

/// The legacy status for a google.rpc status name.
fn rpc_status_to_legacy(name: &str) -> &'static str {
    RPC_STATUSES
        .iter()
        .find(|(rpc, _)| *rpc == name)
        .map_or("UNKNOWN_ERROR", |(_, legacy)| legacy)
}

/// The legacy status for an HTTP code with no google.rpc status to go by.
fn http_status_to_legacy(code: u16) -> &'static str {
    match code {
        400 => "INVALID_REQUEST",
        401 | 403 => "REQUEST_DENIED",
        429 => "OVER_QUERY_LIMIT",
        _ => "UNKNOWN_ERROR",
    }
}

/// A legacy error answer: no results, `status`, and `message` cut to
/// [`MAX_ERROR_MESSAGE`] characters.
fn failure(status: &str, message: String) -> Value {
    let message = match message.char_indices().nth(MAX_ERROR_MESSAGE) {
        Some((end, _)) => message[..end].to_string(),
        None => message,
    };
    legacy(Some(message), Vec::new(), status)
}

/// The legacy top level, keys in the legacy API's alphabetical order.
fn legacy(error_message: Option<String>, results: Vec<Value>, status: &str) -> Value {
    let mut top = Map::new();
    if let Some(message) = error_message {
        top.insert("error_message".into(), message.into());
    }
    top.insert("html_attributions".into(), Value::Array(Vec::new()));
    top.insert("results".into(), Value::Array(results));
    top.insert("status".into(), status.into());
    Value::Object(top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A `searchNearby` answer in the shape the live API gives for [`FIELD_MASK`]: one
    /// place with every field, one without the optional ones, one closed for good.
    const RECORDED: &str = r#"{
      "places": [
        {
          "id": "ChIJ7aVxnOTHwoARxKIntFtakKo",
          "types": ["cafe", "coffee_shop", "food", "point_of_interest", "store", "establishment"],
          "formattedAddress": "340 Westwood Plaza, Los Angeles, CA 90095, USA",
          "location": {"latitude": 34.0704989, "longitude": -118.4441083},
          "rating": 4.3,
          "businessStatus": "OPERATIONAL",
          "userRatingCount": 287,
          "displayName": {"text": "Kerckhoff Coffee House", "languageCode": "en"},
          "shortFormattedAddress": "340 Westwood Plaza, Los Angeles"
        },
        {
          "id": "ChIJ8-sOjIS8woARqgfRkOmAGQA",
          "types": ["university", "point_of_interest", "establishment"],
          "formattedAddress": "Los Angeles, CA 90095, USA",
          "location": {"latitude": 34.068921, "longitude": -118.4451811},
          "displayName": {"text": "University of California, Los Angeles", "languageCode": "en"}
        },
        {
          "id": "ChIJXxXxXxXxwoARabcdefghijk",
          "types": ["restaurant", "food", "point_of_interest", "establishment"],
          "location": {"latitude": 34.0631, "longitude": -118.4468},
          "rating": 4,
          "businessStatus": "CLOSED_PERMANENTLY",
          "userRatingCount": 12,
          "displayName": {"text": "Café Mañana 東京ラーメン 🍜", "languageCode": "es"},
          "shortFormattedAddress": "1100 Glendon Ave, Los Angeles"
        }
      ]
    }"#;

    const LEGACY_STATUSES: &[&str] = &[
        "OK",
        "ZERO_RESULTS",
        "REQUEST_DENIED",
        "INVALID_REQUEST",
        "OVER_QUERY_LIMIT",
        "UNKNOWN_ERROR",
    ];

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Checks the shape every answer must have, and returns the status.
    fn checked(v: &Value) -> &str {
        assert_eq!(v["html_attributions"], json!([]), "{v}");
        let results = v["results"].as_array().expect("results is a list");
        assert!(results.len() <= MAX_RESULTS);
        let status = v["status"].as_str().expect("status is a string");
        assert!(LEGACY_STATUSES.contains(&status), "{status}");
        let is_error = !matches!(status, "OK" | "ZERO_RESULTS");
        assert_eq!(v.get("error_message").is_some(), is_error, "{v}");
        if is_error {
            assert!(results.is_empty());
            assert_eq!(
                keys(v),
                ["error_message", "html_attributions", "results", "status"]
            );
        } else {
            assert_eq!(keys(v), ["html_attributions", "results", "status"]);
            assert_eq!(results.is_empty(), status == "ZERO_RESULTS");
        }
        status
    }

    fn error_body(code: u16, status: &str, message: &str) -> Vec<u8> {
        json!({"error": {"code": code, "message": message, "status": status}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn request_body_has_every_field() {
        let body: Value =
            serde_json::from_str(&request_body(34.068930, -118.445127, 10_000.0, 5)).unwrap();
        assert_eq!(keys(&body), ["maxResultCount", "locationRestriction"]);
        assert_eq!(body["maxResultCount"], json!(5));
        let circle = &body["locationRestriction"]["circle"];
        assert_eq!(circle["center"]["latitude"].as_f64(), Some(34.068930));
        assert_eq!(circle["center"]["longitude"].as_f64(), Some(-118.445127));
        assert_eq!(circle["radius"].as_f64(), Some(10_000.0));
    }

    #[test]
    fn request_body_clamps_radius_and_bound() {
        let radius = |r: f64| {
            let body: Value = serde_json::from_str(&request_body(0.0, 0.0, r, 1)).unwrap();
            body["locationRestriction"]["circle"]["radius"].as_f64()
        };
        assert_eq!(radius(50_000.0), Some(50_000.0));
        assert_eq!(radius(50_000.1), Some(50_000.0));
        assert_eq!(radius(f64::INFINITY), Some(50_000.0));
        assert_eq!(radius(-1.0), Some(0.0));
        assert_eq!(radius(0.5), Some(0.5));

        let bound = |n: usize| {
            let body: Value = serde_json::from_str(&request_body(0.0, 0.0, 1.0, n)).unwrap();
            body["maxResultCount"].as_u64()
        };
        assert_eq!(bound(0), Some(1));
        assert_eq!(bound(1), Some(1));
        assert_eq!(bound(20), Some(20));
        assert_eq!(bound(21), Some(20));
        assert_eq!(bound(usize::MAX), Some(20));
    }

    #[test]
    fn request_body_survives_non_finite_coordinates() {
        let body: Value =
            serde_json::from_str(&request_body(f64::NAN, f64::INFINITY, f64::NAN, 3)).unwrap();
        let circle = &body["locationRestriction"]["circle"];
        assert!(circle["center"]["latitude"].is_null());
        assert!(circle["center"]["longitude"].is_null());
        assert!(circle["radius"].is_null());
    }

    #[test]
    fn field_mask_names_places_fields_only() {
        for field in FIELD_MASK.split(',') {
            let name = field.strip_prefix("places.").expect(field);
            assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic()));
        }
    }

    #[test]
    fn translates_recorded_answer_field_by_field() {
        let v = translate(200, RECORDED.as_bytes());
        assert_eq!(checked(&v), "OK");
        let expected = json!([
            {
                "business_status": "OPERATIONAL",
                "geometry": {"location": {"lat": 34.0704989, "lng": -118.4441083}},
                "name": "Kerckhoff Coffee House",
                "place_id": "ChIJ7aVxnOTHwoARxKIntFtakKo",
                "rating": 4.3,
                "types": ["cafe", "coffee_shop", "food", "point_of_interest", "store", "establishment"],
                "user_ratings_total": 287,
                "vicinity": "340 Westwood Plaza, Los Angeles"
            },
            {
                "geometry": {"location": {"lat": 34.068921, "lng": -118.4451811}},
                "name": "University of California, Los Angeles",
                "place_id": "ChIJ8-sOjIS8woARqgfRkOmAGQA",
                "types": ["university", "point_of_interest", "establishment"],
                "vicinity": "Los Angeles, CA 90095, USA"
            },
            {
                "business_status": "CLOSED_PERMANENTLY",
                "geometry": {"location": {"lat": 34.0631, "lng": -118.4468}},
                "name": "Café Mañana 東京ラーメン 🍜",
                "place_id": "ChIJXxXxXxXxwoARabcdefghijk",
                "rating": 4,
                "types": ["restaurant", "food", "point_of_interest", "establishment"],
                "user_ratings_total": 12,
                "vicinity": "1100 Glendon Ave, Los Angeles"
            }
        ]);
        assert_eq!(v["results"], expected);
        // Key order, which `==` on maps does not check.
        let results = v["results"].as_array().unwrap();
        assert_eq!(
            keys(&results[0]),
            [
                "business_status",
                "geometry",
                "name",
                "place_id",
                "rating",
                "types",
                "user_ratings_total",
                "vicinity"
            ]
        );
        assert_eq!(
            keys(&results[1]),
            ["geometry", "name", "place_id", "types", "vicinity"]
        );
        assert_eq!(keys(&results[0]["geometry"]["location"]), ["lat", "lng"]);
        // Numbers keep the service's text.
        let text = v.to_string();
        assert!(
            text.contains(r#""lat":34.0704989,"lng":-118.4441083"#),
            "{text}"
        );
        assert!(text.contains(r#""rating":4,"#), "{text}");
    }

    #[test]
    fn unicode_names_pass_through_unescaped() {
        let body = json!({"places": [{
            "id": "x",
            "location": {"latitude": 35.6812, "longitude": 139.7671},
            "displayName": {"text": "東京駅 \"Tōkyō-eki\" — Ω ß 😀"},
            "formattedAddress": "1 Chome Marunouchi, 千代田区"
        }]});
        let v = translate(200, body.to_string().as_bytes());
        assert_eq!(checked(&v), "OK");
        assert_eq!(v["results"][0]["name"], "東京駅 \"Tōkyō-eki\" — Ω ß 😀");
        assert_eq!(v["results"][0]["vicinity"], "1 Chome Marunouchi, 千代田区");
        assert!(v.to_string().contains("東京駅"));
    }

    #[test]
    fn every_mask_field_is_read_and_nothing_else() {
        let place = json!({
            "id": "id1",
            "displayName": {"text": "Name"},
            "location": {"latitude": 1.5, "longitude": 2.5},
            "shortFormattedAddress": "short",
            "formattedAddress": "long",
            "types": ["cafe"],
            "rating": 4.5,
            "userRatingCount": 10,
            "businessStatus": "OPERATIONAL"
        });
        let full = translate(200, json!({"places": [place]}).to_string().as_bytes());
        assert_eq!(checked(&full), "OK");
        let answer =
            |place: &Value| translate(200, json!({"places": [place]}).to_string().as_bytes());
        for field in FIELD_MASK.split(',') {
            let name = field.trim_start_matches("places.");
            let mut base = place.clone();
            if name == "formattedAddress" {
                // Only read when there is no shortFormattedAddress.
                base.as_object_mut()
                    .unwrap()
                    .remove("shortFormattedAddress");
            }
            let mut without = base.clone();
            without.as_object_mut().unwrap().remove(name);
            assert_ne!(
                answer(&without),
                answer(&base),
                "{name} is in the mask but not read"
            );
        }
        let mut extra = place.clone();
        let extra_fields = extra.as_object_mut().unwrap();
        extra_fields.insert("primaryType".into(), json!("cafe"));
        extra_fields.insert("nationalPhoneNumber".into(), json!("(310) 555-0100"));
        extra_fields.insert("priceLevel".into(), json!("PRICE_LEVEL_MODERATE"));
        let v = translate(200, json!({"places": [extra]}).to_string().as_bytes());
        assert_eq!(v, full);
    }

    #[test]
    fn vicinity_falls_back_to_formatted_address_then_empty() {
        let place = |extra: Value| {
            let mut p = json!({"id": "i", "location": {"latitude": 0, "longitude": 0}});
            p.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let v = translate(200, json!({"places": [p]}).to_string().as_bytes());
            v["results"][0]["vicinity"].clone()
        };
        assert_eq!(
            place(json!({"shortFormattedAddress": "s", "formattedAddress": "f"})),
            "s"
        );
        assert_eq!(place(json!({"formattedAddress": "f"})), "f");
        assert_eq!(place(json!({})), "");
    }

    #[test]
    fn empty_answers_are_zero_results() {
        for body in [&b"{}"[..], b"{\"places\": []}", b" {}\n"] {
            let v = translate(200, body);
            assert_eq!(checked(&v), "ZERO_RESULTS");
            assert_eq!(
                v.to_string(),
                r#"{"html_attributions":[],"results":[],"status":"ZERO_RESULTS"}"#
            );
        }
    }

    #[test]
    fn results_are_cut_to_twenty() {
        let places: Vec<Value> = (0..45)
            .map(|i| json!({"id": format!("p{i}"), "location": {"latitude": 0.0, "longitude": f64::from(i)}}))
            .collect();
        let v = translate(200, json!({ "places": places }).to_string().as_bytes());
        assert_eq!(checked(&v), "OK");
        assert_eq!(v["results"].as_array().unwrap().len(), MAX_RESULTS);
        assert_eq!(v["results"][19]["place_id"], "p19");
    }

    #[test]
    fn places_without_a_location_are_dropped() {
        let body = json!({"places": [
            1, null, "x", [],
            {"id": "no-location"},
            {"id": "string-lat", "location": {"latitude": "1", "longitude": 2}},
            {"id": "half", "location": {"latitude": 1}},
            {"id": "good", "location": {"latitude": 1, "longitude": 2},
             "displayName": "not an object", "types": ["a", 3, null, "b"],
             "rating": "high", "userRatingCount": -4,
             "businessStatus": "BUSINESS_STATUS_UNSPECIFIED"}
        ]});
        let v = translate(200, body.to_string().as_bytes());
        assert_eq!(checked(&v), "OK");
        assert_eq!(
            v["results"],
            json!([{
                "geometry": {"location": {"lat": 1, "lng": 2}},
                "name": "",
                "place_id": "good",
                "types": ["a", "b"],
                "vicinity": ""
            }])
        );
        let none = translate(200, br#"{"places": [{"id": "x"}]}"#);
        assert_eq!(checked(&none), "ZERO_RESULTS");
    }

    #[test]
    fn error_403_with_error_object_is_request_denied() {
        let body = br#"{
          "error": {
            "code": 403,
            "message": "Places API (New) has not been used in project 123 before or it is disabled.",
            "status": "PERMISSION_DENIED",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED"}]
          }
        }"#;
        let v = translate(403, body);
        assert_eq!(checked(&v), "REQUEST_DENIED");
        assert_eq!(
            v["error_message"],
            "Places API (New) has not been used in project 123 before or it is disabled."
        );
    }

    #[test]
    fn each_rpc_status_maps_to_its_legacy_status() {
        let cases = [
            (403, "PERMISSION_DENIED", "REQUEST_DENIED"),
            (401, "UNAUTHENTICATED", "REQUEST_DENIED"),
            (400, "INVALID_ARGUMENT", "INVALID_REQUEST"),
            (400, "FAILED_PRECONDITION", "INVALID_REQUEST"),
            (400, "OUT_OF_RANGE", "INVALID_REQUEST"),
            (429, "RESOURCE_EXHAUSTED", "OVER_QUERY_LIMIT"),
            (500, "INTERNAL", "UNKNOWN_ERROR"),
            (503, "UNAVAILABLE", "UNKNOWN_ERROR"),
            (504, "DEADLINE_EXCEEDED", "UNKNOWN_ERROR"),
            (404, "NOT_FOUND", "UNKNOWN_ERROR"),
            // The rpc name wins over an HTTP code that would say otherwise.
            (400, "INTERNAL", "UNKNOWN_ERROR"),
            (500, "PERMISSION_DENIED", "REQUEST_DENIED"),
            // An error object on a 200 still counts.
            (200, "INVALID_ARGUMENT", "INVALID_REQUEST"),
        ];
        for (http, rpc, legacy) in cases {
            let v = translate(http, &error_body(http, rpc, "why"));
            assert_eq!(checked(&v), legacy, "{http} {rpc}");
            assert_eq!(v["error_message"], "why");
        }
    }

    #[test]
    fn status_table_is_what_translate_does() {
        for (answer, legacy) in status_table() {
            let v = match answer.strip_prefix("HTTP ") {
                Some(code) => translate(code.parse().unwrap(), b"<html>error</html>"),
                None => translate(400, &error_body(400, answer, "m")),
            };
            assert_eq!(checked(&v), *legacy, "{answer}");
        }
    }

    #[test]
    fn unknown_rpc_status_falls_back_to_http_code_then_error_code() {
        let v = translate(429, &error_body(429, "SOMETHING_NEW", "slow down"));
        assert_eq!(checked(&v), "OVER_QUERY_LIMIT");
        let v = translate(200, br#"{"error": {"code": 403, "message": "no"}}"#);
        assert_eq!(checked(&v), "REQUEST_DENIED");
        let v = translate(200, br#"{"error": "bad"}"#);
        assert_eq!(checked(&v), "UNKNOWN_ERROR");
        assert_eq!(v["error_message"], "places service answered HTTP 200");
        let v = translate(400, br#"{"error": {"status": "INVALID_ARGUMENT"}}"#);
        assert_eq!(
            v["error_message"],
            "places service answered INVALID_ARGUMENT"
        );
        let v = translate(200, br#"{"error": {"code": 429, "message": ""}}"#);
        assert_eq!(checked(&v), "OVER_QUERY_LIMIT");
        assert_eq!(v["error_message"], "places service answered error 429");
    }

    #[test]
    fn http_429_is_over_query_limit() {
        let v = translate(
            429,
            &error_body(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'SearchNearby requests'.",
            ),
        );
        assert_eq!(checked(&v), "OVER_QUERY_LIMIT");
        assert_eq!(
            v["error_message"],
            "Quota exceeded for quota metric 'SearchNearby requests'."
        );
        let bare = translate(429, b"");
        assert_eq!(checked(&bare), "OVER_QUERY_LIMIT");
        assert_eq!(bare["error_message"], "places service answered HTTP 429");
    }

    #[test]
    fn http_500_with_html_body_is_unknown_error() {
        let html = b"<!DOCTYPE html>\n<html><body><h1>500 Internal Server Error</h1></body></html>";
        let v = translate(500, html);
        assert_eq!(checked(&v), "UNKNOWN_ERROR");
        assert_eq!(v["error_message"], "places service answered HTTP 500");
        let v = translate(503, b"{}");
        assert_eq!(checked(&v), "UNKNOWN_ERROR");
        assert_eq!(v["error_message"], "places service answered HTTP 503");
        // Places in an error answer are not trusted.
        let v = translate(502, RECORDED.as_bytes());
        assert_eq!(checked(&v), "UNKNOWN_ERROR");
    }

    #[test]
    fn non_json_success_is_unknown_error() {
        for body in [
            &b"<html>hello</html>"[..],
            b"",
            b"\xff\xfe\x00garbage",
            b"{\"places\": [",
        ] {
            let v = translate(200, body);
            assert_eq!(checked(&v), "UNKNOWN_ERROR");
            assert_eq!(
                v["error_message"],
                "places service answered with something that is not JSON"
            );
        }
        assert_eq!(
            translate(200, b"[1, 2]")["error_message"],
            "places service answered with JSON that is not an object"
        );
        assert_eq!(
            translate(200, br#"{"places": {"id": "x"}}"#)["error_message"],
            "places service answered with \"places\" that is not a list"
        );
    }

    #[test]
    fn long_error_messages_are_cut() {
        let long = "é".repeat(MAX_ERROR_MESSAGE * 3);
        let v = translate(400, &error_body(400, "INVALID_ARGUMENT", &long));
        let message = v["error_message"].as_str().unwrap();
        assert_eq!(message.chars().count(), MAX_ERROR_MESSAGE);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let mut seeds: Vec<Vec<u8>> = vec![
            RECORDED.as_bytes().to_vec(),
            error_body(403, "PERMISSION_DENIED", "no").to_vec(),
            b"1e400".to_vec(),
            br#"{"places": [{"location": {"latitude": 1e308, "longitude": -1e308}, "userRatingCount": 99999999999999999999999}]}"#.to_vec(),
            "[".repeat(10_000).into_bytes(),
            br#"{"error": {"code": 70000, "status": 5, "message": 3}}"#.to_vec(),
            br#"{"error": {"code": -1, "status": null}}"#.to_vec(),
        ];
        // Deterministic mutations of the seeds: flip, drop and cut bytes.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut bytes = seeds[(next() % 7) as usize].clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % bytes.len().max(1);
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = next() as u8,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            seeds.push(bytes);
        }
        for body in &seeds {
            for http in [0, 200, 204, 302, 400, 403, 429, 500, u16::MAX] {
                checked(&translate(http, body));
            }
        }
    }
}

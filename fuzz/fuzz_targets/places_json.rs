//! The places JSON paths on any bytes: the Places API (New) translation with any HTTP
//! status, and the legacy path (any JSON, rendered as the legacy service does). Never
//! panics; the translation is always a legacy-shaped object; rendered JSON has no blank
//! line and no trailing newline and parses back to the same value, keys in the same order.
//!
//! serde_json without its `float_roundtrip` feature parses some numbers one unit in the
//! last place off (`6.666666666666667e44`, `-120.65487365123505`), so numbers that are
//! floats on either side are compared to within a few units in the last place; see
//! `legacy_places_numbers_pass_through_unchanged` in tests/properties.rs.

#![no_main]

use herd::places::{google_new, render};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Renders `value` and checks the text is what SPEC §4 allows and means the same.
fn check_render(value: &Value) {
    let text = render(value);
    assert!(!text.contains("\n\n"), "{text}");
    assert!(!text.ends_with('\n'), "{text}");
    let back: Value = serde_json::from_str(&text).expect("rendered JSON parses");
    assert!(same(&back, value), "{back:?} is not {value:?}\n{text}");
}

/// Equal, objects' keys in the same order, floats to within a few units in the last
/// place (see the module doc).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(vx, vy)| same(vx, vy))
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-15 * x.abs().max(y.abs()),
                _ => false,
            }
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((status, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    // Mostly statuses a server might send, sometimes any u16.
    let raw = u16::from_le_bytes(*status);
    let http = if raw & 0x8000 == 0 {
        100 + raw % 500
    } else {
        raw
    };

    let answer = google_new::translate(http, body);
    let top = answer.as_object().expect("translate gives an object");
    let keys: Vec<&str> = top.keys().map(String::as_str).collect();
    let status = top.get("status").and_then(Value::as_str).expect("a status");
    let results = top
        .get("results")
        .and_then(Value::as_array)
        .expect("results");
    assert!(results.len() <= google_new::MAX_RESULTS);
    if matches!(status, "OK" | "ZERO_RESULTS") {
        assert_eq!(keys, ["html_attributions", "results", "status"]);
        assert_eq!(status == "OK", !results.is_empty());
    } else {
        assert_eq!(
            keys,
            ["error_message", "html_attributions", "results", "status"]
        );
        assert!(results.is_empty());
        let message = top["error_message"].as_str().expect("a message");
        assert!(message.chars().count() <= google_new::MAX_ERROR_MESSAGE);
    }
    check_render(&answer);

    // The legacy path: whatever JSON the service answered is rendered as is.
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        check_render(&value);
    }

    // The request body for any coordinates, radius and bound is JSON.
    if let Some((numbers, _)) = body.split_first_chunk::<25>() {
        let f = |i: usize| {
            let bytes: [u8; 8] = numbers[i..i + 8].try_into().expect("8 bytes");
            f64::from_le_bytes(bytes)
        };
        let request = google_new::request_body(f(0), f(8), f(16), usize::from(numbers[24]));
        let request: Value = serde_json::from_str(&request).expect("request bodies are JSON");
        let count = request["maxResultCount"].as_u64().expect("a count");
        assert!((1..=google_new::MAX_RESULTS as u64).contains(&count));
    }
});

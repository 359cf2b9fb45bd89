//! WHATSAT against a places service that fails in every way it can: an error object in
//! the legacy shape, never a hang or a dropped connection.

mod common;

use common::*;
use herd::places::{MAX_PLACES_RESPONSE, PLACES_TIMEOUT};
use herd::server::Secrets;
use std::time::{Duration, Instant};

fn herd_with(url: &str) -> Herd {
    Herd::start_with(
        &["A"],
        &[],
        &format!("places google-legacy {url}\n"),
        |_| Secrets {
            herd_secret: None,
            places_key: Some("k3y".into()),
        },
    )
}

/// IAMAT then WHATSAT at A; returns the parsed JSON and how long the WHATSAT took.
fn whatsat(herd: &Herd, bound: usize) -> (serde_json::Value, Duration) {
    static TIME: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let time = TIME.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut c = herd.client("A");
    c.send(&format!("IAMAT k +34.068930-118.445127 {time}\n"));
    let at = c.line();
    let start = Instant::now();
    c.send(&format!("WHATSAT k 10 {bound}\n"));
    assert_eq!(c.line(), at);
    let json = c.read_json_reply();
    assert!(!json.contains("\n\n") && !json.ends_with('\n'));
    (
        serde_json::from_str(&json).expect("JSON reply"),
        start.elapsed(),
    )
}

fn assert_unknown_error(value: &serde_json::Value, says: &str) {
    assert_eq!(value["status"], "UNKNOWN_ERROR", "{value}");
    assert_eq!(value["results"], serde_json::json!([]), "{value}");
    assert_eq!(value["html_attributions"], serde_json::json!([]), "{value}");
    let message = value["error_message"].as_str().expect("error_message");
    assert!(message.contains(says), "{message:?} should say {says:?}");
    assert!(!message.contains("k3y"));
}

#[test]
fn results_are_cut_to_the_bound() {
    let places = StandIn::start(Answer::Reply(200, legacy_body(20)));
    let herd = herd_with(&places.legacy_url());
    for bound in [1, 7, 20] {
        let (value, _) = whatsat(&herd, bound);
        assert_eq!(value["results"].as_array().unwrap().len(), bound);
        assert_eq!(value["results"][0]["name"], "Place 0");
    }
}

#[test]
fn an_unreachable_service() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let herd = herd_with(&format!("http://127.0.0.1:{port}/x"));
    let (value, _) = whatsat(&herd, 5);
    assert_unknown_error(&value, "refused");
}

#[test]
fn a_service_that_answers_something_not_json() {
    let places = StandIn::start(Answer::Reply(200, "<html>nope</html>".into()));
    let herd = herd_with(&places.legacy_url());
    let (value, _) = whatsat(&herd, 5);
    assert_unknown_error(&value, "not JSON");
    places.set(Answer::Reply(200, "[1, 2]".into()));
    let (value, _) = whatsat(&herd, 5);
    assert_unknown_error(&value, "not an object");
}

#[test]
fn a_service_that_hangs_up() {
    let places = StandIn::start(Answer::Hangup);
    let herd = herd_with(&places.legacy_url());
    let (value, _) = whatsat(&herd, 5);
    assert_unknown_error(&value, "places service");
}

#[test]
fn an_answer_over_the_size_bound() {
    let filler = "x".repeat(MAX_PLACES_RESPONSE as usize);
    let places = StandIn::start(Answer::Reply(
        200,
        format!(r#"{{"html_attributions":[],"results":[],"status":"OK","pad":"{filler}"}}"#),
    ));
    let herd = herd_with(&places.legacy_url());
    let (value, _) = whatsat(&herd, 5);
    assert_unknown_error(&value, "larger than");
}

#[test]
fn a_slow_service_times_out_and_other_clients_are_served_meanwhile() {
    let places = StandIn::start(Answer::Slow(
        PLACES_TIMEOUT + Duration::from_secs(3),
        legacy_body(2),
    ));
    let herd = herd_with(&places.legacy_url());
    let waiting = std::thread::spawn({
        let addr = herd.addr("A");
        move || {
            let mut c = Client::connect(&addr);
            c.send("IAMAT slow +1-2 1\n");
            c.line();
            let start = Instant::now();
            c.send("WHATSAT slow 1 1\n");
            c.line();
            let json = c.read_json_reply();
            (json, start.elapsed())
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let mut other = herd.client("A");
    other.send("IAMAT quick +1-2 1\n");
    assert!(other.line().starts_with("AT A "));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a slow places request delayed another client"
    );
    let (json, took) = waiting.join().unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_unknown_error(&value, "did not answer");
    assert!(
        took >= PLACES_TIMEOUT && took < PLACES_TIMEOUT + Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn an_error_answer_from_the_service_is_passed_through() {
    let body = r#"{"error_message":"The provided API key is invalid.","html_attributions":[],"results":[],"status":"REQUEST_DENIED"}"#;
    let places = StandIn::start(Answer::Reply(200, body.into()));
    let herd = herd_with(&places.legacy_url());
    let (value, _) = whatsat(&herd, 5);
    assert_eq!(value["status"], "REQUEST_DENIED");
}

/// A Places API (New) answer in the shape Google returns for a field-masked request.
const NEW_API_ANSWER: &str = r#"{
  "places": [
    {
      "id": "ChIJ1",
      "types": ["university", "point_of_interest", "establishment"],
      "formattedAddress": "Los Angeles, CA 90095, USA",
      "location": {"latitude": 34.068921, "longitude": -118.4451811},
      "rating": 4.6,
      "userRatingCount": 5612,
      "businessStatus": "OPERATIONAL",
      "displayName": {"text": "University of California, Los Angeles", "languageCode": "en"},
      "shortFormattedAddress": "Los Angeles"
    },
    {
      "id": "ChIJ2",
      "types": ["cafe"],
      "location": {"latitude": 34.07, "longitude": -118.44},
      "displayName": {"text": "Café Ω", "languageCode": "en"},
      "formattedAddress": "Westwood, Los Angeles"
    }
  ]
}"#;

#[test]
fn the_new_api_is_asked_the_way_google_checks_and_answered_in_the_legacy_shape() {
    let places = StandIn::start(Answer::Reply(200, NEW_API_ANSWER.into()));
    let herd = Herd::start_with(
        &["A"],
        &[],
        &format!(
            "places google http://{}/v1/places:searchNearby\n",
            places.addr
        ),
        |_| Secrets {
            herd_secret: None,
            places_key: Some("new-api-key".into()),
        },
    );
    let (value, _) = whatsat(&herd, 7);
    let req = places.requests().pop().expect("a request");
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/v1/places:searchNearby");
    assert_eq!(req.header("X-Goog-Api-Key"), Some("new-api-key"));
    assert_eq!(
        req.header("X-Goog-FieldMask"),
        Some(herd::places::google_new::FIELD_MASK)
    );
    assert!(req
        .header("Content-Type")
        .unwrap_or("")
        .starts_with("application/json"));
    assert!(req.query("key").is_none(), "the key must not go in the URL");
    let body: serde_json::Value = serde_json::from_str(&req.body).expect("JSON body");
    assert_eq!(body["maxResultCount"], 7);
    let circle = &body["locationRestriction"]["circle"];
    assert_eq!(circle["center"]["latitude"], 34.06893);
    assert_eq!(circle["center"]["longitude"], -118.445127);
    assert_eq!(circle["radius"], 10000.0);

    assert_eq!(value["status"], "OK");
    let results = value["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let first = &results[0];
    assert_eq!(first["name"], "University of California, Los Angeles");
    assert_eq!(first["place_id"], "ChIJ1");
    assert_eq!(first["geometry"]["location"]["lat"], 34.068921);
    assert_eq!(first["geometry"]["location"]["lng"], -118.4451811);
    assert_eq!(first["vicinity"], "Los Angeles");
    assert_eq!(first["rating"], 4.6);
    assert_eq!(first["user_ratings_total"], 5612);
    assert_eq!(first["business_status"], "OPERATIONAL");
    assert_eq!(results[1]["name"], "Café Ω");
    assert!(results[1].get("rating").is_none());

    places.set(Answer::Reply(
        403,
        r#"{"error":{"code":403,"message":"API key not valid.","status":"PERMISSION_DENIED"}}"#
            .into(),
    ));
    let (value, _) = whatsat(&herd, 3);
    assert_eq!(value["status"], "REQUEST_DENIED");
    assert_eq!(value["error_message"], "API key not valid.");
    places.set(Answer::Reply(429, "{}".into()));
    assert_eq!(whatsat(&herd, 3).0["status"], "OVER_QUERY_LIMIT");
    places.set(Answer::Reply(200, "{}".into()));
    assert_eq!(whatsat(&herd, 3).0["status"], "ZERO_RESULTS");
}

#[test]
fn a_deeply_nested_answer_is_refused_not_a_crash() {
    let depth = 100_000;
    let nested = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let places = StandIn::start(Answer::Reply(200, nested));
    let herd = herd_with(&places.legacy_url());
    let (value, _) = whatsat(&herd, 5);
    assert_unknown_error(&value, "nested deeper");
}

#[test]
fn with_no_places_line_and_no_key_the_built_in_data_answers_nearest_first() {
    let herd = Herd::start(&["A"], &[], "");
    let (value, _) = whatsat(&herd, 10);
    assert_eq!(value["status"], "OK", "{value}");
    let results = value["results"].as_array().unwrap();
    assert_eq!(results.len(), 10);
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for near in ["Westwood", "Brentwood", "Beverly Hills"] {
        assert!(names.contains(&near), "{near} missing from {names:?}");
    }
    let (lat0, lng0) = (34.068930_f64.to_radians(), (-118.445127_f64).to_radians());
    let mut last = 0.0;
    for r in results {
        let loc = &r["geometry"]["location"];
        let (lat, lng) = (
            loc["lat"].as_f64().unwrap().to_radians(),
            loc["lng"].as_f64().unwrap().to_radians(),
        );
        let h = ((lat - lat0) / 2.0).sin().powi(2)
            + lat.cos() * lat0.cos() * ((lng - lng0) / 2.0).sin().powi(2);
        let d = 2.0 * 6_371_008.8 * h.sqrt().asin();
        assert!(
            d <= 10_000.0 && d + 1e-6 >= last,
            "{names:?} not nearest first"
        );
        last = d;
        assert!(r["place_id"].as_str().unwrap().starts_with("geonames:"));
        assert_eq!(r["types"], serde_json::json!(["locality", "political"]));
    }
    herd.wait_log("A", "places: offline");
}

#[test]
fn an_answer_nested_past_the_depth_bound_is_refused() {
    use herd::places::MAX_JSON_DEPTH;
    let nest = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let places = StandIn::start(Answer::Reply(
        200,
        format!(
            r#"{{"results":[],"status":"OK","deep":{}}}"#,
            nest(MAX_JSON_DEPTH)
        ),
    ));
    let herd = herd_with(&places.legacy_url());
    let (value, _) = whatsat(&herd, 5);
    assert_unknown_error(&value, "nested deeper");
    // One level less is passed on.
    places.set(Answer::Reply(
        200,
        format!(
            r#"{{"results":[],"status":"OK","deep":{}}}"#,
            nest(MAX_JSON_DEPTH - 1)
        ),
    ));
    let (value, _) = whatsat(&herd, 5);
    assert_eq!(value["status"], "OK");
}

#[test]
fn a_geojson_file_of_osm_points_answers_nearest_first_with_names_and_types() {
    let sample =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/osm-helsinki-sample.geojson");
    let herd = Herd::start(
        &["A"],
        &[],
        &format!("places offline {}\n", sample.display()),
    );
    let mut c = herd.client("A");
    // Senate Square, Helsinki.
    c.send("IAMAT tourist +60.170833+24.9525 1\n");
    let at = c.line();
    c.send("WHATSAT tourist 0.1 5\n");
    assert_eq!(c.line(), at);
    let value: serde_json::Value = serde_json::from_str(&c.read_json_reply()).expect("JSON");
    assert_eq!(value["status"], "OK", "{value}");
    let results = value["results"].as_array().expect("results");
    let summary: Vec<(&str, &str, String)> = results
        .iter()
        .map(|r| {
            (
                r["name"].as_str().expect("name"),
                r["place_id"].as_str().expect("place_id"),
                r["types"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "Tuomiokirkon krypta",
                "node/4371604494",
                r#"["attraction"]"#.into()
            ),
            (
                "Johan Vilhelm Snellman",
                "node/2636487758",
                r#"["memorial"]"#.into()
            ),
            (
                "Kuparikonstruktio, Suomen Pankin suihkukaivo",
                "node/5297663637",
                r#"["artwork"]"#.into()
            ),
            (
                "Suomen Pankin rahamuseo",
                "node/606949807",
                r#"["museum"]"#.into()
            ),
            (
                "Kaksitoista apostolia",
                "node/5297652324",
                r#"["artwork"]"#.into()
            ),
        ]
    );
    assert_eq!(results[3]["vicinity"], "Snellmaninkatu 2, Helsinki");
    assert_eq!(
        results[0]["geometry"]["location"],
        serde_json::json!({"lat": 60.170682, "lng": 24.9521142})
    );
    herd.wait_log("A", "places: offline");
}

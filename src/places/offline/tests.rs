//! Tests of the offline places: the index against brute force on the built-in data and
//! on synthetic places crowding the poles and the antimeridian, the answers' shape, the
//! built-in data file's format and damage, and user files' errors.

use super::file::parse as parse_places_json;
use super::index::{chord2, chord2_limit, unit_vector, EARTH_RADIUS_M};
use super::*;
use serde_json::json;
use std::f64::consts::PI;

/// Great-circle distance in metres for a squared chord (haversine: θ = 2·asin(c / 2)).
fn distance_m(chord2: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * (chord2.sqrt() / 2.0).min(1.0).asin()
}

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

/// The answer by scanning every place: the slots, nearest first (ties in place-id
/// order), cut to `bound`.
fn brute_force(
    data: &Offline,
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
    found.sort_by(|a, b| {
        (a.0.total_cmp(&b.0)).then_with(|| data.tie_key(a.1).cmp(&data.tie_key(b.1)))
    });
    found.truncate(bound);
    found.into_iter().map(|(_, slot)| slot).collect()
}

/// Every place's coordinates by slot, as its answer gives them.
fn coords(data: &Offline) -> Vec<(f64, f64)> {
    (0..data.index.len() as u32)
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
    nearest(&mut found, bound, |slot| data.tie_key(slot));
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
        let expected = brute_force(data, vectors, lat, lng, radius_m, bound);
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
                brute_force(&data, &vectors, lat, lng, radius_m, 20),
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
    // Everywhere the vicinity names the first-level region, where GeoNames has one.
    let paris = data.nearby(48.8566, 2.3522, 3_000.0, 20);
    assert!(names(&paris).contains(&"Paris"), "{:?}", names(&paris));
    assert_eq!(paris["results"][0]["name"], "Paris 04 Hôtel-de-Ville");
    assert_eq!(paris["results"][0]["vicinity"], "Île-de-France, France");
    let milan = data.nearby(45.4643, 9.1895, 1_000.0, 1);
    assert_eq!(names(&milan), ["Milan"]);
    assert_eq!(milan["results"][0]["vicinity"], "Lombardy, Italy");
    // Singapore has no first-level regions in GeoNames (admin1 code 00): the country.
    let singapore = data.nearby(1.28967, 103.85007, 2_000.0, 1);
    assert_eq!(singapore["results"][0]["vicinity"], "Singapore");
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
    println!("open the built-in data: {:?}", start.elapsed());
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

/// A data file written by hand from the format's description in tools/build-places.py:
/// places (id, latitude and longitude times 10^5, vicinity, name) given in index order.
#[cfg(feature = "builtin-places")]
fn data_file(places: &[(u32, i32, i32, u16, &str)], vicinities: &[&str]) -> Vec<u8> {
    let names: String = places.iter().map(|p| p.4).collect();
    let vic_text: String = vicinities.concat();
    let mut file = builtin::MAGIC.to_vec();
    for count in [places.len(), vicinities.len(), names.len(), vic_text.len()] {
        file.extend((count as u32).to_le_bytes());
    }
    let degrees = |p: &(u32, i32, i32, u16, &str)| (f64::from(p.1) / 1e5, f64::from(p.2) / 1e5);
    let mut rows = vec![0u32; index::ROWS + 1];
    let mut previous = (0, f64::NEG_INFINITY);
    for p in places {
        let (lat, lng) = degrees(p);
        let key = (index::row_of(lat), lng);
        assert!(key >= previous, "places are not in index order");
        previous = key;
        rows[key.0 + 1] += 1;
    }
    for r in 0..index::ROWS {
        rows[r + 1] += rows[r];
    }
    rows.iter().for_each(|r| file.extend(r.to_le_bytes()));
    let mut name_end = 0u32;
    for p in places {
        let (lat, lng) = degrees(p);
        name_end += p.4.len() as u32;
        file.extend(lng.to_le_bytes());
        let xyz = unit_vector(lat, lng);
        xyz.iter().for_each(|c| file.extend(c.to_le_bytes()));
        file.extend(lat.to_le_bytes());
        file.extend(p.0.to_le_bytes());
        file.extend(name_end.to_le_bytes());
        file.extend(p.3.to_le_bytes());
    }
    let mut end = 0u32;
    for v in vicinities {
        end += v.len() as u32;
        file.extend(end.to_le_bytes());
    }
    file.extend(names.as_bytes());
    file.extend(vic_text.as_bytes());
    file
}

#[cfg(feature = "builtin-places")]
fn read_data(file: Vec<u8>) -> Result<Offline, String> {
    let (index, columns) = builtin::read(std::borrow::Cow::Owned(file))?;
    Ok(Offline {
        index,
        places: Places::GeoNames(columns),
    })
}

/// Three places on both sides of the antimeridian and one south, in a hand-made file.
#[cfg(feature = "builtin-places")]
fn small_data_file() -> Vec<u8> {
    data_file(
        &[
            (134, -200_000, 0, 1, "C"),
            (5, 100_000, -17_999_000, 1, "Ä"),
            (6, 100_001, 18_000_000, 0, "B"),
        ],
        &["Gamma", "Alpha, Beta"],
    )
}

#[cfg(feature = "builtin-places")]
#[test]
fn data_file_format_reads_as_documented() {
    let data = read_data(small_data_file()).expect("reads");
    assert_eq!(
        coords(&data),
        [(-2.0, 0.0), (1.0, -179.99), (1.00001, 180.0)]
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
    // At equal distances the lower GeoNames id comes first, whatever the slot order.
    let twins = data_file(
        &[
            (9, 0, 0, 0, "Nine"),
            (3, 0, 0, 0, "Three"),
            (4, 0, 1, 0, "Four"),
        ],
        &["V"],
    );
    let data = read_data(twins).expect("reads");
    assert_eq!(
        names(&data.nearby(0.0, 0.0, 10.0, 5)),
        ["Three", "Nine", "Four"]
    );
    assert_eq!(names(&data.nearby(0.0, 0.0, 10.0, 1)), ["Three"]);
}

#[cfg(feature = "builtin-places")]
#[test]
fn builtin_data_is_whole_and_its_index_is_the_one_built_here() {
    let (index, columns) =
        builtin::read(std::borrow::Cow::Borrowed(builtin::BLOB)).expect("the built-in data reads");
    columns.check().expect("every column is consistent");
    let coords: Vec<(f64, f64)> = (0..index.len()).map(|slot| columns.coords(slot)).collect();
    assert_eq!(coords.len(), 170_391);
    let here = Index::build(&coords);
    // The same rows, the same order (each place in its own slot, as the data is stored
    // in index order), the same longitudes; the unit vectors come from Python's libm
    // and may differ from this platform's in the last bit.
    for r in 0..index::ROWS {
        assert_eq!(index.row(r), here.row(r), "row {r}");
    }
    let mut worst = 0.0f64;
    for i in 0..coords.len() {
        assert_eq!(here.slot(i) as usize, i, "position {i}");
        assert_eq!(index.slot(i) as usize, i);
        assert_eq!(
            index.lng(i).to_bits(),
            here.lng(i).to_bits(),
            "position {i}"
        );
        let (a, b) = (index.xyz(i), here.xyz(i));
        worst = (0..3).map(|k| (a[k] - b[k]).abs()).fold(worst, f64::max);
    }
    assert!(
        worst <= 4.0 * f64::EPSILON,
        "unit vectors differ by {worst}"
    );
}

#[cfg(feature = "builtin-places")]
#[test]
fn damaged_data_files_are_errors_or_answers_never_panics() {
    let good = builtin::BLOB;
    for len in [0, 4, 8, 23, 24, 100, good.len() / 2, good.len() - 1] {
        assert!(read_data(good[..len].to_vec()).is_err(), "cut to {len}");
    }
    let mut longer = good.to_vec();
    longer.push(0);
    assert!(read_data(longer).is_err(), "one byte too many");
    // Header fields that promise more (or less) than the file holds.
    for (at, delta) in [(8usize, 1i64), (8, -1), (12, 1), (16, 1), (20, -1)] {
        let mut bad = good.to_vec();
        let field = u32::from_le_bytes(bad[at..at + 4].try_into().expect("4 bytes"));
        let changed = (i64::from(field) + delta) as u32;
        bad[at..at + 4].copy_from_slice(&changed.to_le_bytes());
        assert!(read_data(bad).is_err(), "field at {at} changed by {delta}");
    }
    for (at, value) in [(8usize, u32::MAX), (12, 70_000)] {
        let mut bad = good.to_vec();
        bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
        assert!(read_data(bad).is_err(), "{value} at {at}");
    }
    let mut bad = good.to_vec();
    bad[0] ^= 1;
    assert!(read_data(bad).is_err(), "magic");
    // Damage past the header is not checked at start (that would read every page): any
    // changed bytes still give an answer of the legacy shape, never a panic.
    let mut rng = Rng(3);
    let small = small_data_file();
    for _ in 0..5000 {
        let mut bad = small.clone();
        for _ in 0..1 + rng.below(3) {
            let at = 24 + rng.below(bad.len() - 24);
            bad[at] = rng.next() as u8;
        }
        let data = read_data(bad).expect("the header is intact");
        for (lat, lng) in [(1.0, 180.0), (-2.0, 0.0), (0.0, 0.0)] {
            let answer = data.nearby(lat, lng, 5e6, 20);
            for place in answer["results"].as_array().expect("results") {
                assert!(place["name"].is_string() && place["vicinity"].is_string());
            }
        }
    }
    // The real file with damage anywhere, and rows out of order.
    let mut big = good.to_vec();
    for _ in 0..2000 {
        let at = 24 + rng.below(big.len() - 24);
        big[at] = rng.next() as u8;
    }
    big[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    big[24 + 4 * 900..24 + 4 * 901].copy_from_slice(&7u32.to_le_bytes());
    let data = read_data(big).expect("the header is intact");
    for _ in 0..200 {
        let (lat, lng) = (rng.range(-90.0, 90.0), rng.range(-180.0, 180.0));
        let _ = data.nearby(lat, lng, 50_000.0, 20);
    }
}

#[test]
fn geojson_point_features_become_places() {
    let text = r#"{"type": "FeatureCollection", "features": [
{"type": "Feature", "id": "node/1", "properties": {"name": "Café Ekberg", "amenity": "cafe;bakery",
  "addr:street": "Bulevardi", "addr:housenumber": "9", "addr:city": "Helsinki"},
  "geometry": {"type": "Point", "coordinates": [24.9384, 60.1648]}},
{"type": "Feature", "id": 7, "properties": {"name:en": "The Shop", "shop": "yes", "addr:city": "Helsinki"},
  "geometry": {"type": "Point", "coordinates": [24.9390, 60.1650, 12.5]}},
{"type": "Feature", "properties": {"@id": "node/3", "official_name": "Old Church", "historic": "church", "name": ""},
  "geometry": {"type": "Point", "coordinates": [24.9370, 60.1645]}},
{"type": "Feature", "id": "way/4", "properties": {"name": "A Street"},
  "geometry": {"type": "LineString", "coordinates": [[24.93, 60.16], [24.94, 60.17]]}},
{"type": "Feature", "id": "node/5", "properties": {"name": "Nowhere"}, "geometry": null},
{"type": "Feature", "id": "node/6", "properties": {"amenity": "bench"},
  "geometry": {"type": "Point", "coordinates": [24.9384, 60.1648]}},
{"type": "Feature", "properties": {"osm_id": 8, "name": "Far"}, "geometry": {"type": "Point", "coordinates": [0, 0]}}
]}"#;
    let data = parse_places_json(text.as_bytes()).expect("parses");
    let answer = data.nearby(60.1648, 24.9384, 1_000.0, 5);
    assert_eq!(
        serde_json::to_string(&answer["results"]).expect("serializes"),
        concat!(
            r#"[{"geometry":{"location":{"lat":60.1648,"lng":24.9384}},"name":"Café Ekberg","place_id":"node/1","types":["cafe","bakery"],"vicinity":"Bulevardi 9, Helsinki"},"#,
            r#"{"geometry":{"location":{"lat":60.165,"lng":24.939}},"name":"The Shop","place_id":"7","types":["shop"],"vicinity":"Helsinki"},"#,
            r#"{"geometry":{"location":{"lat":60.1645,"lng":24.937}},"name":"Old Church","place_id":"node/3","types":["church"]}]"#,
        )
    );
    assert_eq!(place_ids(&data.nearby(0.0, 0.0, 1.0, 5)), ["8"]);
    assert_eq!(
        data.index.len(),
        4,
        "the way, the null geometry and the bench are skipped"
    );
}

#[test]
fn geojson_errors_name_the_feature_and_its_line() {
    let point = r#""geometry": {"type": "Point", "coordinates": [1, 2]}"#;
    let collection = |features: &str| {
        format!("{{\"type\": \"FeatureCollection\",\n\"features\": [\n{features}]}}")
    };
    let ok = format!(r#"{{"type": "Feature", "id": "a", "properties": {{"name": "A"}}, {point}}}"#);
    let cases: Vec<(String, &str)> = vec![
        (
            collection(&format!("{ok},\n{ok},\n{{\"type\": \"Feature\", \"properties\": {{\"name\": \"B\"}}, {point}}}")),
            "5: features[2]: no id: a feature needs an \"id\", or one of the properties \"@id\", \"osm_id\" or \"id\"",
        ),
        (
            collection(&format!("{ok},\n\n{{\"type\": \"Feature\", \"id\": \"b\", \"properties\": {{\"name\": 5}}, {point}}}")),
            "5: features[1]: \"properties.name\" is not a string",
        ),
        (
            collection(r#"{"type": "Feature", "id": "b", "properties": {"name": "B"}, "geometry": {"type": "Point", "coordinates": [200, 2]}}"#),
            "3: features[0]: \"geometry.coordinates[0]\" 200 is out of range -180..=180",
        ),
        (
            collection(r#"{"type": "Feature", "id": "b", "properties": {"name": "B"}, "geometry": {"type": "Point", "coordinates": [2, -91]}}"#),
            "3: features[0]: \"geometry.coordinates[1]\" -91 is out of range -90..=90",
        ),
        (
            collection(r#"{"type": "Feature", "id": "b", "properties": {"name": "B"}, "geometry": {"type": "Point", "coordinates": [2]}}"#),
            "3: features[0]: \"geometry.coordinates\" is not [longitude, latitude]",
        ),
        (
            collection(r#"{"type": "Feature", "id": "b", "properties": {"name": "B"}, "geometry": {"type": "Point", "coordinates": ["2", 1]}}"#),
            "3: features[0]: \"geometry.coordinates[0]\" is not a number",
        ),
        (
            collection(&format!("{ok}, {{\"type\": \"Feature\", \"properties\": {{\"name\": \"B\"}}}}")),
            "3: features[1]: missing \"geometry\"",
        ),
        (
            collection(&format!("{ok},\n[1]")),
            "4: features[1]: a feature must be an object",
        ),
        (
            collection(&format!("{{\"type\": \"Point\", {point}}}")),
            "3: features[0]: \"type\" is not \"Feature\"",
        ),
        (
            collection(&format!("{{\"type\": \"Feature\", \"properties\": [], {point}}}")),
            "3: features[0]: \"properties\" is not an object",
        ),
        (
            collection(r#"{"type": "Feature", "id": "b", "properties": {"name": "B"}, "geometry": {"coordinates": [1, 2]}}"#),
            "3: features[0]: \"geometry.type\" is not a string",
        ),
        (
            "{\"type\": \"FeatureCollection\", \"features\": {}}".into(),
            "1: a FeatureCollection needs a \"features\" array",
        ),
        (
            format!("{{\"type\": \"Feature\", \"properties\": {{}}, {point}}}"),
            "1: GeoJSON \"Feature\" is not supported: expected a FeatureCollection",
        ),
        (
            r#"{"type": "Point", "coordinates": [1, 2]}"#.into(),
            "1: GeoJSON \"Point\" is not supported: expected a FeatureCollection",
        ),
        (
            collection(&format!("{ok},\n{}1{}", "[".repeat(200), "]".repeat(200))),
            "4: features[1]: recursion limit exceeded",
        ),
    ];
    for (text, expected) in &cases {
        match parse_places_json(text.as_bytes()) {
            Ok(_) => panic!("accepted {text}"),
            Err(e) => assert_eq!(&e, expected, "for {text}"),
        }
    }
}

#[test]
fn the_osm_sample_answers_nearest_first_with_names_and_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/osm-helsinki-sample.geojson");
    let data = Offline::from_json_file(&path).expect("the sample reads");
    assert_eq!(data.index.len(), 703);
    // Senate Square, Helsinki.
    let answer = data.nearby(60.170833, 24.9525, 100.0, 5);
    assert_eq!(
        names(&answer),
        [
            "Tuomiokirkon krypta",
            "Johan Vilhelm Snellman",
            "Kuparikonstruktio, Suomen Pankin suihkukaivo",
            "Suomen Pankin rahamuseo",
            "Kaksitoista apostolia",
        ]
    );
    let museum = &answer["results"][3];
    assert_eq!(museum["place_id"], "node/606949807");
    assert_eq!(museum["types"], json!(["museum"]));
    assert_eq!(answer["results"][1]["types"], json!(["memorial"]));
}

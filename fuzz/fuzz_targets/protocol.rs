//! The client protocol parser on any bytes: `parse_command` and `parse_at` never panic;
//! a command parses the same whatever white space separates its fields; an IAMAT's AT
//! line parses back to the same fields with the exact time difference; a WHATSAT's
//! radius converts to metres without losing its value.

#![no_main]

use herd::protocol::{
    fields, format_at, format_diff, parse_at, parse_command, parse_location, radius_metres,
    strip_terminator, Command, MAX_BOUND, MAX_RADIUS_KM,
};
use libfuzzer_sys::fuzz_target;

/// The receiving server's clock: a 2023 time, plus a few bits of the input so that
/// differences of both signs and many sizes come up.
const NOW_BASE: i128 = 1_700_000_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    let line = strip_terminator(data);
    let parsed = parse_command(line);

    // Field splitting: the same fields joined by single spaces parse the same.
    let plain = fields(line).collect::<Vec<_>>().join(&b' ');
    assert_eq!(parsed, parse_command(&plain));

    match parsed {
        Ok(Command::IAmAt(cmd)) => {
            let now = NOW_BASE + data.iter().map(|&b| i128::from(b)).sum::<i128>() * 7_919;
            let at = format_at("Fuzz", now, &cmd);
            let back = parse_at(&at).expect("an AT line formed from an IAMAT parses");
            assert_eq!(back.server, "Fuzz");
            assert_eq!(back.client, cmd.client);
            assert_eq!(back.location, cmd.location);
            assert_eq!(back.time_ns, cmd.time_ns);
            assert_eq!(Some(back.lat_lng), parse_location(cmd.location));
            let (lat, lng) = back.lat_lng;
            assert!(lat.abs() <= 90.0 && lng.abs() <= 180.0, "{lat} {lng}");

            let diff = at.split(' ').nth(2).expect("AT lines have six fields");
            assert_eq!(diff, format_diff(now - cmd.time_ns));
            // Read on the text, not with `parse_time`: a difference of two 19-digit
            // times has 20 digits of seconds, more than a client time may have.
            let (sign, unsigned) = diff.split_at(1);
            let (seconds, nanos) = unsigned.split_once('.').expect("a point");
            assert_eq!(nanos.len(), 9, "{at}");
            let seconds: i128 = seconds.parse().expect("digits");
            let nanos: i128 = nanos.parse().expect("digits");
            let magnitude = seconds * 1_000_000_000 + nanos;
            let value = if sign == "-" { -magnitude } else { magnitude };
            assert_eq!(value, now - cmd.time_ns, "{at}");
        }
        Ok(Command::WhatsAt(w)) => {
            assert!(
                w.radius_km > 0.0 && w.radius_km <= MAX_RADIUS_KM,
                "{}",
                w.radius
            );
            assert!((1..=MAX_BOUND).contains(&w.bound));
            let metres = radius_metres(w.radius);
            let km = metres.parse::<f64>().expect("metres is a number") / 1000.0;
            assert!(
                (km - w.radius_km).abs() <= 1e-9 * w.radius_km,
                "{} {metres}",
                w.radius
            );
        }
        Err(_) => {}
    }

    // The AT parser on any text; what it accepts is in range and re-forms the same.
    if let Ok(text) = std::str::from_utf8(line) {
        if let Some(at) = parse_at(text) {
            let (lat, lng) = at.lat_lng;
            assert!(lat.abs() <= 90.0 && lng.abs() <= 180.0, "{text:?}");
            let words: Vec<&[u8]> = fields(line).collect();
            let again = format!(
                "AT {} {} {} {} {}",
                at.server,
                std::str::from_utf8(words[2]).expect("fields of a str are UTF-8"),
                at.client,
                at.location,
                std::str::from_utf8(words[5]).expect("fields of a str are UTF-8"),
            );
            assert_eq!(parse_at(&again), Some(at));
        }
    }
});

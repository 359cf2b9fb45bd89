//! The wire protocol of SPEC §4 and §5: bytes in, typed command or typed error out;
//! typed reply in, text out. Pure: no sockets, no clock — the caller passes the time in.

/// The six white-space bytes that separate fields: space, tab, newline, carriage return,
/// form feed and vertical tab (`u8::is_ascii_whitespace` leaves out vertical tab).
pub const WHITESPACE: &[u8] = b" \t\n\r\x0c\x0b";

/// Largest |latitude| in an ISO 6709 location.
const MAX_LAT: u64 = 90;
/// Largest |longitude| in an ISO 6709 location.
const MAX_LNG: u64 = 180;
/// Largest WHATSAT radius in kilometres: the legacy Nearby Search takes at most 50 km.
pub const MAX_RADIUS_KM: f64 = 50.0;
/// Largest WHATSAT bound: one Nearby Search page holds at most 20 results.
pub const MAX_BOUND: usize = 20;

/// Longest server name, in bytes (SPEC §8). A name is copied into every AT line its
/// server forms, so bounding it bounds the AT lines peers must accept.
pub const MAX_NAME: usize = 64;

/// Longest AT line a server forms or a peer accepts, terminator excluded. An IAMAT
/// within `MAX_LINE` carries at most `MAX_LINE - 9` bytes of fields; its AT line adds
/// `AT `, a name of at most `MAX_NAME` bytes and a time difference of at most 31 bytes
/// (sign, 20 digits, point, 9 digits) and three spaces: 8,285 bytes at most. So every
/// IAMAT a server acknowledges forms an AT line every peer accepts (SPEC §5).
pub const MAX_AT_LINE: usize = crate::lines::MAX_LINE + MAX_NAME + 64;
/// Digits of a time's integer part we accept: 19 always fit a `u64` (and so `i128`
/// nanoseconds); real POSIX times have 10.
const MAX_SECONDS_DIGITS: usize = 19;
/// Nanoseconds per second.
const NANOS: i128 = 1_000_000_000;

/// True for the bytes SPEC §4 counts as white space.
pub fn is_space(b: u8) -> bool {
    // The bytes of WHITESPACE as one match (a bit test), not a search per byte: every
    // line in and out is split on this.
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The white-space separated fields of a line, leading and trailing space ignored.
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| is_space(b)).filter(|f| !f.is_empty())
}

/// [`fields`] of a `str`, as `str`s. They are split at ASCII bytes, so each is valid
/// UTF-8 already: sliced out, not checked again (checking them again was part of the
/// 11 % of a 1M-record state load's profile spent in `from_utf8`; BENCHMARKS.md).
pub fn str_fields(line: &str) -> impl Iterator<Item = &str> {
    let base = line.as_ptr() as usize;
    fields(line.as_bytes()).map(move |field| {
        let start = field.as_ptr() as usize - base;
        line.get(start..start + field.len()).unwrap_or_default()
    })
}

/// A line without its terminator: a trailing `\n`, or `\r\n`.
pub fn strip_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A valid client command, borrowing its fields from the line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<'a> {
    /// `IAMAT client location time`.
    IAmAt(IAmAt<'a>),
    /// `WHATSAT client radius bound`.
    WhatsAt(WhatsAt<'a>),
}

/// A client telling the herd where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct IAmAt<'a> {
    /// The client ID, any non-white-space text.
    pub client: &'a str,
    /// The location exactly as sent.
    pub location: &'a str,
    /// The client's send time exactly as sent.
    pub time: &'a str,
    /// The send time in nanoseconds since the epoch (fraction past 9 digits dropped).
    pub time_ns: i128,
}

/// A client asking what is near another client.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatsAt<'a> {
    /// The client whose location is wanted.
    pub client: &'a str,
    /// The radius as sent, for an exact conversion to metres.
    pub radius: &'a str,
    /// The radius in kilometres, 0 < r ≤ 50.
    pub radius_km: f64,
    /// The most places to return, 1 ≤ n ≤ 20.
    pub bound: usize,
}

/// Why a line is not a valid command. Every variant is answered with `? LINE`; the
/// variants exist for the log and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The line is empty or only white space.
    Empty,
    /// The first word is not a command.
    UnknownCommand,
    /// The command has the wrong number of fields.
    FieldCount,
    /// The line is not UTF-8.
    NotUtf8,
    /// The location is not ISO 6709 `±lat±lng` within range.
    BadLocation,
    /// The time is not POSIX seconds with an optional fraction.
    BadTime,
    /// The radius is not a number in (0, 50].
    BadRadius,
    /// The bound is not an integer in [1, 20].
    BadBound,
}

/// Parses one client line (without its terminator).
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let mut words = fields(line);
    let first = words.next().ok_or(ParseError::Empty)?;
    let rest: [&[u8]; 3] = match (words.next(), words.next(), words.next(), words.next()) {
        (Some(a), Some(b), Some(c), None) => [a, b, c],
        _ if first == b"IAMAT" || first == b"WHATSAT" => return Err(ParseError::FieldCount),
        _ => return Err(ParseError::UnknownCommand),
    };
    let [a, b, c] = rest.map(std::str::from_utf8);
    let (a, b, c) = (
        a.map_err(|_| ParseError::NotUtf8)?,
        b.map_err(|_| ParseError::NotUtf8)?,
        c.map_err(|_| ParseError::NotUtf8)?,
    );
    match first {
        b"IAMAT" => {
            parse_location(b).ok_or(ParseError::BadLocation)?;
            let time_ns = parse_time(c).ok_or(ParseError::BadTime)?;
            Ok(Command::IAmAt(IAmAt {
                client: a,
                location: b,
                time: c,
                time_ns,
            }))
        }
        b"WHATSAT" => {
            let radius_km = parse_radius(b).ok_or(ParseError::BadRadius)?;
            let bound = parse_bound(c).ok_or(ParseError::BadBound)?;
            Ok(Command::WhatsAt(WhatsAt {
                client: a,
                radius: b,
                radius_km,
                bound,
            }))
        }
        _ => Err(ParseError::UnknownCommand),
    }
}

/// Splits `[+-]digits[.digits]` off the front of `s`: returns (negative, integer digits,
/// fraction digits, rest). A sign is required when `signed`, optional otherwise.
fn split_decimal(s: &str, signed: bool) -> Option<(bool, &str, &str, &str)> {
    let (negative, s) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ if signed => return None,
        _ => (false, s),
    };
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let (int, s) = s.split_at(int_len);
    let (frac, rest) = match s.strip_prefix('.') {
        Some(after) => {
            let frac_len = after.bytes().take_while(u8::is_ascii_digit).count();
            if frac_len == 0 {
                return None;
            }
            after.split_at(frac_len)
        }
        None => ("", s),
    };
    if int.is_empty() {
        return None;
    }
    Some((negative, int, frac, rest))
}

/// The numeric value of integer digits, if it fits.
fn digits_value(int: &str) -> Option<u64> {
    if int.len() > MAX_SECONDS_DIGITS {
        return None;
    }
    int.parse().ok()
}

/// True when `int.frac` is at most `max` in absolute value, decided on the decimal text.
fn within(int: &str, frac: &str, max: u64) -> bool {
    let int = int.trim_start_matches('0');
    if int.len() > 3 {
        return false;
    }
    let value: u64 = if int.is_empty() {
        0
    } else {
        int.parse().unwrap_or(u64::MAX)
    };
    value < max || (value == max && frac.bytes().all(|d| d == b'0'))
}

/// Parses an ISO 6709 location `±DD.D±DDD.D` into (latitude, longitude) in degrees.
pub fn parse_location(s: &str) -> Option<(f64, f64)> {
    let (lat_neg, lat_int, lat_frac, rest) = split_decimal(s, true)?;
    let (lng_neg, lng_int, lng_frac, rest) = split_decimal(rest, true)?;
    if !rest.is_empty()
        || !within(lat_int, lat_frac, MAX_LAT)
        || !within(lng_int, lng_frac, MAX_LNG)
    {
        return None;
    }
    let value = |neg: bool, int: &str, frac: &str| -> Option<f64> {
        let v = decimal_value(int, frac)?;
        Some(if neg { -v } else { v })
    };
    Some((
        value(lat_neg, lat_int, lat_frac)?,
        value(lng_neg, lng_int, lng_frac)?,
    ))
}

/// Parses POSIX seconds with an optional fraction into integer nanoseconds. Fraction
/// digits past the ninth are not meaningful and are dropped.
pub fn parse_time(s: &str) -> Option<i128> {
    let (negative, int, frac, rest) = split_decimal(s, false)?;
    if !rest.is_empty() {
        return None;
    }
    let seconds = i128::from(digits_value(int)?);
    let mut nanos: i128 = 0;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |d| d - b'0');
        nanos = nanos * 10 + i128::from(digit);
    }
    let total = seconds * NANOS + nanos;
    Some(if negative { -total } else { total })
}

/// Parses a WHATSAT radius: a decimal number of kilometres, 0 < r ≤ 50.
fn parse_radius(s: &str) -> Option<f64> {
    let (negative, int, frac, rest) = split_decimal(s, false)?;
    if negative || !rest.is_empty() || !within(int, frac, MAX_RADIUS_KM as u64) {
        return None;
    }
    if int.bytes().chain(frac.bytes()).all(|d| d == b'0') {
        return None;
    }
    decimal_value(int, frac)
}

/// `int.frac` (either part may be empty) as an `f64`, assembled in a stack buffer: every
/// stored or flooded AT line has its location parsed, so this path allocates nothing.
fn decimal_value(int: &str, frac: &str) -> Option<f64> {
    let mut buf = [0u8; 64];
    let len = int.len() + frac.len() + 2;
    if len > buf.len() {
        return format!("{int}.{frac}0").parse().ok();
    }
    buf[..int.len()].copy_from_slice(int.as_bytes());
    buf[int.len()] = b'.';
    buf[int.len() + 1..len - 1].copy_from_slice(frac.as_bytes());
    buf[len - 1] = b'0';
    std::str::from_utf8(&buf[..len]).ok()?.parse().ok()
}

/// Parses a WHATSAT bound: an integer, 1 ≤ n ≤ 20.
fn parse_bound(s: &str) -> Option<usize> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|d| d.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    if digits.len() > 2 {
        return None;
    }
    let n: usize = digits.parse().unwrap_or(0);
    (1..=MAX_BOUND).contains(&n).then_some(n)
}

/// A WHATSAT radius in metres, converted exactly on the decimal text (`1.5` → `1500`),
/// so the places query never carries float noise like `1100.0000000000002`.
pub fn radius_metres(radius: &str) -> String {
    let radius = radius.strip_prefix('+').unwrap_or(radius);
    let (int, frac) = radius.split_once('.').unwrap_or((radius, ""));
    let mut frac = frac.to_string();
    while frac.len() < 3 {
        frac.push('0');
    }
    let (moved, frac) = frac.split_at(3);
    let int = format!("{int}{moved}");
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

/// Formats a time difference in nanoseconds with an explicit sign and exactly nine
/// fraction digits: `+0.263873386`, `-1.000000000`.
pub fn format_diff(diff_ns: i128) -> String {
    let mut out = Vec::with_capacity(24);
    push_diff(&mut out, diff_ns);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends a time difference as [`format_diff`] writes it.
fn push_diff(out: &mut Vec<u8>, diff_ns: i128) {
    out.push(if diff_ns < 0 { b'-' } else { b'+' });
    let abs = diff_ns.unsigned_abs();
    let nanos = NANOS.unsigned_abs();
    match u64::try_from(abs / nanos) {
        Ok(secs) => push_decimal(out, secs, 1),
        // Past 584 years: rare enough for `fmt`.
        Err(_) => out.extend_from_slice((abs / nanos).to_string().as_bytes()),
    }
    out.push(b'.');
    push_decimal(out, (abs % nanos) as u64, 9);
}

/// Appends `n` in decimal, zero-padded to at least `width` digits (at most 20).
/// Without `fmt`: it runs for every update a server accepts or stores, where
/// formatting cost a few % of the CPU (BENCHMARKS.md, "Where the time goes").
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at.min(digits.len().saturating_sub(width))..]);
}

/// The AT line a server sends for an IAMAT it received at `now_ns`.
pub fn format_at(server: &str, now_ns: i128, cmd: &IAmAt<'_>) -> String {
    let mut line = Vec::with_capacity(
        40 + server.len() + cmd.client.len() + cmd.location.len() + cmd.time.len(),
    );
    for part in ["AT ", server, " "] {
        line.extend_from_slice(part.as_bytes());
    }
    push_diff(&mut line, now_ns - cmd.time_ns);
    for part in [" ", cmd.client, " ", cmd.location, " ", cmd.time] {
        line.extend_from_slice(part.as_bytes());
    }
    // Every part is text; an empty line would be refused as no AT line at all.
    String::from_utf8(line).unwrap_or_default()
}

/// The `? LINE` answer to an invalid line: the raw bytes, without terminator.
pub fn format_invalid(line: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"? ");
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// A parsed AT line, as flooded between servers and stored per client.
#[derive(Debug, Clone, PartialEq)]
pub struct AtLine<'a> {
    /// The server that received the IAMAT.
    pub server: &'a str,
    /// The client ID.
    pub client: &'a str,
    /// The client's location, as the client sent it.
    pub location: &'a str,
    /// Latitude and longitude in degrees.
    pub lat_lng: (f64, f64),
    /// The client's send time in nanoseconds.
    pub time_ns: i128,
}

/// Parses an AT line (`AT server diff client location time`); `None` if it is not one.
pub fn parse_at(line: &str) -> Option<AtLine<'_>> {
    let at = check_at(line)?;
    Some(AtLine {
        server: at.server,
        client: at.client,
        location: at.location,
        lat_lng: parse_location(at.location)?,
        time_ns: at.time_ns,
    })
}

/// An AT line checked as `parse_at` checks it, without converting its location to
/// numbers: what storing and flooding need (the store's hot path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAt<'a> {
    /// The server that received the IAMAT.
    pub server: &'a str,
    /// The client ID.
    pub client: &'a str,
    /// The client's location, as the client sent it (valid ISO 6709, in range).
    pub location: &'a str,
    /// The client's send time in nanoseconds.
    pub time_ns: i128,
}

/// Checks an AT line exactly as `parse_at` does; `None` if it is not one.
pub fn check_at(line: &str) -> Option<CheckedAt<'_>> {
    let mut words = str_fields(line);
    let (at, server, diff, client, location, time) = (
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
    );
    if at != "AT" || words.next().is_some() || !is_diff(diff) || !is_location(location) {
        return None;
    }
    Some(CheckedAt {
        server,
        client,
        location,
        time_ns: parse_time(time)?,
    })
}

/// True when `parse_location` would accept `s`, decided on the text alone.
fn is_location(s: &str) -> bool {
    let Some((_, lat_int, lat_frac, rest)) = split_decimal(s, true) else {
        return false;
    };
    let Some((_, lng_int, lng_frac, rest)) = split_decimal(rest, true) else {
        return false;
    };
    rest.is_empty() && within(lat_int, lat_frac, MAX_LAT) && within(lng_int, lng_frac, MAX_LNG)
}

/// True for a time difference as `format_diff` writes it.
fn is_diff(s: &str) -> bool {
    matches!(split_decimal(s, true), Some((_, _, frac, "")) if frac.len() == 9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_fields_are_the_byte_fields() {
        for line in [
            "AT Riley +0.1 kiwi +1+1 1.5",
            "  é\tñ  x\u{3000}y ",
            "",
            " \t ",
            "AT\u{a0}x",
            "日本 語",
        ] {
            let bytes: Vec<&str> = fields(line.as_bytes())
                .map(|f| std::str::from_utf8(f).unwrap())
                .collect();
            assert_eq!(str_fields(line).collect::<Vec<_>>(), bytes, "{line:?}");
        }
    }

    fn iamat(line: &str) -> IAmAt<'_> {
        match parse_command(line.as_bytes()) {
            Ok(Command::IAmAt(i)) => i,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn iamat_fields_are_kept_exactly() {
        let i = iamat("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503");
        assert_eq!(i.client, "kiwi.cs.ucla.edu");
        assert_eq!(i.location, "+34.068930-118.445127");
        assert_eq!(i.time, "1621464827.959498503");
        assert_eq!(i.time_ns, 1_621_464_827_959_498_503);
    }

    #[test]
    fn all_six_white_space_bytes_separate_fields() {
        for sep in [" ", "\t", "\r", "\x0c", "\x0b", " \t\x0b\x0c\r "] {
            let line = format!("{sep}IAMAT{sep}a{sep}+1-2{sep}3{sep}");
            let i = iamat(&line);
            assert_eq!(
                (i.client, i.location, i.time),
                ("a", "+1-2", "3"),
                "{sep:?}"
            );
        }
        // A newline inside the line also separates (only the terminator is stripped).
        assert!(parse_command(b"WHATSAT a\n1 2").is_ok());
        // Other control bytes and non-ASCII space are part of a field.
        assert_eq!(
            parse_command(b"IAMAT\x01a +1-2 3"),
            Err(ParseError::UnknownCommand)
        );
    }

    #[test]
    fn wrong_field_counts() {
        for line in [
            "IAMAT a +1-2",
            "IAMAT a +1-2 3 4",
            "IAMAT",
            "WHATSAT a 1",
            "WHATSAT a 1 2 3",
        ] {
            assert_eq!(
                parse_command(line.as_bytes()),
                Err(ParseError::FieldCount),
                "{line}"
            );
        }
        assert_eq!(parse_command(b""), Err(ParseError::Empty));
        assert_eq!(parse_command(b" \t "), Err(ParseError::Empty));
        assert_eq!(
            parse_command(b"iamat a +1-2 3"),
            Err(ParseError::UnknownCommand)
        );
        assert_eq!(parse_command(b"HELLO"), Err(ParseError::UnknownCommand));
        assert_eq!(
            parse_command(b"AT Riley +0.1 a +1-2 3"),
            Err(ParseError::UnknownCommand)
        );
    }

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("+34.068930-118.445127"),
            Some((34.06893, -118.445127))
        );
        assert_eq!(parse_location("-90+180"), Some((-90.0, 180.0)));
        assert_eq!(parse_location("+90.000-180.0"), Some((90.0, -180.0)));
        assert_eq!(parse_location("+00045.5+0"), Some((45.5, 0.0)));
        for bad in [
            "34.068930-118.445127",
            "+34.068930118.445127",
            "+90.0000001+0",
            "+0-180.5",
            "+91+0",
            "+1000+0",
            "+1.-2",
            "+.5-2",
            "+1-2x",
            "+1-2+3",
            "+-1-2",
            "+1e3-2",
            "++1-2",
            "",
            "+",
            "+1",
        ] {
            assert_eq!(parse_location(bad), None, "{bad}");
            let line = format!("IAMAT a {bad} 1");
            if !bad.is_empty() {
                assert_eq!(
                    parse_command(line.as_bytes()),
                    Err(ParseError::BadLocation),
                    "{bad}"
                );
            }
        }
    }

    #[test]
    fn times_are_integer_nanoseconds() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1.5"), Some(1_500_000_000));
        assert_eq!(parse_time("1.000000001"), Some(1_000_000_001));
        // Digits past the ninth are dropped, not rounded.
        assert_eq!(parse_time("1.0000000019999"), Some(1_000_000_001));
        assert_eq!(parse_time("+2"), Some(2 * NANOS));
        assert_eq!(parse_time("-2.5"), Some(-2_500_000_000));
        for bad in [
            "", "1.", ".5", "1e9", "abc", "1.2.3", "inf", "nan", "0x10", "1,5",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(parse_time(&"9".repeat(MAX_SECONDS_DIGITS + 1)), None);
        assert!(parse_time(&"9".repeat(MAX_SECONDS_DIGITS)).is_some());
        assert_eq!(parse_command(b"IAMAT a +1-2 1x"), Err(ParseError::BadTime));
    }

    #[test]
    fn time_difference_has_sign_and_nine_digits() {
        assert_eq!(format_diff(263_873_386), "+0.263873386");
        assert_eq!(format_diff(0), "+0.000000000");
        assert_eq!(format_diff(-1), "-0.000000001");
        assert_eq!(format_diff(-1_000_000_000), "-1.000000000");
        assert_eq!(format_diff(12_345_000_000_123), "+12345.000000123");
        let i = iamat("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503");
        let now = 1_621_464_828_223_371_889;
        assert_eq!(
            format_at("Riley", now, &i),
            "AT Riley +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"
        );
        // Clock skew: the client's clock is ahead.
        let i = iamat("IAMAT k +0+0 100.5");
        assert_eq!(
            format_at("S", 100 * NANOS, &i),
            "AT S -0.500000000 k +0+0 100.5"
        );
    }

    #[test]
    fn whatsat_bounds() {
        let ok = |line: &str| match parse_command(line.as_bytes()) {
            Ok(Command::WhatsAt(w)) => (w.radius_km, w.bound),
            other => panic!("{line:?} gave {other:?}"),
        };
        assert_eq!(ok("WHATSAT kiwi 10 5"), (10.0, 5));
        assert_eq!(ok("WHATSAT kiwi 50 20"), (50.0, 20));
        assert_eq!(ok("WHATSAT kiwi 0.001 1"), (0.001, 1));
        assert_eq!(ok("WHATSAT kiwi 50.000 020"), (50.0, 20));
        for (line, err) in [
            ("WHATSAT kiwi 0 5", ParseError::BadRadius),
            ("WHATSAT kiwi 0.0 5", ParseError::BadRadius),
            ("WHATSAT kiwi -1 5", ParseError::BadRadius),
            ("WHATSAT kiwi 50.01 5", ParseError::BadRadius),
            ("WHATSAT kiwi 51 5", ParseError::BadRadius),
            ("WHATSAT kiwi ten 5", ParseError::BadRadius),
            ("WHATSAT kiwi 1e1 5", ParseError::BadRadius),
            ("WHATSAT kiwi 10 0", ParseError::BadBound),
            ("WHATSAT kiwi 10 21", ParseError::BadBound),
            ("WHATSAT kiwi 10 5.0", ParseError::BadBound),
            ("WHATSAT kiwi 10 -1", ParseError::BadBound),
            (
                "WHATSAT kiwi 10 99999999999999999999999",
                ParseError::BadBound,
            ),
        ] {
            assert_eq!(parse_command(line.as_bytes()), Err(err), "{line}");
        }
    }

    #[test]
    fn radius_converts_exactly_to_metres() {
        assert_eq!(radius_metres("10"), "10000");
        assert_eq!(radius_metres("1.5"), "1500");
        assert_eq!(radius_metres("1.1"), "1100");
        assert_eq!(radius_metres("0.0001"), "0.1");
        assert_eq!(radius_metres("+050.25"), "50250");
        assert_eq!(radius_metres("0.001"), "1");
    }

    #[test]
    fn invalid_lines_echo_raw_bytes() {
        let mut out = Vec::new();
        format_invalid(b"bad \xff\x00 line\t", &mut out);
        assert_eq!(out, b"? bad \xff\x00 line\t\n");
        out.clear();
        format_invalid(b"", &mut out);
        assert_eq!(out, b"? \n");
        assert_eq!(strip_terminator(b"x\r\n"), b"x");
        assert_eq!(strip_terminator(b"x\n"), b"x");
        assert_eq!(strip_terminator(b"x\r"), b"x");
        assert_eq!(strip_terminator(b"x\r\r\n"), b"x\r");
        assert_eq!(
            parse_command(b"IAMAT \xff +1-2 3"),
            Err(ParseError::NotUtf8)
        );
    }

    #[test]
    fn at_lines_round_trip() {
        let line =
            "AT Riley +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
        let at = parse_at(line).expect("valid AT line");
        assert_eq!(at.server, "Riley");
        assert_eq!(at.client, "kiwi.cs.ucla.edu");
        assert_eq!(at.location, "+34.068930-118.445127");
        assert_eq!(at.time_ns, 1_621_464_827_959_498_503);
        for bad in [
            "AT Riley +0.26 kiwi +1-2 3",
            "AT Riley 0.263873386 kiwi +1-2 3",
            "AT Riley +0.263873386 kiwi +1-2",
            "AT Riley +0.263873386 kiwi +1-2 3 4",
            "AT Riley +0.263873386 kiwi 1-2 3",
            "XX Riley +0.263873386 kiwi +1-2 3",
        ] {
            assert_eq!(parse_at(bad), None, "{bad}");
        }
    }
}

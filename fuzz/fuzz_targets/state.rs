//! The state-file reader on any bytes: never panics; the valid prefix it reports is
//! within the input, holds exactly the records of the lines it returns, and reads back
//! the same on its own; a problem is reported exactly when bytes were left over.
//!
//! The reader takes a checksum by value (`9A0AD3B6`, `+9a0ad3b6` and `0abc` are read as
//! hex numbers), so a record is compared with `state::record` on the checksum's value,
//! and byte for byte only when its checksum is written the canonical way.

#![no_main]

use herd::protocol;
use herd::state;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (lines, valid, problem) = state::parse(data);
    assert!(valid <= data.len());
    assert_eq!(problem.is_none(), valid == data.len(), "{problem:?}");
    for line in &lines {
        assert!(protocol::parse_at(line).is_some(), "{line:?}");
    }
    let records: Vec<&[u8]> = data[..valid].split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(records.len(), lines.len());
    for (record, line) in records.into_iter().zip(&lines) {
        let canonical = state::record(line);
        let record = std::str::from_utf8(record).expect("a valid record is UTF-8");
        let (crc, rest) = record.split_once(' ').expect("a valid record has a space");
        assert_eq!(rest.strip_suffix('\n'), Some(line.as_str()));
        let value = |hex: &str| u32::from_str_radix(hex, 16).ok();
        assert_eq!(value(crc), value(&canonical[..8]), "{record:?}");
        if crc.len() == 8 && !crc.bytes().any(|b| b.is_ascii_uppercase() || b == b'+') {
            assert_eq!(record, canonical);
        }
    }
    let (again, again_valid, again_problem) = state::parse(&data[..valid]);
    assert_eq!((again, again_valid, again_problem), (lines, valid, None));
});

//! The state-file reader on any bytes: never panics; the valid length it reports is
//! within the input and is the input up to a torn last record; every record it returns
//! re-encodes (`state::write_record`) to a record that reads back the same; and the
//! valid part reads back to the same records, with nothing torn.

#![no_main]

use herd::state::{self, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut records: Vec<Record<'_>> = Vec::new();
    let damage = state::parse(data, |r| records.push(r));
    assert!(damage.valid <= data.len());
    assert_eq!(damage.valid + damage.torn, data.len());
    if damage.torn > 0 {
        assert!(!data[damage.valid..].contains(&b'\n'));
    }
    for record in &records {
        let mut bytes = Vec::new();
        state::write_record(&mut bytes, record);
        let mut again = Vec::new();
        let d = state::parse(&bytes, |r| again.push(r));
        assert_eq!((d.torn, d.dropped), (0, 0), "{record:?}");
        assert_eq!(again.as_slice(), std::slice::from_ref(record));
    }
    let mut again = Vec::new();
    let d = state::parse(&data[..damage.valid], |r| again.push(r));
    assert_eq!(again, records);
    assert_eq!((d.torn, d.dropped), (0, damage.dropped));
});

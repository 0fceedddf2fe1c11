//! The emulator's resource paths and keys: `contacts(<guid>)`, `contacts(emailaddress1='a@b.c',new_n=2)`,
//! `EntityDefinitions(LogicalName='contact')/Attributes`. A key written back as the emulator writes it in URLs
//! reads as the same key.
#![no_main]

use dataverse_emulator::odata::path::{Key, parse_key, parse_path};
use libfuzzer_sys::fuzz_target;

fn key_round_trips(key: &Key) {
    let written = key.to_url();
    let back =
        parse_key(&written).unwrap_or_else(|e| panic!("{key:?} written as {written:?} is refused: {}", e.message));
    assert_eq!(&back, key, "written as {written:?}");
    if let Key::Named(parts) = key {
        for (name, value) in parts {
            assert!(!name.is_empty());
            let _ = value.key_text();
        }
    }
}

fuzz_target!(init: dynsync_fuzz::report_stack_overflows(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_path(text) {
        Ok(segments) => {
            for segment in &segments {
                assert!(!segment.name.contains('('), "{segment:?}");
                if let Some(key) = &segment.key {
                    assert!(!segment.empty_parens);
                    key_round_trips(key);
                }
            }
        }
        Err(e) => assert_eq!(e.status, 400, "{e:?}"),
    }
    if let Ok(key) = parse_key(text) {
        key_round_trips(&key);
    }
});

//! The herd.conf parser on any text: never panics; an accepted config has servers named
//! by non-white-space words (SPEC §3, and every server name goes into AT lines, which
//! split on SPEC §4's six white-space bytes), links between distinct known servers, and
//! its servers and links written back out parse to the same; an error names a line of
//! the file.

#![no_main]

use herd::config::Config;
use herd::protocol;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &str| {
    let path = Path::new("/etc/herd/herd.conf");
    let config = match Config::parse(path, text) {
        Ok(config) => config,
        Err(e) => {
            assert!(e.line <= text.lines().count(), "{e}");
            assert!(!e.message.is_empty());
            return;
        }
    };
    assert!(!config.servers.is_empty());
    for server in &config.servers {
        assert!(
            !server.name.is_empty() && !server.name.bytes().any(protocol::is_space),
            "server name {:?} is not a non-white-space word",
            server.name
        );
        assert_eq!(
            config.index_of(&server.name).map(|i| &config.servers[i]),
            Some(server)
        );
    }
    for (i, &(a, b)) in config.links.iter().enumerate() {
        assert!(a != b && a < config.servers.len() && b < config.servers.len());
        assert!(config.neighbours(a).contains(&b) && config.neighbours(b).contains(&a));
        let key = (a.min(b), a.max(b));
        assert!(!config.links[..i]
            .iter()
            .any(|&(x, y)| (x.min(y), x.max(y)) == key));
    }
    let _ = config.describe("offline");

    let mut canonical = String::new();
    for s in &config.servers {
        canonical += &format!("server {} {}\n", s.name, s.addr);
    }
    for &(a, b) in &config.links {
        canonical += &format!(
            "link {} {}\n",
            config.servers[a].name, config.servers[b].name
        );
    }
    let again = Config::parse(path, &canonical).expect("servers and links written back parse");
    assert_eq!(again.servers, config.servers);
    assert_eq!(again.links, config.links);
});

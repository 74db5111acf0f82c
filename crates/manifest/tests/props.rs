//! The manifest parser takes outside input: no input makes it panic, and
//! every refusal names the file with a line.

use std::path::Path;

use proptest::prelude::*;

/// Lines that look like parts of a manifest, to reach past the TOML parser.
fn manifest_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("spin_manifest_version = 2".to_string()),
        Just("[application]".to_string()),
        Just("name = \"x\"".to_string()),
        Just("[[trigger.http]]".to_string()),
        Just("component = \"c\"".to_string()),
        Just("[component.c]".to_string()),
        Just("source = \"c.wasm\"".to_string()),
        Just("[component.c.tool.kiosk-host]".to_string()),
        Just("[variables]".to_string()),
        "[a-z_]{1,12} = \"[ -~]{0,20}\"",
        "route = \"[/a-z:.{}*-]{0,20}\"",
        "allowed_outbound_hosts = \\[\"[ -~]{0,24}\"\\]",
        "files = \\[\"[ -~]{0,16}\"\\]",
        "[a-z_.]{1,20} = [0-9]{1,4}",
        "[ -~]{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_is_parsed_or_refused_with_a_line(text in "\\PC{0,200}") {
        if let Err(e) = kiosk_manifest::parse(&text, Path::new("spin.toml")) {
            prop_assert!(e.to_string().starts_with("spin.toml"), "{e}");
        }
    }

    #[test]
    fn manifest_shaped_text_is_parsed_or_refused_with_a_line(
        lines in proptest::collection::vec(manifest_line(), 0..16)
    ) {
        let text = lines.join("\n");
        if let Err(e) = kiosk_manifest::parse(&text, Path::new("spin.toml")) {
            prop_assert!(e.to_string().starts_with("spin.toml"), "{e}");
        }
    }
}

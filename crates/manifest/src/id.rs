//! Identifier rules, as Spin's `spin-serde` `Id<DELIM, LOWER>` defines them.

/// Component IDs: `kebab-case` words (each all-lowercase or all-UPPERCASE).
pub(crate) fn check_component_id(id: &str) -> Result<(), String> {
    check_id(id, '-', false)
}

/// Variable names: `lower_snake_case` words.
pub(crate) fn check_variable_name(name: &str) -> Result<(), String> {
    check_id(name, '_', true)
}

/// Store labels (`key_value_stores`, `sqlite_databases`): kebab-case or snake_case.
pub(crate) fn check_label(label: &str) -> Result<(), String> {
    if check_id(label, '-', false).is_ok() || check_id(label, '_', false).is_ok() {
        Ok(())
    } else {
        Err("expected kebab-case or snake_case".to_owned())
    }
}

/// A non-empty string of words separated by `delim`; each word starts with an
/// ASCII letter and is ASCII alphanumeric, all lowercase or all uppercase
/// (digits aside); with `lower`, uppercase words are rejected.
fn check_id(id: &str, delim: char, lower: bool) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty".to_owned());
    }
    let wrong = if delim == '-' { '_' } else { '-' };
    if id.contains(wrong) {
        return Err(format!(
            "words must be separated with {delim:?}, not {wrong:?}"
        ));
    }
    for word in id.split(delim) {
        check_word(id, word, delim, lower)?;
    }
    Ok(())
}

fn check_word(id: &str, word: &str, delim: char, lower: bool) -> Result<(), String> {
    let mut chars = word.chars();
    let Some(first) = chars.next() else {
        return Err(format!("{delim:?}-separated words must not be empty"));
    };
    if !first.is_ascii_alphabetic() {
        return Err(format!(
            "{delim:?}-separated words must start with an ASCII letter; got {first:?}"
        ));
    }
    let upper = first.is_ascii_uppercase();
    for ch in chars {
        if ch.is_ascii_digit() {
            continue;
        }
        if !ch.is_ascii_alphanumeric() {
            return Err(format!(
                "{delim:?}-separated words may only contain alphanumeric ASCII; got {ch:?}"
            ));
        }
        if ch.is_ascii_uppercase() != upper {
            return Err(format!(
                "{delim:?}-separated words must be all lowercase or all UPPERCASE; got {word:?}"
            ));
        }
    }
    if lower && upper {
        return Err(format!(
            "Lower-case identifiers must be all lowercase; got {id:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_ids() {
        for ok in ["a", "cart", "my-comp2", "API-v2", "HTTP"] {
            assert_eq!(check_component_id(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_component_id("my_comp").unwrap_err(),
            "words must be separated with '-', not '_'"
        );
        for bad in ["", "a--b", "-a", "2a", "aB", "a.b"] {
            assert!(check_component_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn variable_names() {
        for ok in ["a", "api_v2", "api_key"] {
            assert_eq!(check_variable_name(ok), Ok(()), "{ok}");
        }
        for bad in ["key_1", "Key", "a__b", "a-b", "", "_a", "a_"] {
            assert!(check_variable_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        for ok in ["default", "my-store", "my_store", "s3"] {
            assert_eq!(check_label(ok), Ok(()), "{ok}");
        }
        for bad in ["", "my store", "a-b_c", "1abc"] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }
}

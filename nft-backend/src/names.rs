//! Names of chains and sets derived from cluster objects.
//!
//! Names and labels come from the cluster and are untrusted: they never reach an nft script as
//! they are. A derived name is a readable part, cut to the characters nft accepts unquoted, and
//! a hash of the full identity, so two objects never share a name even when their readable parts
//! collide after sanitising.

/// nft limits set and chain names to 255 bytes; ours stay far below, for readable listings.
const READABLE_MAX: usize = 24;

/// FNV-1a, 64 bits: stable across runs and releases, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `<prefix>-<readable>-<hash>`: `readable` keeps ASCII letters, digits, `-` and `_` of `hint`
/// (others become `_`), cut to 24 characters; the hash covers `identity` in full.
pub fn derived(prefix: &str, hint: &str, identity: &str) -> String {
    let readable: String = hint
        .chars()
        .take(READABLE_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = fnv1a(identity.as_bytes()) & 0xffff_ffff_ffff;
    format!("{prefix}-{readable}-{hash:012x}")
}

/// nft keeps at most 128 bytes of a comment; ours stay below, ASCII only.
const COMMENT_MAX: usize = 120;

/// A comment safe to put between double quotes in a script: characters outside a small safe
/// alphabet become `_`, and it is cut to 120 bytes.
pub fn comment(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ._:/,=()[]{}!#+-*".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(COMMENT_MAX)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{comment, derived};

    #[test]
    fn comments_cannot_break_out_of_their_quotes() {
        let hostile = "app=\"x\" } ; flush ruleset ; # \n\u{202e}é";
        let c = comment(hostile);
        assert!(
            !c.contains('"') && !c.contains(';') && !c.contains('\n') && !c.contains('\\'),
            "{c}"
        );
        assert!(c.is_ascii());
        assert_eq!(comment(&"x".repeat(500)).len(), 120);
        assert_eq!(comment("ns/web#0"), "ns/web#0");
    }

    #[test]
    fn derived_names_are_safe_and_distinct() {
        let hostile = "web\"; flush ruleset; #";
        let name = derived("ing", hostile, &format!("default/{hostile}"));
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{name}"
        );
        assert!(name.len() <= 4 + 24 + 1 + 12);
        // Same readable part after sanitising, different identities: different names.
        let a = derived("ing", "a.b", "ns/a.b");
        let b = derived("ing", "a_b", "ns/a_b");
        assert_ne!(a, b);
        assert!(a.starts_with("ing-a_b-") && b.starts_with("ing-a_b-"));
        // Stable: the same identity always gives the same name.
        assert_eq!(derived("eg", "x", "ns/x"), derived("eg", "x", "ns/x"));
        expect_test::expect!["eg-frontend-19b5f16595da"].assert_eq(&derived(
            "eg",
            "frontend",
            "shop/frontend",
        ));
    }
}

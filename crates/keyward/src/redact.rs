//! Keeping secrets out of text that leaves the module: an error message may echo what a caller
//! sent (a metadata key, a filter value), and a caller may have sent a token there by mistake.
//! [`scrub`] replaces anything shaped like a keyward token (`sk_`, `pk_`, `rk_` and a body) or a
//! login token (a JWT) with `[redacted]`.

use std::borrow::Cow;

const PREFIXES: [&[u8]; 3] = [b"sk_", b"pk_", b"rk_"];
/// Fewer body characters than this after a prefix is not a token (`sk_1`, `pk_a`).
const MIN_BODY: usize = 8;

/// `text` with every token-shaped run replaced by `[redacted]` (borrowed when there is none).
pub fn scrub(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match secret_at(bytes, i) {
            Some(end) => {
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(&text[copied..i]);
                o.push_str("[redacted]");
                copied = end;
                i = end;
            }
            None => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

/// Where a secret starting at `i` ends, if one does (and `i` starts a word).
fn secret_at(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && is_word(b[i - 1]) {
        return None;
    }
    let run = |from: usize, ok: fn(u8) -> bool| from + b[from..].iter().take_while(|c| ok(**c)).count();
    let lower = |n: usize| b.get(i..i + n).map(|s| s.to_ascii_lowercase());
    if let Some(p) = lower(3)
        && PREFIXES.contains(&p.as_slice())
    {
        let end = run(i + 3, |c| c.is_ascii_alphanumeric());
        return (end - (i + 3) >= MIN_BODY).then_some(end);
    }
    // A JWT: `eyJ…` base64url, a dot, base64url, a dot, base64url.
    if b[i..].starts_with(b"eyJ") {
        let url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        let first = run(i, url);
        if b.get(first) == Some(&b'.') {
            let second = run(first + 1, url);
            if second > first + 1 && b.get(second) == Some(&b'.') {
                let third = run(second + 1, url);
                return (third > second + 1).then_some(third);
            }
        }
    }
    None
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn tokens_and_login_tokens_are_replaced_and_nothing_else() {
        let t = "sk_7z9EYDPeozmJQKPdTzMqGIUkueluoKawUX8jS7m7MIA25QVNX";
        assert_eq!(
            scrub(&format!("metadata key \"{t}\" must be 1 to 40")),
            "metadata key \"[redacted]\" must be 1 to 40"
        );
        assert_eq!(
            scrub("Unknown permission 'RK_abcdefghij'"),
            "Unknown permission '[redacted]'"
        );
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
        assert_eq!(scrub(&format!("got: {jwt}!")), "got: [redacted]!");
        for plain in [
            "apk_01ABCDEFGHIJKLMN",
            "task_manager",
            "sk_1",
            "disk_usage",
            "a pk_ b",
            "eyJ only",
        ] {
            assert_eq!(scrub(plain), plain, "{plain}");
        }
        assert!(matches!(scrub("nothing here"), std::borrow::Cow::Borrowed(_)));
    }
}

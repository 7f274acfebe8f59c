//! Field paths (see [`sluicebox_abi::path_syntax`] and docs/abi.md section 10): keys
//! separated by `.`; `\x` stands for `x` (so `\.` is a `.` inside a key and `\\` a `\`), and
//! a `\` that ends the path stands for itself. Components may be empty (the key `""`).

use alloc::borrow::Cow;
use alloc::vec::Vec;

/// The keys of a path, decoded. Borrows a key that has no escapes.
pub(crate) struct Segments<'p> {
    rest: Option<&'p [u8]>,
}

impl<'p> Segments<'p> {
    pub(crate) fn new(path: &'p str) -> Self {
        Self {
            rest: Some(path.as_bytes()),
        }
    }
}

impl<'p> Iterator for Segments<'p> {
    type Item = Cow<'p, [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.rest?;
        let mut i = 0;
        let mut escaped = false;
        while let Some(&b) = s.get(i) {
            match b {
                // `\x` is `x`; a final `\` is itself.
                b'\\' => {
                    escaped = true;
                    i += if i + 1 < s.len() { 2 } else { 1 };
                }
                b'.' => break,
                _ => i += 1,
            }
        }
        let seg = &s[..i];
        self.rest = s.get(i + 1..).filter(|_| i < s.len());
        if !escaped {
            return Some(Cow::Borrowed(seg));
        }
        let mut key = Vec::with_capacity(seg.len());
        let mut j = 0;
        while let Some(&b) = seg.get(j) {
            if b == b'\\' && j + 1 < seg.len() {
                j += 1;
            }
            key.push(seg[j]);
            j += 1;
        }
        Some(Cow::Owned(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(path: &str) -> Result<Vec<Vec<u8>>, ()> {
        Ok(Segments::new(path).map(Cow::into_owned).collect())
    }

    #[test]
    fn splits_on_unescaped_dots() {
        assert_eq!(split("level").unwrap(), [b"level".to_vec()]);
        assert_eq!(
            split("http.method").unwrap(),
            [b"http".to_vec(), b"method".to_vec()]
        );
        assert_eq!(split(r"a\.b.c").unwrap(), [b"a.b".to_vec(), b"c".to_vec()]);
        assert_eq!(split(r"a\\.b").unwrap(), [br"a\".to_vec(), b"b".to_vec()]);
        assert_eq!(split(r"a\\\.b").unwrap(), [br"a\.b".to_vec()]);
        assert_eq!(split("").unwrap(), [b"".to_vec()]);
        assert_eq!(split("a.").unwrap(), [b"a".to_vec(), b"".to_vec()]);
    }

    #[test]
    fn other_escapes_stand_for_their_byte_and_a_final_backslash_for_itself() {
        assert_eq!(split(r"a\b").unwrap(), [b"ab".to_vec()]);
        assert_eq!(split(r"\l\e\v\e\l").unwrap(), [b"level".to_vec()]);
        assert_eq!(split(r"a\").unwrap(), [br"a\".to_vec()]);
        assert_eq!(split(r"a.\").unwrap(), [b"a".to_vec(), br"\".to_vec()]);
        assert_eq!(split(r"a\\\").unwrap(), [br"a\\".to_vec()]);
        assert_eq!(
            split("a..b").unwrap(),
            [b"a".to_vec(), b"".to_vec(), b"b".to_vec()]
        );
        assert_eq!(split(".").unwrap(), [b"".to_vec(), b"".to_vec()]);
    }
}

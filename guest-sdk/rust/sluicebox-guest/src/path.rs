//! Field paths (see [`sluicebox_abi::path_syntax`]): keys separated by `.`, with `\.` and `\\`
//! standing for a `.` and a `\` inside a key.

use alloc::borrow::Cow;
use alloc::vec::Vec;

/// A path that breaks the syntax: a `\` that is not followed by `.` or `\`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadPath;

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
    type Item = Result<Cow<'p, [u8]>, BadPath>;

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.rest?;
        let mut i = 0;
        let mut escaped = false;
        while let Some(&b) = s.get(i) {
            match b {
                b'\\' => {
                    if !matches!(s.get(i + 1), Some(b'.' | b'\\')) {
                        self.rest = None;
                        return Some(Err(BadPath));
                    }
                    escaped = true;
                    i += 2;
                }
                b'.' => break,
                _ => i += 1,
            }
        }
        let seg = &s[..i];
        self.rest = s.get(i + 1..).filter(|_| i < s.len());
        if !escaped {
            return Some(Ok(Cow::Borrowed(seg)));
        }
        let mut key = Vec::with_capacity(seg.len());
        let mut j = 0;
        while let Some(&b) = seg.get(j) {
            if b == b'\\' {
                j += 1;
                // The loop above checked that a `.` or `\` follows.
                key.push(seg.get(j).copied().unwrap_or(b'\\'));
            } else {
                key.push(b);
            }
            j += 1;
        }
        Some(Ok(Cow::Owned(key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(path: &str) -> Result<Vec<Vec<u8>>, BadPath> {
        Segments::new(path)
            .map(|s| s.map(Cow::into_owned))
            .collect()
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
    fn rejects_other_escapes() {
        assert_eq!(split(r"a\b"), Err(BadPath));
        assert_eq!(split(r"a\"), Err(BadPath));
    }
}

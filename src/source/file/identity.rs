//! File identity (F1): (device, inode), a hash of the head (the first min(1 KiB, size)
//! bytes) and an offset marker (a hash of the 32 bytes before the saved offset). An inode
//! reused by a new file, or a file rewritten in place, fails the head or the marker check
//! and starts a new generation at offset 0.

use std::os::unix::fs::FileExt;

/// Bytes of the head that are hashed.
pub const HEAD_BYTES: u64 = 1024;
/// Bytes before a saved offset that are hashed.
pub const MARKER_BYTES: u64 = 32;

/// FNV-1a, 64 bit: small, no dependency, good enough to tell files apart (not adversarial).
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Reads `len` bytes at `at` (fewer if the file is shorter).
pub fn read_range(f: &std::fs::File, at: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        let n = f.read_at(&mut buf[got..], at + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}

/// The head hash over `len` bytes; `None` when the file holds fewer than `len` bytes.
pub fn head_hash(f: &std::fs::File, len: u64) -> std::io::Result<Option<u64>> {
    let b = read_range(f, 0, len)?;
    Ok((b.len() as u64 == len).then(|| hash(&b)))
}

/// The marker hash of the (up to) 32 bytes before `offset`; `None` when the file is shorter
/// than `offset`.
pub fn marker(f: &std::fs::File, offset: u64) -> std::io::Result<Option<u64>> {
    let from = offset.saturating_sub(MARKER_BYTES);
    let b = read_range(f, from, offset - from)?;
    Ok((b.len() as u64 == offset - from).then(|| hash(&b)))
}

/// What a saved file state says about an open file with the same (dev, inode).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Same file: resume at the saved offset.
    Resume(u64),
    /// Not the same content (inode reuse, rewritten, truncated): a new generation from 0.
    NewGeneration,
}

/// Compares an open file against a saved (head hash, head length, offset, marker).
///
/// # Errors
/// Reading the file failed.
pub fn check(
    f: &std::fs::File,
    head: u64,
    head_len: u64,
    offset: u64,
    saved_marker: u64,
) -> std::io::Result<Verdict> {
    if head_hash(f, head_len)? != Some(head) {
        return Ok(Verdict::NewGeneration);
    }
    Ok(match marker(f, offset)? {
        Some(m) if m == saved_marker => Verdict::Resume(offset),
        _ => Verdict::NewGeneration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Saved(u64, u64, u64, u64);

    fn save(path: &std::path::Path, offset: u64) -> Saved {
        let f = std::fs::File::open(path).unwrap();
        let size = f.metadata().unwrap().len();
        let hl = size.min(HEAD_BYTES);
        Saved(
            head_hash(&f, hl).unwrap().unwrap(),
            hl,
            offset,
            marker(&f, offset).unwrap().unwrap(),
        )
    }

    fn verdict(path: &std::path::Path, s: &Saved) -> Verdict {
        let f = std::fs::File::open(path).unwrap();
        check(&f, s.0, s.1, s.2, s.3).unwrap()
    }

    #[test]
    fn growth_between_restarts_resumes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        std::fs::write(&p, b"short line\n").unwrap(); // shorter than the head
        let s = save(&p, 11);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&vec![b'x'; 3000]).unwrap();
        assert_eq!(verdict(&p, &s), Verdict::Resume(11));
    }

    #[test]
    fn truncation_and_rewrite_start_new_generation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        std::fs::write(&p, b"line one\nline two\n").unwrap();
        let s = save(&p, 18);
        std::fs::write(&p, b"line one\n").unwrap(); // truncated below the offset
        assert_eq!(verdict(&p, &s), Verdict::NewGeneration);
        // Same head, same length, different bytes before the offset.
        std::fs::write(&p, b"line one\nline TWO\n").unwrap();
        assert_eq!(verdict(&p, &s), Verdict::NewGeneration);
    }

    #[test]
    fn identical_heads_differ_by_marker() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let head = vec![b'h'; 2048];
        let mut a = head.clone();
        a.extend_from_slice(b"first file tail\n");
        std::fs::write(&p, &a).unwrap();
        let s = save(&p, a.len() as u64);
        // A new file (inode reuse) with the same 2 KiB head but other content at the offset.
        let mut b = head;
        b.extend_from_slice(b"other file tail\n");
        std::fs::write(&p, &b).unwrap();
        assert_eq!(verdict(&p, &s), Verdict::NewGeneration);
        std::fs::write(&p, &a).unwrap();
        assert_eq!(verdict(&p, &s), Verdict::Resume(a.len() as u64));
    }

    #[test]
    fn inode_reuse_with_other_head() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        std::fs::write(&p, b"old content\n").unwrap();
        let s = save(&p, 12);
        std::fs::write(&p, b"new content here\n").unwrap();
        assert_eq!(verdict(&p, &s), Verdict::NewGeneration);
        std::fs::write(&p, b"").unwrap(); // shorter than the saved head
        assert_eq!(verdict(&p, &s), Verdict::NewGeneration);
    }

    #[test]
    fn empty_file_at_zero_resumes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        std::fs::write(&p, b"").unwrap();
        let s = save(&p, 0);
        assert_eq!(verdict(&p, &s), Verdict::Resume(0));
    }
}

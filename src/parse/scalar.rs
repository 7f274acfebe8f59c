//! Strict scalar RFC 8259 JSON validator, the slow path next to simd-json: it runs
//! only when simd-json rejects a line (to say precisely why, or to accept valid JSON
//! that simd-json refuses, such as `1e400`) or when the structural positions of an
//! edited event must be recomputed.
//!
//! Cost: one forward pass over the input, O(n) time, no recursion and no unsafe code.
//! Plain string bytes are skipped eight at a time; non-ASCII bytes are checked as UTF-8
//! one sequence at a time. The only allocations are the pushes into the caller's
//! `structurals` vector, plus a small bit stack on the heap when nesting exceeds
//! 4096 levels (only possible when the caller allows a `max_depth` above 4096).

use std::fmt;

/// Validates one JSON text and records structural positions in simd-json's stage-1 format.
///
/// `input` must be exactly one RFC 8259 JSON value of any type, optionally surrounded
/// by JSON whitespace (space, `\t`, `\n`, `\r`). Objects and arrays may nest at most
/// `max_depth` levels deep (`max_depth == 0` allows scalars only). Numbers have no range
/// limit: `1e400` and `123456789012345678901234567890` are valid. Duplicate object keys
/// are allowed.
///
/// `structurals` is cleared first. On success it holds, in input order, the byte
/// offsets of every `{ } [ ] : ,` outside strings, of the opening quote of every
/// string (keys and values), and of the first byte of every number, `true`, `false`
/// and `null`. This is what simd-json 0.19's `Buffers::structural_indexes()` holds
/// after a successful parse of the same input. After an error its contents are
/// unspecified.
///
/// # Errors
///
/// Returns the first syntax error found, with the byte offset where it was detected;
/// see [`SyntaxErrorKind`] for where each kind points.
pub fn validate(
    input: &[u8],
    max_depth: usize,
    structurals: &mut Vec<u32>,
) -> Result<(), SyntaxError> {
    structurals.clear();
    // Edits and answers validate many small texts: keep their bitmap on the stack.
    let mut tiny = [0u64; 4];
    let mut mid;
    let mut large = Vec::new();
    let special: &mut [u64] = if input.len() <= tiny.len() * 64 {
        &mut tiny[..]
    } else if input.len() <= 4096 {
        mid = [0u64; 64];
        &mut mid[..]
    } else {
        large.resize(input.len().div_ceil(64), 0);
        &mut large[..]
    };
    validate_with(input, max_depth, structurals, special, |_, _, _| {})
}

/// Reusable scratch memory for the parse stage's use of this validator: one bit per input
/// byte.
///
/// Cost: grows to the longest input seen, then no allocation.
#[derive(Debug, Default)]
pub struct Scratch {
    special: Vec<u64>,
}

/// Like [`validate`], but appends the structural positions to `structurals` (offsets in
/// `input`), and calls `top_key(raw_key, value_index, true)` for every member of the top-level
/// object as it is read: `raw_key` is the key between its quotes (escapes not decoded),
/// `value_index` the index of the member's value among the positions appended. On error
/// the positions appended so far are removed again.
///
/// The hook is how the parse stage finds declared top-level fields during the one pass of
/// validation; a no-op hook compiles away.
///
/// # Errors
/// As [`validate`].
pub(crate) fn validate_append<H: FnMut(&[u8], u32, bool)>(
    input: &[u8],
    max_depth: usize,
    structurals: &mut Vec<u32>,
    scratch: &mut Scratch,
    top_key: H,
) -> Result<(), SyntaxError> {
    let words = input.len().div_ceil(64);
    if scratch.special.len() < words {
        scratch.special.resize(words, 0);
    }
    validate_with(
        input,
        max_depth,
        structurals,
        &mut scratch.special[..words],
        top_key,
    )
}

/// `validate_append` with the bitmap memory given (`input.len().div_ceil(64)` words at least).
fn validate_with<H: FnMut(&[u8], u32, bool)>(
    input: &[u8],
    max_depth: usize,
    structurals: &mut Vec<u32>,
    special: &mut [u64],
    top_key: H,
) -> Result<(), SyntaxError> {
    if u32::try_from(input.len()).is_err() {
        return Err(SyntaxError::new(0, SyntaxErrorKind::InputTooLarge));
    }
    let special = &mut special[..input.len().div_ceil(64)];
    special_bitmap(input, special);
    let base = structurals.len();
    let result = Validator {
        input,
        special,
        out: structurals,
        base,
        top_key,
    }
    .run(max_depth);
    if result.is_err() {
        structurals.truncate(base);
    }
    result
}

/// Why and where [`validate`] rejected its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset in the input where the error was detected (see
    /// [`SyntaxErrorKind`] for what each kind points at).
    pub offset: usize,
    /// What is wrong.
    pub kind: SyntaxErrorKind,
}

/// The kinds of error [`validate`] reports; the comment on each variant says what
/// [`SyntaxError::offset`] points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyntaxErrorKind {
    /// The input is empty or only whitespace. Offset 0.
    Empty,
    /// The input is longer than `u32::MAX` bytes, so offsets do not fit the
    /// structural index format. Offset 0.
    InputTooLarge,
    /// The JSON text starts with a UTF-8 byte order mark (EF BB BF). Offset of the mark.
    ByteOrderMark,
    /// Invalid UTF-8 (overlong form, encoded surrogate, code point above U+10FFFF,
    /// stray continuation byte, truncated sequence), inside or outside strings.
    /// Offset of the first byte of the bad sequence.
    InvalidUtf8,
    /// A value was expected but this byte cannot start one. Offset of the byte.
    UnexpectedByte(u8),
    /// The input ends where more JSON was required (a value, a key, a `:`, a `,` or a
    /// closing bracket). Offset is the input length.
    UnexpectedEnd,
    /// A string is not closed before the end of the input. Offset of its opening quote.
    UnterminatedString,
    /// An unescaped byte below 0x20 inside a string. Offset of that byte.
    ControlCharInString,
    /// A backslash not followed by one of `" \ / b f n r t u`. Offset of the backslash.
    InvalidEscape,
    /// A `\u` not followed by four hex digits. Offset of the backslash.
    InvalidUnicodeEscape,
    /// A `\uD800`-`\uDBFF` escape not immediately followed by a `\uDC00`-`\uDFFF`
    /// escape, or a `\uDC00`-`\uDFFF` escape without one before it. Offset of the
    /// backslash of the unpaired escape.
    LoneSurrogate,
    /// A number that does not follow `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`,
    /// or that runs straight into letters, digits, `.`, `+`, `-` or `_` (`01`, `0x10`,
    /// `1.`, `1e`, `-`). Offset of the first byte that breaks the grammar.
    InvalidNumber,
    /// Something starting with `t`, `f` or `n` that is not exactly `true`, `false` or
    /// `null`. Offset of its first byte.
    InvalidLiteral,
    /// Inside an object, where a key was expected, this byte is not `"`. Offset of the byte.
    ExpectedKey(u8),
    /// After an object key, this byte is not `:`. Offset of the byte.
    ExpectedColon(u8),
    /// After an object member, this byte is neither `,` nor `}`. Offset of the byte.
    ExpectedCommaOrObjectEnd(u8),
    /// After an array element, this byte is neither `,` nor `]`. Offset of the byte.
    ExpectedCommaOrArrayEnd(u8),
    /// A `,` directly followed by the closing `}` or `]`. Offset of the comma.
    TrailingComma,
    /// Non-whitespace after the complete top-level value. Offset of the first such byte.
    TrailingCharacters,
    /// Opening this object or array would exceed `max_depth` levels of nesting.
    /// Offset of the `{` or `[`.
    TooDeep,
}

impl SyntaxError {
    fn new(offset: usize, kind: SyntaxErrorKind) -> Self {
        Self { offset, kind }
    }
}

/// Writes a byte the parser found, in a form a person can recognise.
struct Found(u8);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            b @ 0x21..=0x7e => write!(f, "'{}'", char::from(b)),
            b' ' => f.write_str("a space"),
            b @ 0..=0x1f | b @ 0x7f => write!(f, "control character U+{b:04X}"),
            b => write!(f, "non-ASCII character (byte 0x{b:02X})"),
        }
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SyntaxErrorKind as K;
        let at = self.offset;
        match self.kind {
            K::Empty => f.write_str("invalid JSON: the input is empty or only whitespace"),
            K::InputTooLarge => f.write_str(
                "invalid JSON: the input is larger than 4 GiB, the most a structural index can address",
            ),
            K::ByteOrderMark => write!(
                f,
                "invalid JSON at byte {at}: the text starts with a UTF-8 byte order mark \
                 (EF BB BF); JSON must not have one, remove it"
            ),
            K::InvalidUtf8 => write!(
                f,
                "invalid UTF-8 at byte {at}: JSON text must be valid UTF-8 \
                 (is the input in another encoding such as Latin-1?)"
            ),
            K::UnexpectedByte(b) => {
                write!(
                    f,
                    "invalid JSON at byte {at}: expected a value (object, array, string, \
                     number, true, false or null), found {}",
                    Found(b)
                )?;
                f.write_str(match b {
                    b'\'' => "; JSON strings use double quotes",
                    b'N' | b'I' => "; NaN and Infinity are not JSON, and null must be lowercase",
                    b'T' | b'F' => "; true and false must be lowercase",
                    b'+' => "; JSON numbers cannot start with '+'",
                    b'.' => "; JSON numbers need a digit before the decimal point",
                    b',' => "; there is an extra or leading comma",
                    b'}' | b']' => "; a value is missing before this bracket",
                    _ => "",
                })
            }
            K::UnexpectedEnd => write!(
                f,
                "invalid JSON: unexpected end of input at byte {at}; the text is truncated \
                 or a bracket is not closed"
            ),
            K::UnterminatedString => write!(
                f,
                "invalid JSON at byte {at}: the string starting here is never closed \
                 (missing '\"'); the text may be truncated"
            ),
            K::ControlCharInString => write!(
                f,
                "invalid JSON at byte {at}: unescaped control character (U+0000 to U+001F) \
                 in a string; write it as an escape such as \\n, \\t or \\u0000"
            ),
            K::InvalidEscape => write!(
                f,
                "invalid JSON at byte {at}: invalid escape sequence in a string; the only \
                 escapes are \\\" \\\\ \\/ \\b \\f \\n \\r \\t and \\uXXXX (write a literal \
                 backslash as \\\\)"
            ),
            K::InvalidUnicodeEscape => write!(
                f,
                "invalid JSON at byte {at}: invalid \\u escape; it must be followed by \
                 exactly four hex digits"
            ),
            K::LoneSurrogate => write!(
                f,
                "invalid JSON at byte {at}: unpaired UTF-16 surrogate escape; a \\uD800-\\uDBFF \
                 escape must be immediately followed by a \\uDC00-\\uDFFF escape"
            ),
            K::InvalidNumber => write!(
                f,
                "invalid JSON at byte {at}: invalid number; JSON numbers look like -12, 0.5 \
                 or 1e-7, without leading zeros, '+', hex, NaN or Infinity"
            ),
            K::InvalidLiteral => write!(
                f,
                "invalid JSON at byte {at}: invalid literal; expected true, false or null \
                 (lowercase, strings need double quotes)"
            ),
            K::ExpectedKey(b) => write!(
                f,
                "invalid JSON at byte {at}: expected an object key in double quotes, found {}",
                Found(b)
            ),
            K::ExpectedColon(b) => write!(
                f,
                "invalid JSON at byte {at}: expected ':' after the object key, found {}",
                Found(b)
            ),
            K::ExpectedCommaOrObjectEnd(b) => write!(
                f,
                "invalid JSON at byte {at}: expected ',' or '}}' after an object member, found {}",
                Found(b)
            ),
            K::ExpectedCommaOrArrayEnd(b) => write!(
                f,
                "invalid JSON at byte {at}: expected ',' or ']' after an array element, found {}",
                Found(b)
            ),
            K::TrailingComma => write!(
                f,
                "invalid JSON at byte {at}: trailing comma before the closing bracket; remove it"
            ),
            K::TrailingCharacters => write!(
                f,
                "invalid JSON at byte {at}: trailing characters after the JSON value \
                 (one value per line expected)"
            ),
            K::TooDeep => write!(
                f,
                "invalid JSON at byte {at}: nesting too deep; this object or array exceeds \
                 the maximum nesting depth"
            ),
        }
    }
}

impl std::error::Error for SyntaxError {}

/// Number of nesting levels the bit stack holds without allocating.
const INLINE_LEVELS: usize = 4096;

/// One bit per open container (1 = object, 0 = array).
struct BitStack {
    depth: usize,
    inline: [u64; INLINE_LEVELS / 64],
    spill: Vec<u64>,
}

impl BitStack {
    fn new() -> Self {
        Self {
            depth: 0,
            inline: [0; INLINE_LEVELS / 64],
            spill: Vec::new(),
        }
    }

    fn push(&mut self, object: bool) {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        let slot = if let Some(slot) = self.inline.get_mut(word) {
            slot
        } else {
            let i = word - self.inline.len();
            if i == self.spill.len() {
                self.spill.push(0);
            }
            &mut self.spill[i]
        };
        if object {
            *slot |= 1 << bit;
        } else {
            *slot &= !(1 << bit);
        }
        self.depth += 1;
    }

    /// Pops the innermost container; returns whether the new innermost one is an object.
    fn pop(&mut self) -> bool {
        self.depth -= 1;
        self.top_is_object()
    }

    fn top_is_object(&self) -> bool {
        let Some(level) = self.depth.checked_sub(1) else {
            return false;
        };
        let (word, bit) = (level / 64, level % 64);
        let w = match self.inline.get(word) {
            Some(w) => *w,
            None => self.spill[word - self.inline.len()],
        };
        w >> bit & 1 == 1
    }
}

struct Validator<'a, 'b, H> {
    input: &'a [u8],
    /// Bit `i` set when byte `i` is special inside a string (see [`special_bitmap`]).
    special: &'a [u64],
    out: &'b mut Vec<u32>,
    /// Length of `out` before this input's positions.
    base: usize,
    top_key: H,
}

impl<H: FnMut(&[u8], u32, bool)> Validator<'_, '_, H> {
    fn mark(&mut self, pos: usize) {
        // `validate` checked that the input length fits in u32.
        self.out.push(pos as u32);
    }

    fn run(&mut self, max_depth: usize) -> Result<(), SyntaxError> {
        let input = self.input;
        let mut pos = skip_ws(input, 0);
        if pos == input.len() {
            return Err(SyntaxError::new(0, SyntaxErrorKind::Empty));
        }
        if input[pos..].starts_with(&[0xEF, 0xBB, 0xBF]) {
            return Err(SyntaxError::new(pos, SyntaxErrorKind::ByteOrderMark));
        }
        let mut stack = BitStack::new();
        let mut in_object = false;
        // Offset of the comma just consumed, if `pos` is right after one (for TrailingComma).
        let mut after_comma: Option<usize> = None;
        'value: loop {
            // `pos` is at the first non-whitespace byte where a value must start.
            let comma = after_comma.take();
            let Some(&b) = input.get(pos) else {
                return Err(SyntaxError::new(pos, SyntaxErrorKind::UnexpectedEnd));
            };
            match b {
                b'{' | b'[' => {
                    if stack.depth >= max_depth {
                        return Err(SyntaxError::new(pos, SyntaxErrorKind::TooDeep));
                    }
                    self.mark(pos);
                    in_object = b == b'{';
                    stack.push(in_object);
                    pos = skip_ws(input, pos + 1);
                    let close = if in_object { b'}' } else { b']' };
                    if input.get(pos) == Some(&close) {
                        self.mark(pos);
                        in_object = stack.pop();
                        pos += 1;
                    } else if in_object {
                        pos = self.key(pos, None, stack.depth == 1)?;
                        continue 'value;
                    } else {
                        continue 'value;
                    }
                }
                b'"' => {
                    self.mark(pos);
                    pos = scan_string(input, self.special, pos)?;
                }
                b'-' | b'0'..=b'9' => {
                    self.mark(pos);
                    pos = scan_number(input, pos)?;
                }
                b't' | b'f' | b'n' => {
                    self.mark(pos);
                    pos = scan_literal(input, pos)?;
                }
                b']' if let Some(comma) = comma => {
                    return Err(SyntaxError::new(comma, SyntaxErrorKind::TrailingComma));
                }
                _ => {
                    return Err(outside_string(
                        input,
                        pos,
                        SyntaxErrorKind::UnexpectedByte(b),
                    ));
                }
            }
            // A value just ended at `pos`: expect `,`, the closing bracket, or the end.
            loop {
                pos = skip_ws(input, pos);
                if stack.depth == 0 {
                    return match input.get(pos) {
                        None => Ok(()),
                        Some(_) => Err(outside_string(
                            input,
                            pos,
                            SyntaxErrorKind::TrailingCharacters,
                        )),
                    };
                }
                let Some(&b) = input.get(pos) else {
                    return Err(SyntaxError::new(pos, SyntaxErrorKind::UnexpectedEnd));
                };
                match b {
                    b',' => {
                        self.mark(pos);
                        let comma = pos;
                        pos = skip_ws(input, pos + 1);
                        if in_object {
                            pos = self.key(pos, Some(comma), stack.depth == 1)?;
                        } else {
                            after_comma = Some(comma);
                        }
                        continue 'value;
                    }
                    b'}' if in_object => {}
                    b']' if !in_object => {}
                    _ if in_object => {
                        let kind = SyntaxErrorKind::ExpectedCommaOrObjectEnd(b);
                        return Err(outside_string(input, pos, kind));
                    }
                    _ => {
                        let kind = SyntaxErrorKind::ExpectedCommaOrArrayEnd(b);
                        return Err(outside_string(input, pos, kind));
                    }
                }
                self.mark(pos);
                in_object = stack.pop();
                pos += 1;
            }
        }
    }

    /// Parses `"key" :` starting at `pos` (already past whitespace) and returns the
    /// position of the member's value, past whitespace. `top`: the key is a member of the
    /// top-level object, so the hook hears of it.
    #[inline]
    fn key(
        &mut self,
        pos: usize,
        after_comma: Option<usize>,
        top: bool,
    ) -> Result<usize, SyntaxError> {
        let input = self.input;
        match input.get(pos) {
            Some(b'"') => {}
            None => return Err(SyntaxError::new(pos, SyntaxErrorKind::UnexpectedEnd)),
            Some(b'}') if let Some(comma) = after_comma => {
                return Err(SyntaxError::new(comma, SyntaxErrorKind::TrailingComma));
            }
            Some(&b) => {
                return Err(outside_string(input, pos, SyntaxErrorKind::ExpectedKey(b)));
            }
        }
        self.mark(pos);
        let key_start = pos + 1;
        let key_end = scan_string(input, self.special, pos)?;
        let pos = skip_ws(input, key_end);
        match input.get(pos) {
            Some(b':') => {}
            None => return Err(SyntaxError::new(pos, SyntaxErrorKind::UnexpectedEnd)),
            Some(&b) => {
                return Err(outside_string(
                    input,
                    pos,
                    SyntaxErrorKind::ExpectedColon(b),
                ));
            }
        }
        self.mark(pos);
        if top {
            let value_index = (self.out.len() - self.base) as u32;
            (self.top_key)(&input[key_start..key_end - 1], value_index, true);
        }
        Ok(skip_ws(input, pos + 1))
    }
}

/// The error for an unexpected byte outside a string: `kind`, unless the byte starts
/// an invalid UTF-8 sequence, which is reported as such.
fn outside_string(input: &[u8], pos: usize, kind: SyntaxErrorKind) -> SyntaxError {
    if input[pos] >= 0x80 && utf8_sequence(input, pos).is_err() {
        SyntaxError::new(pos, SyntaxErrorKind::InvalidUtf8)
    } else {
        SyntaxError::new(pos, kind)
    }
}

fn skip_ws(input: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = input.get(pos) {
        pos += 1;
    }
    pos
}

#[cfg_attr(
    all(target_arch = "x86_64", not(test)),
    expect(
        dead_code,
        reason = "the portable fallback of special_block; x86_64 uses SSE2"
    )
)]
/// Nonzero iff one of the eight bytes of `w` is `"`, `\`, below 0x20 or above 0x7F;
/// the lowest set bit is then in the first such byte (little-endian order).
fn special_bytes(w: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    (quote | backslash | control | w) & HIGH
}

/// Fills `out` (`input.len().div_ceil(64)` words) with one bit per byte of `input`, set
/// when the byte is `"`, `\`, below 0x20 or above 0x7F: the bytes a string scan must stop
/// at. Bits past the end of `input` are clear.
///
/// Cost: one pass, 16 bytes per step with SSE2 on x86_64 (part of its baseline), 8 bytes per
/// step elsewhere.
fn special_bitmap(input: &[u8], out: &mut [u64]) {
    let mut blocks = input.chunks_exact(64);
    for (word, block) in out.iter_mut().zip(&mut blocks) {
        *word = special_block(block.try_into().unwrap_or(&[0; 64]));
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 64];
        last[..rest.len()].copy_from_slice(rest);
        // Zero bytes are control characters: mask off the padding.
        let keep = (1u64 << rest.len()) - 1;
        out[input.len() / 64] = special_block(&last) & keep;
    }
}

/// The special bits of one 64-byte block (see [`special_bitmap`]).
#[cfg(target_arch = "x86_64")]
#[inline]
fn special_block(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics are always
    // available; each unaligned load reads 16 bytes at offsets 0, 16, 32 and 48 of a
    // 64-byte array.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let control = _mm_set1_epi8(0x1f);
        let mut bits = 0u64;
        for k in 0..4 {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast());
            let hit = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                _mm_cmpeq_epi8(_mm_min_epu8(v, control), v),
            );
            // `movemask` of `v` itself gives the bytes >= 0x80.
            let m = (_mm_movemask_epi8(hit) | _mm_movemask_epi8(v)) as u32 as u64;
            bits |= m << (16 * k);
        }
        bits
    }
}

/// The special bits of one 64-byte block (see [`special_bitmap`]).
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn special_block(block: &[u8; 64]) -> u64 {
    let mut bits = 0u64;
    for (k, chunk) in block.chunks_exact(8).enumerate() {
        let m = special_bytes(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])));
        // One high bit per special byte (bit 8j+7): gather them into eight bits.
        let mut b = 0u64;
        for j in 0..8 {
            b |= (m >> (8 * j + 7) & 1) << j;
        }
        bits |= b << (8 * k);
    }
    bits
}

/// Offset of the first special byte at or after `i`, or `len` when there is none.
#[inline]
fn next_special(special: &[u64], i: usize, len: usize) -> usize {
    let mut w = i / 64;
    let Some(&first) = special.get(w) else {
        return len;
    };
    let word = first >> (i % 64);
    if word != 0 {
        return i + word.trailing_zeros() as usize;
    }
    loop {
        w += 1;
        match special.get(w) {
            Some(&0) => {}
            Some(&x) => return w * 64 + x.trailing_zeros() as usize,
            None => return len,
        }
    }
}

/// Scans the string whose opening quote is at `start`; returns the offset just past
/// the closing quote. `special` is the input's [`special_bitmap`].
#[inline]
fn scan_string(input: &[u8], special: &[u64], start: usize) -> Result<usize, SyntaxError> {
    let mut i = start + 1;
    loop {
        i = next_special(special, i, input.len());
        let Some(&b) = input.get(i) else {
            return Err(SyntaxError::new(start, SyntaxErrorKind::UnterminatedString));
        };
        match b {
            b'"' => return Ok(i + 1),
            b'\\' => i = scan_escape(input, i, start)?,
            0..=0x1f => return Err(SyntaxError::new(i, SyntaxErrorKind::ControlCharInString)),
            0x80.. => i = utf8_sequence(input, i)?,
            _ => i += 1,
        }
    }
}

/// Checks the escape whose backslash is at `i`, inside the string opened at `start`;
/// returns the offset just past it.
pub(super) fn scan_escape(input: &[u8], i: usize, start: usize) -> Result<usize, SyntaxError> {
    match input.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => match hex4(input, i + 2) {
            None => Err(SyntaxError::new(i, SyntaxErrorKind::InvalidUnicodeEscape)),
            Some(0xD800..=0xDBFF) => {
                if input.get(i + 6..i + 8) != Some(b"\\u") {
                    return Err(SyntaxError::new(i, SyntaxErrorKind::LoneSurrogate));
                }
                match hex4(input, i + 8) {
                    None => Err(SyntaxError::new(
                        i + 6,
                        SyntaxErrorKind::InvalidUnicodeEscape,
                    )),
                    Some(0xDC00..=0xDFFF) => Ok(i + 12),
                    Some(_) => Err(SyntaxError::new(i, SyntaxErrorKind::LoneSurrogate)),
                }
            }
            Some(0xDC00..=0xDFFF) => Err(SyntaxError::new(i, SyntaxErrorKind::LoneSurrogate)),
            Some(_) => Ok(i + 6),
        },
        None => Err(SyntaxError::new(start, SyntaxErrorKind::UnterminatedString)),
        Some(_) => Err(SyntaxError::new(i, SyntaxErrorKind::InvalidEscape)),
    }
}

/// The value of the four hex digits at `pos`, if there are four.
fn hex4(input: &[u8], pos: usize) -> Option<u32> {
    let digits = input.get(pos..)?.first_chunk::<4>()?;
    digits.iter().try_fold(0, |acc, &d| {
        let v = char::from(d).to_digit(16)?;
        Some(acc << 4 | v)
    })
}

/// Checks the UTF-8 sequence whose lead byte (>= 0x80) is at `i` (Unicode table 3-7);
/// returns the offset just past it.
fn utf8_sequence(input: &[u8], i: usize) -> Result<usize, SyntaxError> {
    let (len, second) = match input[i] {
        0xC2..=0xDF => (2, 0x80..=0xBF),
        0xE0 => (3, 0xA0..=0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80..=0xBF),
        0xED => (3, 0x80..=0x9F),
        0xF0 => (4, 0x90..=0xBF),
        0xF1..=0xF3 => (4, 0x80..=0xBF),
        0xF4 => (4, 0x80..=0x8F),
        _ => return Err(SyntaxError::new(i, SyntaxErrorKind::InvalidUtf8)),
    };
    let valid = input.get(i + 1..i + len).is_some_and(|rest| {
        second.contains(&rest[0]) && rest[1..].iter().all(|&b| b & 0xC0 == 0x80)
    });
    if valid {
        Ok(i + len)
    } else {
        Err(SyntaxError::new(i, SyntaxErrorKind::InvalidUtf8))
    }
}

fn skip_digits(input: &[u8], mut pos: usize) -> usize {
    while input.get(pos).is_some_and(u8::is_ascii_digit) {
        pos += 1;
    }
    pos
}

/// Scans the number starting at `start`; returns the offset just past it.
pub(super) fn scan_number(input: &[u8], start: usize) -> Result<usize, SyntaxError> {
    let invalid = |pos| Err(SyntaxError::new(pos, SyntaxErrorKind::InvalidNumber));
    let mut i = start;
    if input.get(i) == Some(&b'-') {
        i += 1;
    }
    match input.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = skip_digits(input, i + 1),
        _ => return invalid(i),
    }
    if input.get(i) == Some(&b'.') {
        i += 1;
        if !input.get(i).is_some_and(u8::is_ascii_digit) {
            return invalid(i);
        }
        i = skip_digits(input, i);
    }
    if let Some(b'e' | b'E') = input.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = input.get(i) {
            i += 1;
        }
        if !input.get(i).is_some_and(u8::is_ascii_digit) {
            return invalid(i);
        }
        i = skip_digits(input, i);
    }
    // `01`, `0x10`, `1.5.2`, `2-1`, `12abc`: one malformed token, not a number plus junk.
    if input
        .get(i)
        .is_some_and(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_'))
    {
        return invalid(i);
    }
    Ok(i)
}

/// Scans `true`, `false` or `null` starting at `start` (whose byte is `t`, `f` or `n`);
/// returns the offset just past it.
fn scan_literal(input: &[u8], start: usize) -> Result<usize, SyntaxError> {
    let literal: &[u8] = match input[start] {
        b't' => b"true",
        b'f' => b"false",
        _ => b"null",
    };
    let end = start + literal.len();
    let exact = input.get(start..end) == Some(literal);
    let glued = input
        .get(end)
        .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_');
    if exact && !glued {
        Ok(end)
    } else {
        Err(SyntaxError::new(start, SyntaxErrorKind::InvalidLiteral))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SyntaxErrorKind as K;

    /// Nesting limit of `serde_json::from_slice`: 127 levels parse, 128 do not.
    const SERDE_MAX_DEPTH: usize = 127;

    fn run(input: &[u8], max_depth: usize) -> Result<Vec<u32>, SyntaxError> {
        let mut structurals = vec![99, 98, 97];
        validate(input, max_depth, &mut structurals).map(|()| structurals)
    }

    fn ok(input: &[u8]) -> Vec<u32> {
        match run(input, 1024) {
            Ok(s) => s,
            Err(e) => panic!("{:?} rejected: {e}", String::from_utf8_lossy(input)),
        }
    }

    fn err(input: &[u8]) -> SyntaxError {
        match run(input, 1024) {
            Ok(_) => panic!("{:?} accepted", String::from_utf8_lossy(input)),
            Err(e) => e,
        }
    }

    /// simd-json's structural indexes, or `None` if simd-json rejects the input.
    fn simd_structurals(input: &[u8]) -> Option<Vec<u32>> {
        let len = input.len();
        let mut padded = input.to_vec();
        padded.resize(len + simd_json::INPUT_PADDING, 0);
        let mut buffers = simd_json::Buffers::new(len);
        {
            let mut tape = simd_json::Tape::null();
            simd_json::fill_tape_padded(&mut padded, len, &mut buffers, &mut tape).ok()?;
        }
        Some(buffers.structural_indexes().to_vec())
    }

    #[test]
    fn structural_examples() {
        assert_eq!(ok(b"  {\"a\" : 1 }  "), [2, 3, 7, 9, 11]);
        let line = br#"{"k":"x\ny","l":[1, 2 ,{"q":true}] , "m" : "\u00e9"}"#;
        let expected = [
            0, 1, 4, 5, 11, 12, 15, 16, 17, 18, 20, 22, 23, 24, 27, 28, 32, 33, 35, 37, 41, 43, 51,
        ];
        assert_eq!(ok(line), expected);
        assert_eq!(simd_structurals(line).unwrap(), expected);
    }

    #[test]
    fn top_level_scalars_and_whitespace() {
        assert_eq!(ok(b"1"), [0]);
        assert_eq!(ok(b" \t\r\n-0.5e-3\n"), [4]);
        assert_eq!(ok(b"\"abc\""), [0]);
        assert_eq!(ok(b"  true"), [2]);
        assert_eq!(ok(b"false "), [0]);
        assert_eq!(ok(b"null"), [0]);
        assert_eq!(ok(b"[]"), [0, 1]);
        assert_eq!(ok(b"{ }"), [0, 2]);
        assert_eq!(ok(b"[ [ ] , { } ]"), [0, 2, 4, 6, 8, 10, 12]);
        assert_eq!(ok(br#"{"a":1,"a":2}"#), [0, 1, 4, 5, 6, 7, 10, 11, 12]);
        assert_eq!(ok(b"\"\x7f\""), [0]);
    }

    #[test]
    fn structurals_cleared_first_and_reused() {
        let mut s = vec![1, 2, 3, 4, 5, 6, 7, 8];
        validate(b"[1]", 10, &mut s).unwrap();
        assert_eq!(s, [0, 1, 2]);
        validate(b"{}", 10, &mut s).unwrap();
        assert_eq!(s, [0, 1]);
    }

    #[test]
    fn every_error_kind_with_offset() {
        #[rustfmt::skip]
        let cases: &[(&[u8], K, usize)] = &[
            (b"", K::Empty, 0),
            (b"  \n\t\r ", K::Empty, 0),
            (b"\xEF\xBB\xBF{}", K::ByteOrderMark, 0),
            (b"\xEF\xBB\xBF", K::ByteOrderMark, 0),
            (b" \xEF\xBB\xBF1", K::ByteOrderMark, 1),
            (b"\"a\xFFb\"", K::InvalidUtf8, 2),
            (b"\"\xC0\x80\"", K::InvalidUtf8, 1),
            (b"\"\xC1\xBF\"", K::InvalidUtf8, 1),
            (b"\"\xE0\x80\xAF\"", K::InvalidUtf8, 1),
            (b"\"\xF0\x80\x80\xAF\"", K::InvalidUtf8, 1),
            (b"\"\xED\xA0\x80\"", K::InvalidUtf8, 1),
            (b"\"x\xED\xBF\xBF\"", K::InvalidUtf8, 2),
            (b"\"\xF4\x90\x80\x80\"", K::InvalidUtf8, 1),
            (b"\"\xF5\x80\x80\x80\"", K::InvalidUtf8, 1),
            (b"\"ab\xE2\x82\"", K::InvalidUtf8, 3),
            (b"\"ab\xE2\x82", K::InvalidUtf8, 3),
            (b"\"\x80\"", K::InvalidUtf8, 1),
            (b"\"\xC3\xA9\xA9\"", K::InvalidUtf8, 3),
            (b"[\xFF]", K::InvalidUtf8, 1),
            (b"1 \xC3", K::InvalidUtf8, 2),
            (b"{\xFF}", K::InvalidUtf8, 1),
            (b"[\xC3\xA9]", K::UnexpectedByte(0xC3), 1),
            (b"[,1]", K::UnexpectedByte(b','), 1),
            (b"[1,,2]", K::UnexpectedByte(b','), 3),
            (b"x", K::UnexpectedByte(b'x'), 0),
            (b"{\"a\":}", K::UnexpectedByte(b'}'), 5),
            (b"[1,{\"a\":]}", K::UnexpectedByte(b']'), 8),
            (b"'a'", K::UnexpectedByte(b'\''), 0),
            (b"+1", K::UnexpectedByte(b'+'), 0),
            (b".5", K::UnexpectedByte(b'.'), 0),
            (b"NaN", K::UnexpectedByte(b'N'), 0),
            (b"[Infinity]", K::UnexpectedByte(b'I'), 1),
            (b"True", K::UnexpectedByte(b'T'), 0),
            (b"\x00", K::UnexpectedByte(0), 0),
            (b"\x0c1", K::UnexpectedByte(0x0c), 0),
            (b"[", K::UnexpectedEnd, 1),
            (b"[1", K::UnexpectedEnd, 2),
            (b"[1, ", K::UnexpectedEnd, 4),
            (b"{", K::UnexpectedEnd, 1),
            (b"{\"a\"", K::UnexpectedEnd, 4),
            (b"{\"a\": ", K::UnexpectedEnd, 6),
            (b"{\"a\":1", K::UnexpectedEnd, 6),
            (b"{\"a\":1,", K::UnexpectedEnd, 7),
            (b"[[[] ]", K::UnexpectedEnd, 6),
            (b"\"abc", K::UnterminatedString, 0),
            (b"[\"a\\\"]", K::UnterminatedString, 1),
            (b"\"\\", K::UnterminatedString, 0),
            (b"{\"ab", K::UnterminatedString, 1),
            (b"{\"a\":\"0123456789abcdef", K::UnterminatedString, 5),
            (b"\"a\x00b\"", K::ControlCharInString, 2),
            (b"\"\t\"", K::ControlCharInString, 1),
            (b"\"x\ny\"", K::ControlCharInString, 2),
            (b"\"0123456789\x1f\"", K::ControlCharInString, 11),
            (b"{\"k\x01\":1}", K::ControlCharInString, 3),
            (b"\"\\x\"", K::InvalidEscape, 1),
            (b"\"ab\\'\"", K::InvalidEscape, 3),
            (b"\"\\U0041\"", K::InvalidEscape, 1),
            (b"\"\\\x00\"", K::InvalidEscape, 1),
            (b"\"\\\xC3\xA9\"", K::InvalidEscape, 1),
            (b"\"\\u12G4\"", K::InvalidUnicodeEscape, 1),
            (b"\"\\u123\"", K::InvalidUnicodeEscape, 1),
            (b"\"\\u12", K::InvalidUnicodeEscape, 1),
            (b"\"\\u\"", K::InvalidUnicodeEscape, 1),
            (b"\"\\uD800\\u12\"", K::InvalidUnicodeEscape, 7),
            (b"\"\\uD800\"", K::LoneSurrogate, 1),
            (b"\"\\udfff\"", K::LoneSurrogate, 1),
            (b"\"a\\uD800\\u0041\"", K::LoneSurrogate, 2),
            (b"\"\\uD800\\uD800\"", K::LoneSurrogate, 1),
            (b"\"\\uDBFF\\n\"", K::LoneSurrogate, 1),
            (b"\"\\uDBFFx\"", K::LoneSurrogate, 1),
            (b"\"\\uD800", K::LoneSurrogate, 1),
            (b"\"\\uD800\\uDC00\\uDC00\"", K::LoneSurrogate, 13),
            (b"01", K::InvalidNumber, 1),
            (b" 00", K::InvalidNumber, 2),
            (b"-", K::InvalidNumber, 1),
            (b"-01", K::InvalidNumber, 2),
            (b"1.", K::InvalidNumber, 2),
            (b"1e", K::InvalidNumber, 2),
            (b"1E+", K::InvalidNumber, 3),
            (b"0x10", K::InvalidNumber, 1),
            (b"-a", K::InvalidNumber, 1),
            (b"1.e5", K::InvalidNumber, 2),
            (b"[1.5.2]", K::InvalidNumber, 4),
            (b"--1", K::InvalidNumber, 1),
            (b"-Infinity", K::InvalidNumber, 1),
            (b"123abc", K::InvalidNumber, 3),
            (b"[2-1]", K::InvalidNumber, 2),
            (b"{\"a\":1e5e5}", K::InvalidNumber, 8),
            (b"tru", K::InvalidLiteral, 0),
            (b"trUe", K::InvalidLiteral, 0),
            (b"nul", K::InvalidLiteral, 0),
            (b"nulll", K::InvalidLiteral, 0),
            (b"[falsey]", K::InvalidLiteral, 1),
            (b"nan", K::InvalidLiteral, 0),
            (b"true_", K::InvalidLiteral, 0),
            (b"{\"a\":none}", K::InvalidLiteral, 5),
            (b"{a:1}", K::ExpectedKey(b'a'), 1),
            (b"{'a':1}", K::ExpectedKey(b'\''), 1),
            (b"{\"a\":1,2}", K::ExpectedKey(b'2'), 7),
            (b"{]", K::ExpectedKey(b']'), 1),
            (b"{\"a\":1,,}", K::ExpectedKey(b','), 7),
            (b"{\"a\" 1}", K::ExpectedColon(b'1'), 5),
            (b"{\"a\",1}", K::ExpectedColon(b','), 4),
            (b"{\"a\"=1}", K::ExpectedColon(b'='), 4),
            (b"{\"a\":1]", K::ExpectedCommaOrObjectEnd(b']'), 6),
            (b"{\"a\":1 \"b\":2}", K::ExpectedCommaOrObjectEnd(b'"'), 7),
            (b"{\"a\":1;\"b\":2}", K::ExpectedCommaOrObjectEnd(b';'), 6),
            (b"[1}", K::ExpectedCommaOrArrayEnd(b'}'), 2),
            (b"[1 2]", K::ExpectedCommaOrArrayEnd(b'2'), 3),
            (b"[true false]", K::ExpectedCommaOrArrayEnd(b'f'), 6),
            (b"[\"a\"\"b\"]", K::ExpectedCommaOrArrayEnd(b'"'), 4),
            (b"[{}:1]", K::ExpectedCommaOrArrayEnd(b':'), 3),
            (b"[1,]", K::TrailingComma, 2),
            (b"[1 , \n]", K::TrailingComma, 3),
            (b"{\"a\":1,}", K::TrailingComma, 6),
            (b"{\"a\":[1,2],\r\n}", K::TrailingComma, 10),
            (b"{} {}", K::TrailingCharacters, 3),
            (b"1 2", K::TrailingCharacters, 2),
            (b"\"a\"x", K::TrailingCharacters, 3),
            (b"[]]", K::TrailingCharacters, 2),
            (b"{}}", K::TrailingCharacters, 2),
            (b"null,", K::TrailingCharacters, 4),
            (b"true x", K::TrailingCharacters, 5),
            (b"1\x00", K::TrailingCharacters, 1),
            (b"1 \xC3\xA9", K::TrailingCharacters, 2),
            (b"{\"a\":1}\n{\"a\":2}", K::TrailingCharacters, 8),
        ];
        for &(input, kind, offset) in cases {
            let got = err(input);
            assert_eq!(
                got,
                SyntaxError { offset, kind },
                "input {:?}",
                String::from_utf8_lossy(input)
            );
            // Every case is also rejected by serde_json.
            assert!(
                serde_json::from_slice::<serde_json::Value>(input).is_err(),
                "serde_json accepts {:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(run(b"[[[]]]", 2), Err(SyntaxError::new(2, K::TooDeep)));
        assert_eq!(
            run(b"[{\"a\":{}}]", 2),
            Err(SyntaxError::new(6, K::TooDeep))
        );
        assert_eq!(run(b"[]", 0), Err(SyntaxError::new(0, K::TooDeep)));
        assert_eq!(run(b"\"[]\"", 0), Ok(vec![0]));
    }

    #[test]
    fn messages_are_specific() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"", &["empty"]),
            (b"\xEF\xBB\xBF{}", &["byte 0", "byte order mark"]),
            (b"\"ab\xFF\"", &["invalid UTF-8 at byte 3"]),
            (b"[1,x]", &["byte 3", "expected a value", "found 'x'"]),
            (b"[1,\x01]", &["byte 3", "control character U+0001"]),
            (b"[1,\xC3\xA9]", &["byte 3", "non-ASCII", "0xC3"]),
            (b"{'a':1}", &["byte 1", "double quotes", "found '''"]),
            (b"NaN", &["NaN"]),
            (b"[1", &["unexpected end of input at byte 2"]),
            (b"{\"a\":\"xy", &["byte 5", "never closed"]),
            (b"\"a\x00\"", &["byte 2", "control character", "\\u0000"]),
            (b"\"\\q\"", &["byte 1", "escape", "\\\\"]),
            (b"\"\\u12\"", &["byte 1", "four hex digits"]),
            (b"\"\\uD800\"", &["byte 1", "surrogate"]),
            (b"[1, 01]", &["invalid JSON at byte 5: invalid number"]),
            (b"nul", &["byte 0", "true, false or null"]),
            (b"{1:2}", &["byte 1", "object key", "found '1'"]),
            (b"{\"a\" 2}", &["byte 5", "':'", "found '2'"]),
            (b"{\"a\":2]", &["byte 6", "',' or '}'", "found ']'"]),
            (b"[2}", &["byte 2", "',' or ']'", "found '}'"]),
            (b"[1,]", &["byte 2", "trailing comma"]),
            (
                b"1 2",
                &["invalid JSON at byte 2: trailing characters after the JSON value"],
            ),
        ];
        for &(input, needles) in cases {
            let message = err(input).to_string();
            for needle in needles {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            }
        }
        let deep = run(b"[[[]]]", 2).unwrap_err().to_string();
        assert!(deep.contains("byte 2") && deep.contains("nesting too deep"));
        let boxed: Box<dyn std::error::Error> = Box::new(err(b"-"));
        assert!(boxed.to_string().contains("byte 1"));
    }

    #[test]
    fn depth_limit_is_exact() {
        for (open, close) in [("[", "]"), ("{\"k\":", "}")] {
            let nested = |n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
            assert!(run(nested(1024).as_bytes(), 1024).is_ok());
            let too_deep = nested(1025);
            assert_eq!(
                run(too_deep.as_bytes(), 1024),
                Err(SyntaxError::new(1024 * open.len(), K::TooDeep))
            );
            assert!(run(too_deep.as_bytes(), 1025).is_ok());
        }
        // Depth is nesting, not the number of containers.
        let wide = "[[],{},[[]],{\"a\":[]}]".repeat(1000);
        let wide = format!("[{}]", wide.replace("][", "],["));
        assert!(run(wide.as_bytes(), 4).is_ok());
        assert_eq!(run(wide.as_bytes(), 3).unwrap_err().kind, K::TooDeep);
    }

    #[test]
    fn deep_nesting_is_iterative_and_fast() {
        let start = std::time::Instant::now();
        let opens = vec![b'['; 100_000];
        assert_eq!(run(&opens, 1024), Err(SyntaxError::new(1024, K::TooDeep)));
        // An unlimited depth walks all 100,000 levels without recursion.
        assert_eq!(
            run(&opens, usize::MAX),
            Err(SyntaxError::new(100_000, K::UnexpectedEnd))
        );
        let mut balanced = opens.clone();
        balanced.extend(vec![b']'; 100_000]);
        assert_eq!(run(&balanced, usize::MAX).unwrap().len(), 200_000);
        assert_eq!(
            run(&balanced, 99_999),
            Err(SyntaxError::new(99_999, K::TooDeep))
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(2));

        // Mixed objects and arrays deeper than the inline bit stack: every closing
        // bracket must match, including across 64-level word boundaries.
        let depth = 10_000;
        let mut mixed = String::new();
        let mut closers = Vec::new();
        for level in 0..depth {
            if level % 3 == 1 || level % 64 == 63 {
                mixed.push_str("{\"k\":");
                closers.push('}');
            } else {
                mixed.push('[');
                closers.push(']');
            }
        }
        mixed.push_str("null");
        let mut tail: String = closers.iter().rev().collect();
        assert!(run(format!("{mixed}{tail}").as_bytes(), depth).is_ok());
        for swap in [0, 1, 62, 63, 4095, 4096, 9_998, 9_999] {
            let i = depth - 1 - swap;
            let wrong = if closers[swap] == '}' { "]" } else { "}" };
            tail.replace_range(i..=i, wrong);
            let bad = format!("{mixed}{tail}");
            let got = run(bad.as_bytes(), depth).unwrap_err();
            assert_eq!(got.offset, mixed.len() + i, "swap at level {swap}");
            tail.replace_range(i..=i, &closers[swap].to_string());
        }
    }

    #[test]
    fn special_byte_detection_is_exact() {
        fn naive(bytes: [u8; 8]) -> Option<usize> {
            bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
        }
        fn fast(bytes: [u8; 8]) -> Option<usize> {
            let m = special_bytes(u64::from_le_bytes(bytes));
            (m != 0).then(|| (m.trailing_zeros() / 8) as usize)
        }
        for pos in 0..8 {
            for b in 0..=255u8 {
                for filler in [b'a', b' ', b'~', b'!', b'#', b'[', b']'] {
                    let mut bytes = [filler; 8];
                    bytes[pos] = b;
                    assert_eq!(fast(bytes), naive(bytes), "{bytes:?}");
                    // A second special byte later must not move the first.
                    if pos < 7 {
                        bytes[7] = b'"';
                        assert_eq!(fast(bytes), naive(bytes), "{bytes:?}");
                    }
                }
            }
        }
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..200_000 {
            let bytes = rng.next().to_le_bytes();
            assert_eq!(fast(bytes), naive(bytes), "{bytes:?}");
        }
    }

    /// Agrees with `std::str::from_utf8` on one-, two-, three- and four-byte sequences.
    #[test]
    fn utf8_matches_std() {
        let interesting = [
            0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xE0, 0xED, 0xF0,
            0xF4, 0xF5, 0xFF,
        ];
        let mut checked = 0;
        for lead in 0x80..=0xFFu8 {
            for &second in &interesting {
                for &third in &[0x80, 0xBF, 0x41] {
                    for &fourth in &[0x80, 0xBF, 0x22] {
                        for len in 1..=4 {
                            let seq = &[lead, second, third, fourth][..len];
                            if seq.contains(&b'"') {
                                continue;
                            }
                            let mut input = vec![b'"'];
                            input.extend_from_slice(seq);
                            input.push(b'"');
                            let has_control = seq.iter().any(|&b| b < 0x20);
                            let std_ok = std::str::from_utf8(seq).is_ok();
                            let ours = run(&input, 8);
                            if std_ok && !has_control {
                                assert_eq!(ours, Ok(vec![0]), "{input:x?}");
                            } else if !has_control {
                                let e = ours.unwrap_err();
                                assert_eq!(e.kind, K::InvalidUtf8, "{input:x?}");
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 5000);
        // Every scalar value boundary.
        for c in [
            '\u{7F}',
            '\u{80}',
            '\u{7FF}',
            '\u{800}',
            '\u{D7FF}',
            '\u{E000}',
            '\u{FFFF}',
            '\u{10000}',
            '\u{10FFFF}',
        ] {
            let s = format!("[\"{c}\",\"a{c}b{c}{c}\"]");
            assert!(run(s.as_bytes(), 8).is_ok(), "{c:?}");
        }
    }

    /// xorshift64*: deterministic test data without extra dependencies.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    fn gen_ws(rng: &mut Rng, out: &mut Vec<u8>) {
        if rng.below(3) == 0 {
            for _ in 0..=rng.below(3) {
                out.push(rng.pick(b" \t\n\r"));
            }
        }
    }

    fn gen_number(rng: &mut Rng, out: &mut Vec<u8>) {
        if rng.below(3) == 0 {
            out.push(b'-');
        }
        if rng.below(4) == 0 {
            out.push(b'0');
        } else {
            out.push(b'1' + rng.below(9) as u8);
            for _ in 0..rng.pick(&[0, 1, 2, 5, 18, 19, 20, 40]) {
                out.push(b'0' + rng.below(10) as u8);
            }
        }
        if rng.below(3) == 0 {
            out.push(b'.');
            for _ in 0..=rng.below(20) {
                out.push(b'0' + rng.below(10) as u8);
            }
        }
        if rng.below(3) == 0 {
            out.push(rng.pick(b"eE"));
            match rng.below(3) {
                0 => out.push(b'+'),
                1 => out.push(b'-'),
                _ => {}
            }
            let exponent = rng.pick(&["0", "5", "07", "308", "309", "324", "400", "99999"]);
            out.extend_from_slice(exponent.as_bytes());
        }
    }

    fn gen_string(rng: &mut Rng, out: &mut Vec<u8>) {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            " ",
            "~",
            "\x7f",
            "hello",
            "/",
            "'",
            "é",
            "€",
            "中文",
            "𝄞",
            "\\\"",
            "\\\\",
            "\\/",
            "\\b",
            "\\f",
            "\\n",
            "\\r",
            "\\t",
            "\\u0000",
            "\\u001F",
            "\\u00e9",
            "\\u20AC",
            "\\uFFFF",
            "\\ud834\\udd1e",
            "\\uDBFF\\uDFFF",
            "\\uD800\\uDC00",
            "\\uE000",
            "\\uD7FF",
            "0123456789abcdef",
        ];
        out.push(b'"');
        for _ in 0..rng.below(6) {
            out.extend_from_slice(rng.pick(PIECES).as_bytes());
        }
        out.push(b'"');
    }

    fn gen_value(rng: &mut Rng, out: &mut Vec<u8>, depth: usize) {
        let kind = if depth >= 4 {
            rng.below(5)
        } else {
            rng.below(8)
        };
        match kind {
            0 => out.extend_from_slice(rng.pick(&["true", "false", "null"]).as_bytes()),
            1 | 2 => gen_number(rng, out),
            3 | 4 => gen_string(rng, out),
            5 | 6 => {
                out.push(b'{');
                gen_ws(rng, out);
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(b',');
                        gen_ws(rng, out);
                    }
                    gen_string(rng, out);
                    gen_ws(rng, out);
                    out.push(b':');
                    gen_ws(rng, out);
                    gen_value(rng, out, depth + 1);
                    gen_ws(rng, out);
                }
                out.push(b'}');
            }
            _ => {
                out.push(b'[');
                gen_ws(rng, out);
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(b',');
                        gen_ws(rng, out);
                    }
                    gen_value(rng, out, depth + 1);
                    gen_ws(rng, out);
                }
                out.push(b']');
            }
        }
    }

    fn mutate(rng: &mut Rng, doc: &[u8]) -> Vec<u8> {
        const BYTES: &[u8] = b"{}[]:,\"\\ \t\n\r0123456789-+.eEtfnulsax/'\x00\x01\x1f\x7f\x80\xbf\xc0\xc3\xe2\xed\xef\xf0\xf4\xf5\xff";
        let mut out = doc.to_vec();
        if out.is_empty() {
            return out;
        }
        let i = rng.below(out.len());
        match rng.below(6) {
            0 => out[i] = rng.pick(BYTES),
            1 => {
                out.remove(i);
            }
            2 => out.insert(i, rng.pick(BYTES)),
            3 => out.truncate(i),
            4 => {
                let j = rng.below(out.len());
                let (a, b) = (i.min(j), i.max(j));
                let copy = out[a..b].to_vec();
                out.splice(b..b, copy);
            }
            _ => {
                let j = rng.below(out.len());
                out.swap(i, j);
            }
        }
        out
    }

    /// Inputs for the differential tests: hand-written edge cases plus systematic and
    /// random ones, valid and invalid.
    fn corpus() -> Vec<Vec<u8>> {
        let mut corpus: Vec<Vec<u8>> = Vec::new();
        #[rustfmt::skip]
        let hand: &[&[u8]] = &[
            b"0", b"-0", b"-0.0", b"0.5", b"1E+2", b"1e-2", b"1e400", b"-1e400", b"1e-400",
            b"123456789012345678901234567890", b"-123456789012345678901234567890.5e3",
            b"18446744073709551615", b"18446744073709551616", b"-9223372036854775808",
            b"-9223372036854775809", b"1.7976931348623157e308", b"1.7976931348623159e308",
            b"4.9e-324", b"2.5e-324", b"0e0", b"0E-0", b"0.0e+00", b"[1e400, 2]",
            b"{\"big\": 99999999999999999999999999999999999999e9999}", b"01", b"+1", b".5",
            b"1.", b"1e", b"-", b"0x10", b"NaN", b"Infinity", b"-Infinity", b"1.0.0", b"1e5.5",
            b"- 1", b"1 .5", b"00", b"-00", b"0-", b"1_000", b"true", b"false", b"null",
            b"True", b"nul", b"nulls", b"truefalse", b"[true,false,null]", b"[tru]", b"\"\"",
            b"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", b"\"\\u0041\\u00e9\\u20ac\\uD834\\uDD1E\"",
            b"\"\\uD834\"", b"\"\\uDD1E\"", b"\"\\uD834\\uD834\\uDD1E\"", b"\"\\uD834x\"",
            b"\"\\u00\"", b"\"\\uGGGG\"", b"\"\\x41\"", b"\"\\a\"", b"\"\\v\"", b"\"\\0\"",
            b"\"\\'\"", b"\"a\tb\"", b"\"a\nb\"", b"\"\x7f\"", b"\"\xC3\xA9\"", b"\"\xC3\"",
            b"\"\xE2\x82\xAC\"", b"\"\xF0\x9D\x84\x9E\"", b"\"\xF0\x9D\x84\"", b"\"\xED\xA0\x80\"",
            b"\"\xED\x9F\xBF\"", b"\"\xEE\x80\x80\"", b"\"\xF4\x8F\xBF\xBF\"",
            b"\"\xF4\x90\x80\x80\"", b"\"\xC0\xAF\"", b"\"\xE0\x80\xAF\"", b"\"\xE0\xA0\x80\"",
            b"\"\xF0\x8F\xBF\xBF\"", b"\"\xF0\x90\x80\x80\"", b"\"\xFE\"", b"\"\xFF\"",
            b"\xEF\xBB\xBF{}", b"\xEF\xBB\xBF", b"{}\xEF\xBB\xBF", b"", b" ", b"\n\r\t ",
            b"{}", b"[]", b"{ }", b"[ ]", b"[[]]", b"[{}]", b"{\"a\":{}}", b"{\"a\":[]}",
            b"{\"a\":1,\"a\":2}", b"{\"\":\"\"}", b"[1,]", b"[,]", b"[,1]", b"{,}", b"{\"a\":1,}",
            b"{\"a\"}", b"{\"a\":}", b"{:1}", b"{1:1}", b"{a:1}", b"{'a':1}", b"['a']",
            b"[1 2]", b"[1,,2]", b"{\"a\":1 \"b\":2}", b"{\"a\" 1}", b"[}", b"{]", b"[1}",
            b"{\"a\":1]", b"]", b"}", b":", b",", b"[", b"{", b"\"", b"[\"", b"{\"", b"[1,",
            b"{} {}", b"1 2", b"[] x", b"{}}", b"[]]", b"1\x00", b"\x00", b"[\x00]",
            b"\x0c[]", b"[]\x0c", b"[\x0b1]", b"\xC2\xA0[]", b"[1,\xC2\xA0 2]", b"/* c */ 1",
            b"1 // c", b"[1]\n[2]", b"\"\\u0000\"", b"{\"a\\u0000b\":1}", b"{\"\\uDFFF\":1}",
            b" {\"a\" : [ 1 , 2.5e-3 , true , null , \"x\" , { } ] } ",
        ];
        corpus.extend(hand.iter().map(|input| input.to_vec()));
        // Every byte as a whole document, in a string, after a backslash and as a separator.
        for b in 0..=255u8 {
            corpus.push(vec![b]);
            corpus.push(vec![b'"', b, b'"']);
            corpus.push(vec![b'"', b'\\', b, b'"']);
            corpus.push(vec![b'[', b'1', b',', b, b'2', b']']);
            corpus.push(vec![b'[', b'1', b, b']']);
            corpus.push(vec![b'{', b'"', b'a', b'"', b, b':', b'1', b'}']);
            corpus.push(vec![b, b'[', b']']);
            corpus.push(vec![b'[', b']', b]);
        }
        // \u escapes: every pairing of interesting code units and separators.
        let units = [
            "0000", "0041", "007f", "00FF", "d7ff", "D800", "dbff", "DC00", "dfff", "E000", "ffff",
            "12g4", "123", "",
        ];
        for first in units {
            for sep in ["", "\\", "\\u", "x", "\\n"] {
                for second in units {
                    let s = format!("[\"\\u{first}{sep}\\u{second}\"]");
                    corpus.push(s.into_bytes());
                }
            }
        }
        // Numbers: every string of up to five bytes over a number alphabet.
        let alphabet = b"-+0.19eE";
        let mut numbers = vec![Vec::new()];
        for _ in 0..5 {
            let mut longer = Vec::new();
            for prefix in &numbers {
                for &c in alphabet {
                    let mut n: Vec<u8> = prefix.clone();
                    n.push(c);
                    longer.push(n);
                }
            }
            for n in &longer {
                corpus.push(n.clone());
                let mut in_array = b"[".to_vec();
                in_array.extend_from_slice(n);
                in_array.extend_from_slice(b",0]");
                corpus.push(in_array);
            }
            numbers = longer;
        }
        // Nesting around serde_json's limit.
        for depth in [1, 2, 126, 127, 128, 129, 200] {
            corpus.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes());
            corpus.push(format!("{}0{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes());
            corpus.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth - 1)).into_bytes());
        }
        // Random documents and mutants of them.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..4000 {
            let mut doc = Vec::new();
            gen_ws(&mut rng, &mut doc);
            gen_value(&mut rng, &mut doc, 0);
            gen_ws(&mut rng, &mut doc);
            for _ in 0..3 {
                let mutant = mutate(&mut rng, &doc);
                corpus.push(mutate(&mut rng, &mutant));
                corpus.push(mutant);
            }
            corpus.push(doc);
        }
        corpus
    }

    /// The only documented difference from serde_json: serde_json parses numbers into
    /// `f64`/`u64`/`i64` and rejects ("number out of range") those whose magnitude
    /// overflows `f64`, while RFC 8259 puts no limit on numbers.
    fn is_documented_serde_exception(input: &[u8], serde_error: &serde_json::Error) -> bool {
        serde_error.to_string().starts_with("number out of range") && run(input, 1024).is_ok()
    }

    #[test]
    fn differential_against_serde_json() {
        // Documented exceptions: valid JSON that serde_json refuses.
        let exceptions: &[&[u8]] = &[
            b"1e400",
            b"-1e400",
            b"1.7976931348623159e308",
            b"[1e400, 2]",
            b"{\"big\": 99999999999999999999999999999999999999e9999}",
        ];
        for &input in exceptions {
            let serde = serde_json::from_slice::<serde_json::Value>(input).unwrap_err();
            assert!(is_documented_serde_exception(input, &serde), "{serde}");
        }
        // Valid JSON that simd-json refuses but serde_json and we accept.
        for input in [&b"123456789012345678901234567890"[..], b"1e-400", b"-0"] {
            assert!(run(input, 1024).is_ok());
            assert!(serde_json::from_slice::<serde_json::Value>(input).is_ok());
        }

        let corpus = corpus();
        let (mut valid, mut invalid, mut excepted) = (0, 0, 0);
        for input in &corpus {
            let ours = run(input, SERDE_MAX_DEPTH);
            let serde = serde_json::from_slice::<serde_json::Value>(input);
            match (&ours, &serde) {
                (Ok(_), Ok(_)) => valid += 1,
                (Err(_), Err(_)) => invalid += 1,
                (Ok(_), Err(e)) if is_documented_serde_exception(input, e) => excepted += 1,
                _ => panic!(
                    "disagreement on {:?} ({input:x?}): ours {ours:?}, serde_json {serde:?}",
                    String::from_utf8_lossy(input)
                ),
            }
            // On success the structurals are in increasing order and point at tokens.
            if let Ok(structurals) = ours {
                assert!(structurals.windows(2).all(|w| w[0] < w[1]));
                assert!(
                    structurals
                        .iter()
                        .all(|&i| !matches!(input[i as usize], b' ' | b'\t' | b'\n' | b'\r'))
                );
            }
        }
        assert!(
            valid > 5_000 && invalid > 20_000,
            "{valid} valid, {invalid} invalid"
        );
        assert!(excepted >= 5, "{excepted} exceptions");
    }

    #[test]
    fn structurals_match_simd_json() {
        // simd-json must accept these, so the comparison below is never vacuous.
        let fixed: &[&[u8]] = &[
            b"  {\"a\" : 1 }  ",
            b"{}",
            b"[]",
            b"[[],{}]",
            b"1",
            b" -12.5e+3 ",
            b"\"str\"",
            b"true",
            b"null",
            b"{\"a\\\"b\":\"\\\\\",\"c\":[true,false,null,-0,0.5,1E+2]}",
            b"{\"s\":\"\\u00e9\\ud834\\udd1e\",\"t\":\"caf\xC3\xA9 \xF0\x9D\x84\x9E\"}",
            b"{\"long\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123\"}",
            b"[\n\t1 ,\r\n2\t]",
        ];
        for &input in fixed {
            let simd = simd_structurals(input).expect("simd-json accepts");
            assert_eq!(ok(input), simd, "{:?}", String::from_utf8_lossy(input));
        }
        let mut compared = 0;
        for input in corpus() {
            let Ok(ours) = run(&input, 1024) else {
                continue;
            };
            if let Some(simd) = simd_structurals(&input) {
                assert_eq!(ours, simd, "{:?}", String::from_utf8_lossy(&input));
                compared += 1;
            }
        }
        assert!(compared > 5_000, "compared {compared}");
    }
}

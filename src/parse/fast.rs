//! The fast path of validation: a SIMD structural pass over the event (stage 1), then a walk
//! over the structural positions that checks the grammar (stage 2).
//!
//! It answers only "valid" or "not sure". Whatever it does not accept (invalid JSON, nesting
//! deeper than 64 levels, anything odd) goes to the scalar validator in [`super::scalar`],
//! which is the definition of what is valid and explains every rejection. When it accepts,
//! the structural positions it appends are exactly the scalar validator's (simd-json's
//! stage-1 format): every `{ } [ ] : ,` outside strings, every opening quote, and the first
//! byte of every number and literal.
//!
//! Stage 1 classifies 64 bytes per step (AVX-512BW, or two AVX2 halves): quotes (minus
//! escaped ones), backslashes, control and non-ASCII bytes, whitespace and operators; a
//! prefix XOR of the quotes gives the bytes inside strings. A byte that is not whitespace, an
//! operator or a quote, outside a string, and follows one of those, starts a scalar. Escapes
//! are checked where backslashes are, and non-ASCII events are checked as UTF-8 in one call.
//! The positions are written a bit scan and a store each, or, with AVX-512 VBMI2, by one
//! compress of the block's byte indices per block (about 15% less per event on a Sapphire
//! Rapids Xeon, `pipeline.passthrough` 184.6–189.8 → 158.1–162.0 ns/event).
//!
//! Cost per event: about one SIMD step per 64 bytes plus a few instructions per structural;
//! no allocation beyond the caller's structural vector. Without AVX2 (or off x86_64)
//! [`available`] is false and the caller uses the scalar validator alone.

use super::scalar;

/// Which SIMD stage 1 this CPU runs, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// No fast path: the scalar validator alone.
    None,
    /// AVX2 (with BMI1 and POPCNT, which every AVX2 processor has, and PCLMULQDQ): two
    /// 32-byte halves per 64-byte block.
    Avx2,
    /// AVX-512BW: one 64-byte block per step, masks straight from the compares.
    Avx512,
    /// AVX-512BW, and AVX-512 VBMI2 for the structural positions: a compress of the block's
    /// byte indices instead of a bit scan per position.
    Avx512Vbmi2,
}

/// The stage 1 this process runs: the best this CPU supports, or a lower one named by the
/// environment variable `SLUICEBOX_SIMD` (`avx512bw` for AVX-512 without VBMI2, `avx2`, or
/// `scalar` for none), so that the instruction sets can be measured side by side on one
/// machine. Read once per process.
pub(crate) fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = detected();
        match std::env::var("SLUICEBOX_SIMD").as_deref() {
            Ok("scalar") => Level::None,
            Ok("avx2") if best != Level::None => Level::Avx2,
            Ok("avx512bw") if best == Level::Avx512Vbmi2 => Level::Avx512,
            _ => best,
        }
    })
}

/// The best stage 1 this CPU supports (the standard library caches the detection).
fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let base = has!("bmi1") && has!("popcnt") && has!("pclmulqdq");
        if base && has!("avx512f") && has!("avx512bw") {
            if has!("avx512vbmi2") {
                return Level::Avx512Vbmi2;
            }
            return Level::Avx512;
        }
        if base && has!("avx2") {
            return Level::Avx2;
        }
    }
    Level::None
}

/// Validates `input` as one JSON value nesting at most `max_depth` levels, appending its
/// structural positions to `out` and calling `top_key` for each member of a top-level
/// object (as [`scalar::validate_append`] does; its third argument is false when the key
/// certainly has no escapes, so it compares as plain bytes). Returns [`Vouched::No`], with
/// `out` as it was, when it cannot vouch for the input: the caller must then ask the scalar
/// validator.
///
/// `level` is what [`level`] returned; with [`Level::None`] this returns [`Vouched::No`].
///
/// `input` is `padded[..len]`. Reads go up to 63 bytes past `len` when `padded` has them (the
/// batch buffer always does); the extra bytes do not affect the result.
#[inline]
pub(crate) fn validate<H: TopKey>(
    level: Level,
    padded: &[u8],
    len: usize,
    max_depth: usize,
    out: &mut Vec<u32>,
    top_key: &mut H,
) -> Vouched {
    let Some(input) = padded.get(..len) else {
        return Vouched::No;
    };
    if u32::try_from(len).is_err() {
        return Vouched::No;
    }
    let base = out.len();
    let stage1 = match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level()` found AVX2, BMI1, POPCNT and PCLMULQDQ on this CPU.
        Level::Avx2 => unsafe { stage1_avx2(padded, len, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level()` found AVX-512F, AVX-512BW, BMI1, POPCNT and PCLMULQDQ on this
        // CPU.
        Level::Avx512 => unsafe { stage1_avx512(padded, len, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level()` found AVX-512F, AVX-512BW, AVX-512 VBMI2, BMI1, POPCNT and
        // PCLMULQDQ on this CPU.
        Level::Avx512Vbmi2 => unsafe { stage1_avx512_vbmi2(padded, len, out) },
        _ => Stage1::Refused,
    };
    let ok = stage1 != Stage1::Refused
        && stage2(
            input,
            &out[base..],
            max_depth,
            stage1 != Stage1::Ascii,
            top_key,
        )
        && (stage1 != Stage1::NonAscii || std::str::from_utf8(input).is_ok());
    if !ok {
        out.truncate(base);
        return Vouched::No;
    }
    if stage1 == Stage1::Ascii {
        Vouched::Plain
    } else {
        Vouched::Valid
    }
}

/// What [`validate`] tells of each member of a top-level object: its key (raw, between the
/// quotes), the index of its value's first structural, and whether the key may hold escapes
/// (false: it compares as plain bytes). Any `FnMut(&[u8], u32, bool)` is one; a type with an
/// `#[inline(always)]` method is inlined into the walk.
pub(crate) trait TopKey {
    /// One top-level member.
    fn key(&mut self, key: &[u8], value: u32, escapes: bool);
}

impl<F: FnMut(&[u8], u32, bool)> TopKey for F {
    #[inline(always)]
    fn key(&mut self, key: &[u8], value: u32, escapes: bool) {
        self(key, value, escapes)
    }
}

/// The fast path's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vouched {
    /// Not vouched for: ask the scalar validator.
    No,
    /// Valid JSON.
    Valid,
    /// Valid JSON, all ASCII and without a backslash: no string in it has an escape.
    Plain,
}

/// The classes of one 64-byte block, one bit per byte.
#[derive(Clone, Copy)]
struct Masks {
    quote: u64,
    backslash: u64,
    /// Below 0x20.
    low: u64,
    /// 0x80 and above.
    high: u64,
    /// Space, tab, line feed, carriage return.
    ws: u64,
    /// `{ } [ ] : ,`
    ops: u64,
}

/// Stage 1 with AVX2 (see [`stage1`]).
///
/// # Safety
/// The CPU must support AVX2, BMI1, POPCNT and PCLMULQDQ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,bmi1,popcnt,pclmulqdq")]
unsafe fn stage1_avx2(padded: &[u8], len: usize, out: &mut Vec<u32>) -> Stage1 {
    use std::arch::x86_64::*;
    stage1(
        padded,
        len,
        out,
        |ptr| {
            // SAFETY: `stage1` hands over a pointer to 64 readable bytes; AVX2 is enabled.
            let (a, b) = unsafe {
                (
                    classify(_mm256_loadu_si256(ptr.cast())),
                    classify(_mm256_loadu_si256(ptr.add(32).cast())),
                )
            };
            // `black_box` keeps LLVM from fusing these masks into one 64-lane boolean vector,
            // which it then scalarises byte by byte on the stack: measured 3x slower per event.
            let join = |x: u32, y: u32| std::hint::black_box(u64::from(x) | u64::from(y) << 32);
            Masks {
                quote: join(a.quote, b.quote),
                backslash: join(a.backslash, b.backslash),
                low: join(a.low, b.low),
                high: join(a.high, b.high),
                ws: join(a.ws, b.ws),
                ops: join(a.ops, b.ops),
            }
        },
        flatten,
    )
}

/// Class bits of a byte, by nibble: a byte is in a class when the class's bit is set both in
/// `NIBBLE_LO[low nibble]` and in `NIBBLE_HI[high nibble]`. Bit 0: `,` (0x2c); bit 1: `:`
/// (0x3a); bit 2: `[ ] { }` (0x5b 0x5d 0x7b 0x7d); bit 3: space (0x20); bit 4: tab, line
/// feed, carriage return (0x09 0x0a 0x0d). No other byte has a bit in both.
const NIBBLE_LO: [u8; 16] = [8, 0, 0, 0, 0, 0, 0, 0, 0, 16, 2 | 16, 4, 1, 4 | 16, 0, 0];
const NIBBLE_HI: [u8; 16] = [16, 0, 1 | 8, 2, 0, 4, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0];
/// The whitespace bits of [`NIBBLE_LO`] and [`NIBBLE_HI`].
const WS_CLASS: u8 = 8 | 16;
/// The operator bits of [`NIBBLE_LO`] and [`NIBBLE_HI`].
const OPS_CLASS: u8 = 1 | 2 | 4;

/// Stage 1 with AVX-512BW (see [`stage1`]).
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW, BMI1, POPCNT and PCLMULQDQ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,bmi1,popcnt,pclmulqdq")]
unsafe fn stage1_avx512(padded: &[u8], len: usize, out: &mut Vec<u32>) -> Stage1 {
    // SAFETY: `stage1` hands over pointers to 64 readable bytes; AVX-512BW is enabled.
    stage1(
        padded,
        len,
        out,
        |ptr| unsafe { classify_avx512(ptr) },
        flatten,
    )
}

/// Stage 1 with AVX-512BW, the structural positions written by a VBMI2 compress (see
/// [`flatten_compress`]).
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW, AVX-512 VBMI2, BMI1, POPCNT and PCLMULQDQ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,bmi1,popcnt,pclmulqdq")]
unsafe fn stage1_avx512_vbmi2(padded: &[u8], len: usize, out: &mut Vec<u32>) -> Stage1 {
    stage1(
        padded,
        len,
        out,
        // SAFETY: `stage1` hands over pointers to 64 readable bytes; AVX-512BW is enabled.
        |ptr| unsafe { classify_avx512(ptr) },
        // SAFETY: AVX-512F, AVX-512BW and AVX-512 VBMI2 are enabled.
        |bits, base, out| unsafe { flatten_compress(bits, base, out) },
    )
}

/// The classes of the 64 bytes at `ptr`, with AVX-512BW.
///
/// # Safety
/// `ptr` must point to 64 readable bytes, and the CPU must support AVX-512F and AVX-512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn classify_avx512(ptr: *const u8) -> Masks {
    use std::arch::x86_64::*;
    // SAFETY: the caller hands over a pointer to 64 readable bytes.
    let v = unsafe { _mm512_loadu_si512(ptr.cast()) };
    let eq = |c: u8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(c as i8));
    // Whitespace and operators by two nibble lookups (the table of each class's nibbles is
    // in `NIBBLE_LO` and `NIBBLE_HI`): four shuffle-port operations instead of eight
    // compares.
    // SAFETY: both tables are 16 readable bytes.
    let (lo, hi) = unsafe {
        (
            _mm512_broadcast_i32x4(_mm_loadu_si128(NIBBLE_LO.as_ptr().cast())),
            _mm512_broadcast_i32x4(_mm_loadu_si128(NIBBLE_HI.as_ptr().cast())),
        )
    };
    // Bytes from 0x80 index with bit 7 set: the low lookup gives 0 for them.
    let by_lo = _mm512_shuffle_epi8(lo, v);
    let nibble = _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0f));
    let class = _mm512_and_si512(by_lo, _mm512_shuffle_epi8(hi, nibble));
    Masks {
        quote: eq(b'"'),
        backslash: eq(b'\\'),
        low: _mm512_cmple_epu8_mask(v, _mm512_set1_epi8(0x1f)),
        high: _mm512_movepi8_mask(v),
        ws: _mm512_test_epi8_mask(class, _mm512_set1_epi8(WS_CLASS as i8)),
        ops: _mm512_test_epi8_mask(class, _mm512_set1_epi8(OPS_CLASS as i8)),
    }
}

/// Stage 1: appends the structural positions of `padded[..len]` to `out`, classifying each
/// 64-byte block with `classify`. Refuses when a string is unterminated, holds a control
/// character or a bad escape.
#[inline(always)]
fn stage1<C: FnMut(*const u8) -> Masks, F: FnMut(u64, u32, &mut Vec<u32>)>(
    padded: &[u8],
    len: usize,
    out: &mut Vec<u32>,
    mut classify: C,
    mut flatten: F,
) -> Stage1 {
    let input = &padded[..len];
    // Bit 63 of the previous block's masks, carried: inside a string at its end; its last
    // byte a separator (whitespace, operator or quote; true before the first byte); a
    // backslash escapes the next block's first byte.
    let mut in_string = 0u64;
    let mut prev_sep = 1u64;
    let mut prev_escape = false;
    // Escapes are checked up to here (a surrogate pair spans two escapes).
    let mut escapes_done = 0usize;
    let mut non_ascii = 0u64;
    let mut any_backslash = 0u64;
    let mut tail = [0u8; 64];
    let mut at = 0usize;
    while at < len {
        let rest = len - at;
        let valid = if rest >= 64 {
            u64::MAX
        } else {
            (1u64 << rest) - 1
        };
        let ptr = if padded.len() - at >= 64 {
            padded[at..at + 64].as_ptr()
        } else {
            tail[..rest].copy_from_slice(&input[at..]);
            tail[rest..].fill(0);
            tail.as_ptr()
        };
        let m = classify(ptr);
        let (quote, backslash, low, high, ws, ops) =
            (m.quote, m.backslash, m.low, m.high, m.ws, m.ops);
        let (quote, backslash, low, ws, ops) = (
            quote & valid,
            backslash & valid,
            low & valid,
            ws & valid,
            ops & valid,
        );
        non_ascii |= high & valid;
        any_backslash |= backslash;
        // The bytes a backslash escapes, found one backslash at a time (they are rare).
        let mut escaped = u64::from(prev_escape);
        prev_escape = false;
        let mut b = backslash & !escaped;
        while b != 0 {
            let bit = b.trailing_zeros();
            b &= b - 1;
            if escaped >> bit & 1 == 1 {
                continue;
            }
            if bit == 63 {
                prev_escape = true;
            } else {
                escaped |= 1 << (bit + 1);
                b &= !(1 << (bit + 1));
            }
        }
        let quote = quote & !escaped;
        let inside = prefix_xor(quote) ^ in_string;
        in_string = ((inside as i64) >> 63) as u64;
        // Bytes below 0x20 are never allowed inside strings. (Outside, \t \n \r are
        // whitespace, and the others become scalars that stage 2 refuses.)
        if low & inside != 0 {
            return Stage1::Refused;
        }
        // Escapes inside strings: check each one (and the pair of a surrogate).
        let mut starts = backslash & inside & !escaped;
        while starts != 0 {
            let i = at + starts.trailing_zeros() as usize;
            starts &= starts - 1;
            if i < escapes_done {
                continue;
            }
            match input.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                    escapes_done = i + 2
                }
                _ => match unicode_escape(input, i) {
                    Some(end) => escapes_done = end,
                    None => return Stage1::Refused,
                },
            }
        }
        let sep = ws | ops | quote;
        let scalars = !sep & !inside & valid & (sep << 1 | prev_sep);
        prev_sep = sep >> 63;
        let structural = (ops & !inside) | (quote & inside) | scalars;
        flatten(structural, at as u32, out);
        at += 64;
    }
    if in_string != 0 || prev_escape {
        Stage1::Refused
    } else if non_ascii != 0 {
        Stage1::NonAscii
    } else if any_backslash != 0 {
        Stage1::Escapes
    } else {
        Stage1::Ascii
    }
}

/// Checks the `\u` escape (or surrogate pair) at `i`; returns the offset past it. Kept out of
/// line: it is rare, and inlined it slows the common path.
#[cold]
#[inline(never)]
fn unicode_escape(input: &[u8], i: usize) -> Option<usize> {
    scalar::scan_escape(input, i, i).ok()
}

/// What stage 1 found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage1 {
    /// Not valid (or not sure).
    Refused,
    /// Plausible, all ASCII, no backslash.
    Ascii,
    /// Plausible, all ASCII, with backslashes (escapes, all checked).
    Escapes,
    /// Plausible, with non-ASCII bytes still to be checked as UTF-8.
    NonAscii,
}

/// The classes of 32 bytes, one bit per byte (for [`stage1_avx2`]).
#[cfg(target_arch = "x86_64")]
struct Classes {
    quote: u32,
    backslash: u32,
    /// Below 0x20.
    low: u32,
    /// 0x80 and above.
    high: u32,
    /// Space, tab, line feed, carriage return.
    ws: u32,
    /// `{ } [ ] : ,`
    ops: u32,
}

/// Classifies 32 bytes.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn classify(v: std::arch::x86_64::__m256i) -> Classes {
    use std::arch::x86_64::*;
    let splat = |c: u8| _mm256_set1_epi8(c as i8);
    let eq = |c: u8| _mm256_cmpeq_epi8(v, splat(c));
    let bits = |m: __m256i| _mm256_movemask_epi8(m) as u32;
    // Whitespace and operators by two nibble lookups (see `NIBBLE_LO`); bytes from 0x80
    // index with bit 7 set, and the low lookup gives 0 for them.
    // SAFETY: both tables are 16 readable bytes.
    let (lo, hi) = unsafe {
        (
            _mm256_broadcastsi128_si256(_mm_loadu_si128(NIBBLE_LO.as_ptr().cast())),
            _mm256_broadcastsi128_si256(_mm_loadu_si128(NIBBLE_HI.as_ptr().cast())),
        )
    };
    let nibble = _mm256_and_si256(_mm256_srli_epi16(v, 4), splat(0x0f));
    let class = _mm256_and_si256(_mm256_shuffle_epi8(lo, v), _mm256_shuffle_epi8(hi, nibble));
    let none_of =
        |c: u8| _mm256_cmpeq_epi8(_mm256_and_si256(class, splat(c)), _mm256_setzero_si256());
    Classes {
        quote: bits(eq(b'"')),
        backslash: bits(eq(b'\\')),
        low: bits(_mm256_cmpeq_epi8(_mm256_min_epu8(v, splat(0x1f)), v)),
        high: bits(v),
        ws: !bits(none_of(WS_CLASS)),
        ops: !bits(none_of(OPS_CLASS)),
    }
}

/// Each bit becomes the XOR of itself and every lower bit: 1 from an opening quote up to
/// (not including) its closing quote. One carry-less multiply by all ones (the callers, the
/// stage 1 functions, enable PCLMULQDQ) instead of six shift-and-XOR steps.
///
/// Safe to call only where PCLMULQDQ is present: it is inlined into `stage1`, itself inlined
/// only into the `stage1_*` functions (unsafe, with the feature). Tried: this as a
/// `#[target_feature]` function (which forbids `inline(always)`) and `stage1` as an
/// `unsafe fn`: `pipeline.passthrough` 5-8% slower (241-245 vs 254-266 ns/event).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefix_xor(x: u64) -> u64 {
    use std::arch::x86_64::*;
    // SAFETY: only reached from `stage1_avx2`, `stage1_avx512` and `stage1_avx512_vbmi2`,
    // which enable PCLMULQDQ and are called only where `detected` found it; the intrinsics
    // touch no memory.
    unsafe {
        let product = _mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set1_epi8(-1), 0);
        _mm_cvtsi128_si64(product) as u64
    }
}

/// [`prefix_xor`] without SIMD (other architectures never run stage 1).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        x ^= x << shift;
    }
    x
}

/// Appends `base + i` for every set bit `i` of `bits`, in order. Writes eight positions per
/// step whatever the count (the extra ones land in spare capacity and are not kept), so the
/// loop runs `ceil(count / 8)` times and its exit is rarely mispredicted.
#[inline(always)]
fn flatten(mut bits: u64, base: u32, out: &mut Vec<u32>) {
    let count = bits.count_ones() as usize;
    out.reserve(64);
    let len = out.len();
    let spare = out.spare_capacity_mut();
    let mut i = 0;
    while i < count {
        // `i + 8 <= 64 <= spare.len()`: `count <= 64`, and `i` steps by 8 from 0.
        for slot in &mut spare[i..i + 8] {
            // A volatile store keeps this loop scalar (tzcnt, add, store per bit). As plain
            // stores, LLVM vectorised the eight trailing-zero counts into a popcount
            // emulation (vpshufb, vpsadbw, inserts) that cost about 40% of stage 1 on an
            // AVX-512 Xeon (perf annotate).
            // SAFETY: `slot` is a valid, aligned, exclusively borrowed `MaybeUninit<u32>`.
            unsafe { std::ptr::write_volatile(slot.as_mut_ptr(), base + bits.trailing_zeros()) };
            bits &= bits.wrapping_sub(1);
        }
        i += 8;
    }
    // SAFETY: `reserve(64)` made room for 64 more elements, and the loop above initialised
    // the first `count` (at most 64) of them, in order.
    unsafe { out.set_len(len + count) };
}

/// The byte indices 0 to 63, for [`flatten_compress`].
#[cfg(target_arch = "x86_64")]
static BYTE_INDICES: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = i as u8;
        i += 1;
    }
    t
};

/// [`flatten`] with AVX-512 VBMI2: compresses the indices of the set bits into the low bytes
/// of a vector, then widens and offsets them sixteen at a time, one store per sixteen
/// positions instead of a bit scan and a store per position.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW and AVX-512 VBMI2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
#[inline]
unsafe fn flatten_compress(bits: u64, base: u32, out: &mut Vec<u32>) {
    use std::arch::x86_64::*;
    let count = bits.count_ones() as usize;
    out.reserve(64);
    let len = out.len();
    // SAFETY: `BYTE_INDICES` is 64 readable bytes.
    let indices = unsafe { _mm512_loadu_si512(BYTE_INDICES.as_ptr().cast()) };
    let packed = _mm512_maskz_compress_epi8(bits, indices);
    let base = _mm512_set1_epi32(base as i32);
    let dst = out.spare_capacity_mut().as_mut_ptr().cast::<u32>();
    let write = |k: usize, part: __m128i| {
        let wide = _mm512_add_epi32(_mm512_cvtepu8_epi32(part), base);
        // SAFETY: `reserve(64)` made room for 64 elements past `len`, and `16 * k + 16 <= 64`.
        unsafe { _mm512_storeu_si512(dst.add(16 * k).cast(), wide) };
    };
    write(0, _mm512_castsi512_si128(packed));
    if count > 16 {
        write(1, _mm512_extracti32x4_epi32::<1>(packed));
        if count > 32 {
            write(2, _mm512_extracti32x4_epi32::<2>(packed));
            if count > 48 {
                write(3, _mm512_extracti32x4_epi32::<3>(packed));
            }
        }
    }
    // SAFETY: the stores above initialised at least the first `count` (at most 64) of the
    // 64 elements `reserve` made room for, in order.
    unsafe { out.set_len(len + count) };
}

/// Stage 2: checks the grammar over the structural positions `s` of `input`. The loop
/// reads a whole `"key" :` or `, "key" :` at once, so a typical member costs one round.
fn stage2<H: TopKey>(
    input: &[u8],
    s: &[u32],
    max_depth: usize,
    escapes: bool,
    top_key: &mut H,
) -> bool {
    let n = s.len();
    let limit = max_depth.min(64);
    // The byte at structural `j`, or 0 past the last one (0 is never a valid structural:
    // a NUL outside a string is a bad scalar).
    let byte = |j: usize| -> u8 {
        match s.get(j) {
            // SAFETY: `s` is what stage 1 wrote for `input` (see `validate`): every position
            // in it is below `input.len()` (each one is a bit of a block mask and'ed with the
            // block's valid bytes).
            Some(&p) => unsafe { *input.get_unchecked(p as usize) },
            None => 0,
        }
    };
    // `"key" :` at structural `j`, in an object at `depth`; tells the hook at depth 1.
    // Inlined (a macro, not a closure): called as a function it cost a call per member.
    macro_rules! key {
        ($j:expr, $depth:expr) => {{
            let (j, depth): (usize, usize) = ($j, $depth);
            if byte(j) != b'"' || byte(j + 1) != b':' {
                false
            } else if depth == 1 {
                // The key's quotes: its opening one is structural `j`, its closing one the
                // last quote before the colon.
                let (open, colon) = (s[j] as usize, s[j + 1] as usize);
                let mut close = colon - 1;
                while close > open && input[close] != b'"' {
                    close -= 1;
                }
                if close <= open {
                    false
                } else {
                    top_key.key(&input[open + 1..close], j as u32 + 2, escapes);
                    true
                }
            } else {
                true
            }
        }};
    }
    // Bit d: level d is an object.
    let mut objects = 0u64;
    let mut depth = 0usize;
    let mut j = 0usize;
    'value: loop {
        // Structural `j` starts a value.
        let c = byte(j);
        match c {
            b'{' | b'[' => {
                if depth >= limit {
                    return false;
                }
                let object = c == b'{';
                objects = objects & !(1 << depth) | u64::from(object) << depth;
                depth += 1;
                j += 1;
                if byte(j) == if object { b'}' } else { b']' } {
                    depth -= 1;
                    j += 1;
                } else if object {
                    if !key!(j, depth) {
                        return false;
                    }
                    j += 2;
                    continue 'value;
                } else {
                    continue 'value;
                }
            }
            b'"' => j += 1,
            b't' | b'f' | b'n' | b'-' | b'0'..=b'9' => {
                // A number or a literal: the token is everything up to the whitespace
                // before the next structural (or the end), and must be exactly one.
                let p = s[j] as usize;
                let mut end = s.get(j + 1).map_or(input.len(), |&q| q as usize);
                while end > p && matches!(input[end - 1], b' ' | b'\t' | b'\n' | b'\r') {
                    end -= 1;
                }
                let token = &input[p..end];
                let ok = match c {
                    b't' => token == b"true",
                    b'f' => token == b"false",
                    b'n' => token == b"null",
                    _ => is_number(token),
                };
                if !ok {
                    return false;
                }
                j += 1;
            }
            _ => return false,
        }
        // A value ended: a comma, a closing bracket, or (at depth 0) the end.
        loop {
            if depth == 0 {
                return j == n;
            }
            let object = objects >> (depth - 1) & 1 == 1;
            match byte(j) {
                b',' => {
                    j += 1;
                    if object {
                        if !key!(j, depth) {
                            return false;
                        }
                        j += 2;
                    }
                    continue 'value;
                }
                b'}' if object => {}
                b']' if !object => {}
                _ => return false,
            }
            depth -= 1;
            j += 1;
        }
    }
}

/// Whether `t` is exactly one RFC 8259 number:
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
#[inline]
fn is_number(t: &[u8]) -> bool {
    let digits = |mut i: usize| {
        while t.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = usize::from(t.first() == Some(&b'-'));
    match t.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(i + 1),
        _ => return false,
    }
    if t.get(i) == Some(&b'.') {
        if !t.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return false;
        }
        i = digits(i + 1);
    }
    if let Some(b'e' | b'E') = t.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = t.get(i) {
            i += 1;
        }
        if !t.get(i).is_some_and(u8::is_ascii_digit) {
            return false;
        }
        i = digits(i);
    }
    i == t.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path agrees with the scalar validator: when it accepts, the scalar one does
    /// too, with the same positions.
    fn agree(text: &[u8]) -> bool {
        // Every stage 1 this CPU can run (an AVX-512 CPU also runs AVX2), padded or not,
        // gives the same answer; `SLUICEBOX_SIMD` does not narrow the test.
        let levels: &[Level] = match detected() {
            Level::Avx512Vbmi2 => &[Level::Avx512Vbmi2, Level::Avx512, Level::Avx2],
            Level::Avx512 => &[Level::Avx512, Level::Avx2],
            Level::Avx2 => &[Level::Avx2],
            Level::None => &[],
        };
        let mut padded = text.to_vec();
        padded.extend_from_slice(&[b'"'; 64]);
        let mut fast = vec![7];
        let ok = validate(
            levels[0],
            text,
            text.len(),
            1024,
            &mut fast,
            &mut |_: &[u8], _: u32, _: bool| {},
        ) != Vouched::No;
        for &l in levels {
            for input in [text, &padded[..]] {
                let mut again = vec![7];
                let ok2 = validate(
                    l,
                    input,
                    text.len(),
                    1024,
                    &mut again,
                    &mut |_: &[u8], _: u32, _: bool| {},
                ) != Vouched::No;
                assert_eq!((ok, &fast), (ok2, &again), "{l:?} differs");
            }
        }
        let mut slow = Vec::new();
        let slow_ok = scalar::validate(text, 1024, &mut slow).is_ok();
        if ok {
            assert!(
                slow_ok,
                "fast accepted what scalar rejects: {:?}",
                String::from_utf8_lossy(text)
            );
            assert_eq!(&fast[1..], &slow[..], "{:?}", String::from_utf8_lossy(text));
        } else {
            assert_eq!(fast, vec![7], "a refusal leaves the output as it was");
        }
        ok
    }

    #[test]
    fn accepts_ordinary_events_with_scalar_positions() {
        if level() == Level::None {
            return;
        }
        let long = format!("{{\"msg\":\"{}\",\"n\":1}}", "x".repeat(300));
        for t in [
            r#"{"a":1}"#,
            r#"{}"#,
            r#"{ "a" : [ 1 , 2.5e-3 , -0 , true , false , null , "x" ] , "b" : { } }"#,
            r#"{"q":"say \"hi\" \\ \/ \b\f\n\r\t \u00e9 \ud83d\ude00","k\"ey":"v"}"#,
            r#"{"unicode":"ÉTÉ ☃ 😀"}"#,
            r#"{"a":{"b":{"c":[[[]]]}}}"#,
            "\t{\"a\":1}\r ",
            long.as_str(),
        ] {
            assert!(agree(t.as_bytes()), "fast path refused {t}");
        }
    }

    #[test]
    fn refuses_what_is_not_valid() {
        if level() == Level::None {
            return;
        }
        for t in [
            &b"{\"a\":1,}"[..],
            b"{\"a\":01}",
            b"{\"a\":1\x01}",
            b"{\"a\":\"x\ny\"}",
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\\x\"}",
            b"{\"a\":\"\\ud83d\"}",
            b"{\"a\":\"\\",
            b"{\"a\":\"abc}",
            b"{\"a\" 1}",
            b"{\"a\":tru}",
            b"{\"a\":truex}",
            b"{\"a\":1}x",
            b"{\"a\":1}{}",
            b"{\"a\":\"b\"x}",
            b"{\"a\":\xff}",
            b"{\"a\":\"\xc0\xaf\"}",
            b"\xef\xbb\xbf{}",
            b"",
            b"   ",
            b"{\"a\":[1 2]}",
            b"{\"a\":[1,]}",
            b"{,}",
            b"{\"a\":1]",
            b"[}",
            b"{\"a\"}",
            b"{\"a\"::1}",
            b"{1:2}",
        ] {
            assert!(
                !agree(t),
                "fast path accepted {:?}",
                String::from_utf8_lossy(t)
            );
        }
    }

    #[test]
    fn deep_nesting_goes_to_the_scalar_validator() {
        if level() == Level::None {
            return;
        }
        let ok = format!("{}1{}", "[".repeat(64), "]".repeat(64));
        assert!(agree(ok.as_bytes()));
        let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
        assert!(!agree(deep.as_bytes()));
    }

    #[test]
    fn block_boundaries_do_not_matter() {
        if level() == Level::None {
            return;
        }
        // Put quotes, backslashes and scalars at every offset around the 64-byte seams.
        for pad in 0..140 {
            for body in [
                r#""s\"x\\":"\\\\\"","n":12345,"t":true"#,
                r#""a":"\ud83d\ude00","b":[null,-1.5e+7]"#,
            ] {
                let text = format!("{{\"p\":\"{}\",{body}}}", "y".repeat(pad));
                assert!(agree(text.as_bytes()), "{text}");
                let bad = format!("{{\"p\":\"{}\",{body},}}", "y".repeat(pad));
                assert!(!agree(bad.as_bytes()), "{bad}");
            }
        }
    }

    #[test]
    fn random_mutations_never_make_it_accept_invalid_json() {
        if level() == Level::None {
            return;
        }
        let seeds = [
            br#"{"a":"b\"c","d":[1,2,{"e":null}],"f":-0.5e10,"g":"\u00e9\ud83d\ude00"}"#.to_vec(),
            "{\"x\":\"ÉTÉ\",\"y\":[true,false]}".as_bytes().to_vec(),
        ];
        let alphabet = b"{}[]:,\"\\ \t\r\nabefnrtu0123456789-+.eE\x00\x01\x7f\x80\xc3\xa9\xff";
        let mut rng = crate::loggen::Rng::new(7);
        for _ in 0..20_000 {
            let mut t = seeds[rng.below(2) as usize].clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(t.len() as u64 + 1) as usize;
                let c = alphabet[rng.below(alphabet.len() as u64) as usize];
                match rng.below(3) {
                    0 if at < t.len() => t[at] = c,
                    1 if at < t.len() => {
                        t.remove(at);
                    }
                    _ => t.insert(at, c),
                }
            }
            agree(&t);
        }
    }
}

#[cfg(test)]
mod nibble_tests {
    use super::*;

    /// The nibble tables classify every byte exactly as the definitions do.
    #[test]
    fn nibble_classes_match_every_byte() {
        for b in 0..=255u8 {
            let class = NIBBLE_LO[usize::from(b & 0x0f)] & NIBBLE_HI[usize::from(b >> 4)];
            // vpshufb gives 0 for an index with bit 7 set: the low lookup of such bytes.
            let class = if b >= 0x80 { 0 } else { class };
            let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
            let ops = matches!(b, b'{' | b'}' | b'[' | b']' | b':' | b',');
            assert_eq!(class & WS_CLASS != 0, ws, "byte {b:#04x}");
            assert_eq!(class & OPS_CLASS != 0, ops, "byte {b:#04x}");
        }
    }
}

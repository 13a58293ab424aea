//! Prometheus TSDB XOR ("Gorilla") chunks, encoded and decoded.
//!
//! Owns the byte format of float chunks as Prometheus' `tsdb/chunkenc`
//! `XORChunk` writes them, which is also what a Thanos StoreAPI `Chunk` with
//! encoding `XOR` carries in `data`: a big-endian `u16` sample count followed
//! by a bit stream (most significant bit first) holding the first timestamp
//! as a zigzag varint, the second as a varint delta, later ones as
//! delta-of-deltas in size-prefixed buckets, and values XOR-ed against the
//! previous value. The encoder reproduces Prometheus' bytes exactly, so chunks
//! built here are interchangeable with chunks a sidecar would send.
//!
//! Timestamp arithmetic wraps modulo 2^64 exactly as Go's `int64`/`uint64`
//! arithmetic does, so any strictly increasing timestamps, including ones at
//! the ends of the `i64` range, round-trip.

/// Samples per chunk at which Prometheus cuts a new chunk.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Most samples one chunk can hold: the count header is a `u16`.
const MAX_SAMPLES: usize = u16::MAX as usize;

/// Length of the sample count header.
const HEADER_LEN: usize = 2;

/// Most bytes a 64-bit varint takes (Go `binary.MaxVarintLen64`).
const MAX_VARINT_LEN: usize = 10;

/// `leading` value meaning no leading/trailing window was chosen yet.
const LEADING_UNSET: u8 = 0xff;

/// Why a chunk could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk already holds as many samples as its `u16` count allows.
    #[error("an XOR chunk holds at most {MAX_SAMPLES} samples")]
    TooManySamples,
    /// A timestamp was not greater than the one appended before it.
    #[error("timestamps must be strictly increasing: {got} follows {prev}")]
    NonIncreasingTimestamp {
        /// The timestamp of the previous sample.
        prev: i64,
        /// The rejected timestamp.
        got: i64,
    },
    /// `chunk_samples` was asked for chunks no chunk can be.
    #[error("max samples per chunk must be between 1 and {MAX_SAMPLES}, got {0}")]
    InvalidChunkSize(usize),
    /// The data is too short to hold the sample count.
    #[error("XOR chunk is {0} bytes, shorter than its 2-byte sample count")]
    MissingHeader(usize),
    /// The bit stream ended before all counted samples were read.
    #[error("XOR chunk data ends inside sample {sample} of {count}")]
    Truncated {
        /// Zero-based index of the sample being read.
        sample: usize,
        /// Sample count from the header.
        count: usize,
    },
    /// A varint timestamp or delta does not fit in 64 bits.
    #[error("XOR chunk sample {sample}: varint overflows 64 bits")]
    VarintOverflow {
        /// Zero-based index of the sample being read.
        sample: usize,
    },
    /// A value's leading zero and significant bit counts add up past 64.
    #[error(
        "XOR chunk sample {sample}: {leading} leading zero bits plus {significant} significant bits exceed 64"
    )]
    InvalidValueWidth {
        /// Zero-based index of the sample being read.
        sample: usize,
        /// Leading zero bits read from the stream.
        leading: u8,
        /// Significant bits read from the stream.
        significant: u8,
    },
}

/// One encoded chunk and the time range of its samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedChunk {
    /// Timestamp of the first sample.
    pub min_time: i64,
    /// Timestamp of the last sample.
    pub max_time: i64,
    /// Chunk bytes in Prometheus XOR encoding.
    pub data: Vec<u8>,
}

/// Builds one XOR chunk sample by sample.
#[derive(Debug, Clone)]
pub struct XorEncoder {
    bits: BitWriter,
    count: usize,
    min_time: Option<i64>,
    /// Last appended timestamp and value.
    last: Option<(i64, f64)>,
    /// Last timestamp delta, kept as Go keeps it: an unsigned 64-bit value.
    t_delta: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl XorEncoder {
    /// Starts an empty chunk.
    pub fn new() -> Self {
        Self {
            bits: BitWriter::new(),
            count: 0,
            min_time: None,
            last: None,
            t_delta: 0,
            leading: LEADING_UNSET,
            trailing: 0,
        }
    }

    /// Appends a sample.
    ///
    /// Fails if `t` is not greater than the previous timestamp or the chunk
    /// already holds `u16::MAX` samples; the chunk is unchanged then.
    pub fn append(&mut self, t: i64, v: f64) -> Result<(), ChunkError> {
        if self.count >= MAX_SAMPLES {
            return Err(ChunkError::TooManySamples);
        }
        match self.last {
            None => {
                self.bits.write_varint(t);
                self.bits.write_bits(v.to_bits(), 64);
                self.min_time = Some(t);
            }
            Some((prev_t, prev_v)) => {
                if t <= prev_t {
                    return Err(ChunkError::NonIncreasingTimestamp {
                        prev: prev_t,
                        got: t,
                    });
                }
                // Reinterpreting the wrapped difference as unsigned gives the
                // exact delta even when it exceeds i64::MAX.
                let t_delta = t.wrapping_sub(prev_t) as u64;
                if self.count == 1 {
                    self.bits.write_uvarint(t_delta);
                } else {
                    let dod = t_delta.wrapping_sub(self.t_delta) as i64;
                    self.write_dod(dod);
                }
                self.t_delta = t_delta;
                self.write_value(v, prev_v);
            }
        }
        self.last = Some((t, v));
        self.count += 1;
        Ok(())
    }

    /// Number of samples appended so far.
    pub fn num_samples(&self) -> usize {
        self.count
    }

    /// Timestamp of the first sample, if any.
    pub fn min_time(&self) -> Option<i64> {
        self.min_time
    }

    /// Timestamp of the last sample, if any.
    pub fn max_time(&self) -> Option<i64> {
        self.last.map(|(t, _)| t)
    }

    /// Returns the chunk bytes.
    pub fn finish(self) -> Vec<u8> {
        // `append` never lets count pass u16::MAX, so this cannot saturate.
        let count = u16::try_from(self.count).unwrap_or(u16::MAX);
        let mut data = self.bits.into_bytes();
        data[..HEADER_LEN].copy_from_slice(&count.to_be_bytes());
        data
    }

    fn write_dod(&mut self, dod: i64) {
        // Bucket widths are tuned for millisecond timestamps (Gorilla's
        // original ones were for seconds); the wide bucket keeps all 64 bits
        // so that any wrapped difference survives.
        if dod == 0 {
            self.bits.write_bit(false);
        } else if bit_range(dod, 14) {
            self.bits.write_bits(0b10, 2);
            self.bits.write_bits(dod as u64, 14);
        } else if bit_range(dod, 17) {
            self.bits.write_bits(0b110, 3);
            self.bits.write_bits(dod as u64, 17);
        } else if bit_range(dod, 20) {
            self.bits.write_bits(0b1110, 4);
            self.bits.write_bits(dod as u64, 20);
        } else {
            self.bits.write_bits(0b1111, 4);
            self.bits.write_bits(dod as u64, 64);
        }
    }

    fn write_value(&mut self, v: f64, prev: f64) {
        let delta = v.to_bits() ^ prev.to_bits();
        if delta == 0 {
            self.bits.write_bit(false);
            return;
        }
        self.bits.write_bit(true);

        // The count has only 5 bits on the wire.
        let new_leading = delta.leading_zeros().min(31) as u8;
        let new_trailing = delta.trailing_zeros() as u8;

        if self.leading != LEADING_UNSET
            && new_leading >= self.leading
            && new_trailing >= self.trailing
        {
            // The previous window still covers every set bit: skip the header.
            self.bits.write_bit(false);
            let significant = 64 - u32::from(self.leading) - u32::from(self.trailing);
            self.bits.write_bits(delta >> self.trailing, significant);
            return;
        }

        self.leading = new_leading;
        self.trailing = new_trailing;
        self.bits.write_bit(true);
        self.bits.write_bits(u64::from(new_leading), 5);
        let significant = 64 - u32::from(new_leading) - u32::from(new_trailing);
        // 64 does not fit in 6 bits; 0 stands for it because a zero-width
        // delta never gets here (it took the `delta == 0` branch).
        self.bits.write_bits(u64::from(significant & 0x3f), 6);
        self.bits.write_bits(delta >> new_trailing, significant);
    }
}

/// Whether `x` fits Prometheus' `n`-bit delta-of-delta bucket.
///
/// The range is asymmetric, `-(2^(n-1) - 1) ..= 2^(n-1)`, because the
/// decoder reads exactly `2^(n-1)` as positive.
fn bit_range(x: i64, n: u32) -> bool {
    let half = 1i64 << (n - 1);
    -(half - 1) <= x && x <= half
}

/// Encodes samples into one XOR chunk.
///
/// Timestamps must be strictly increasing and there may be at most
/// `u16::MAX` samples. An empty slice gives an empty chunk.
pub fn encode_xor(samples: &[(i64, f64)]) -> Result<Vec<u8>, ChunkError> {
    if samples.len() > MAX_SAMPLES {
        return Err(ChunkError::TooManySamples);
    }
    let mut enc = XorEncoder::new();
    for &(t, v) in samples {
        enc.append(t, v)?;
    }
    Ok(enc.finish())
}

/// Splits samples into consecutive XOR chunks of at most `max_per_chunk`
/// samples each, as Prometheus does with [`SAMPLES_PER_CHUNK`].
///
/// Timestamps must be strictly increasing across the whole slice, so the
/// chunks are ordered and do not overlap. An empty slice gives no chunks.
pub fn chunk_samples(
    samples: &[(i64, f64)],
    max_per_chunk: usize,
) -> Result<Vec<EncodedChunk>, ChunkError> {
    if max_per_chunk == 0 || max_per_chunk > MAX_SAMPLES {
        return Err(ChunkError::InvalidChunkSize(max_per_chunk));
    }
    let mut chunks: Vec<EncodedChunk> = Vec::with_capacity(samples.len().div_ceil(max_per_chunk));
    for part in samples.chunks(max_per_chunk) {
        let mut enc = XorEncoder::new();
        for &(t, v) in part {
            enc.append(t, v)?;
        }
        let (Some(min_time), Some(max_time)) = (enc.min_time(), enc.max_time()) else {
            // `chunks` never yields an empty part.
            continue;
        };
        if let Some(prev) = chunks.last()
            && min_time <= prev.max_time
        {
            return Err(ChunkError::NonIncreasingTimestamp {
                prev: prev.max_time,
                got: min_time,
            });
        }
        chunks.push(EncodedChunk {
            min_time,
            max_time,
            data: enc.finish(),
        });
    }
    Ok(chunks)
}

/// Decodes an XOR chunk into its samples.
///
/// Follows Prometheus' iterator: padding bits and any bytes after the last
/// counted sample are ignored, and timestamps are not checked for order.
/// Input that ends early or cannot have come from an encoder is an error.
pub fn decode_xor(data: &[u8]) -> Result<Vec<(i64, f64)>, ChunkError> {
    let Some((header, stream)) = data.split_first_chunk::<HEADER_LEN>() else {
        return Err(ChunkError::MissingHeader(data.len()));
    };
    let count = usize::from(u16::from_be_bytes(*header));
    let mut reader = BitReader::new(stream);
    // Every sample takes at least two bits, so a corrupt count cannot make
    // this allocate much more than the data could hold.
    let mut samples = Vec::with_capacity(count.min(stream.len() * 4 + 1));

    let mut t = 0i64;
    let mut t_delta = 0u64;
    let mut bits = 0u64;
    // Prometheus' iterator starts from an all-significant window rather than
    // "unset", so a stream reusing the window first still decodes as it does.
    let mut window = Window {
        leading: 0,
        trailing: 0,
    };

    for sample in 0..count {
        let at = |e: ReadError| e.at(sample, count);
        match sample {
            0 => {
                t = reader.read_varint().map_err(at)?;
                bits = reader.read_bits(64).map_err(at)?;
            }
            1 => {
                t_delta = reader.read_uvarint().map_err(at)?;
                t = t.wrapping_add(t_delta as i64);
                bits = reader.read_value(bits, &mut window).map_err(at)?;
            }
            _ => {
                let dod = reader.read_dod().map_err(at)?;
                t_delta = t_delta.wrapping_add(dod as u64);
                t = t.wrapping_add(t_delta as i64);
                bits = reader.read_value(bits, &mut window).map_err(at)?;
            }
        }
        samples.push((t, f64::from_bits(bits)));
    }
    Ok(samples)
}

/// Appends bits most significant first, as Prometheus' `bstream` does.
#[derive(Debug, Clone)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Partially filled byte, not yet in `bytes`.
    current: u8,
    /// Bits of `current` in use, 0..8.
    used: u32,
}

impl BitWriter {
    fn new() -> Self {
        // Room for the count header and a typical 120-sample chunk.
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&[0; HEADER_LEN]);
        Self {
            bytes,
            current: 0,
            used: 0,
        }
    }

    fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the low `n` bits of `value`, `n` at most 64.
    fn write_bits(&mut self, value: u64, mut n: u32) {
        while n > 0 {
            let take = n.min(8 - self.used);
            let mask = (1u64 << take) - 1;
            let chunk = ((value >> (n - take)) & mask) as u8;
            self.current |= chunk << (8 - self.used - take);
            self.used += take;
            n -= take;
            if self.used == 8 {
                self.bytes.push(self.current);
                self.current = 0;
                self.used = 0;
            }
        }
    }

    fn write_uvarint(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.write_bits((x & 0x7f) | 0x80, 8);
            x >>= 7;
        }
        self.write_bits(x, 8);
    }

    fn write_varint(&mut self, x: i64) {
        // Zigzag, as Go's binary.PutVarint, keeps small negatives short.
        let zigzag = ((x as u64) << 1) ^ ((x >> 63) as u64);
        self.write_uvarint(zigzag);
    }

    fn into_bytes(mut self) -> Vec<u8> {
        if self.used > 0 {
            self.bytes.push(self.current);
        }
        self.bytes
    }
}

/// A decoding failure before the sample it happened in is known.
#[derive(Debug, Clone, Copy)]
enum ReadError {
    Eof,
    VarintOverflow,
    InvalidValueWidth { leading: u8, significant: u8 },
}

impl ReadError {
    fn at(self, sample: usize, count: usize) -> ChunkError {
        match self {
            Self::Eof => ChunkError::Truncated { sample, count },
            Self::VarintOverflow => ChunkError::VarintOverflow { sample },
            Self::InvalidValueWidth {
                leading,
                significant,
            } => ChunkError::InvalidValueWidth {
                sample,
                leading,
                significant,
            },
        }
    }
}

/// The bits of a value delta that may be set, as last announced.
struct Window {
    leading: u8,
    trailing: u8,
}

/// Reads bits most significant first.
struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn read_bit(&mut self) -> Result<bool, ReadError> {
        Ok(self.read_bits(1)? == 1)
    }

    /// Reads `n` bits, `n` at most 64, into the low bits of the result.
    fn read_bits(&mut self, mut n: u32) -> Result<u64, ReadError> {
        if self.data.len() * 8 - self.pos < n as usize {
            return Err(ReadError::Eof);
        }
        let mut out = 0u64;
        while n > 0 {
            let byte = u64::from(*self.data.get(self.pos / 8).ok_or(ReadError::Eof)?);
            let available = 8 - (self.pos % 8) as u32;
            let take = n.min(available);
            let chunk = (byte >> (available - take)) & ((1u64 << take) - 1);
            // `out` holds at most 64 - take bits here, so nothing shifts out.
            out = (out << take) | chunk;
            self.pos += take as usize;
            n -= take;
        }
        Ok(out)
    }

    /// Reads a Go `binary.PutUvarint` value, rejecting the same overflows
    /// Go's `binary.ReadUvarint` does.
    fn read_uvarint(&mut self) -> Result<u64, ReadError> {
        let mut x = 0u64;
        let mut shift = 0u32;
        for i in 0..MAX_VARINT_LEN {
            let byte = self.read_bits(8)?;
            if byte < 0x80 {
                // The tenth byte may only contribute the single remaining bit.
                if i == MAX_VARINT_LEN - 1 && byte > 1 {
                    return Err(ReadError::VarintOverflow);
                }
                return Ok(x | (byte << shift));
            }
            x |= (byte & 0x7f) << shift;
            shift += 7;
        }
        Err(ReadError::VarintOverflow)
    }

    /// Reads a Go `binary.PutVarint` (zigzag) value.
    fn read_varint(&mut self) -> Result<i64, ReadError> {
        let zigzag = self.read_uvarint()?;
        let magnitude = (zigzag >> 1) as i64;
        Ok(if zigzag & 1 == 0 {
            magnitude
        } else {
            !magnitude
        })
    }

    fn read_dod(&mut self) -> Result<i64, ReadError> {
        // The prefix is a run of up to four 1 bits ended by a 0 bit.
        let mut ones = 0;
        while ones < 4 && self.read_bit()? {
            ones += 1;
        }
        let width = match ones {
            0 => return Ok(0),
            1 => 14,
            2 => 17,
            3 => 20,
            _ => return Ok(self.read_bits(64)? as i64),
        };
        let raw = self.read_bits(width)?;
        // Sign-extend; `2^(width-1)` itself stays positive, matching the
        // encoder's asymmetric bucket ranges.
        let value = if raw > 1 << (width - 1) {
            raw as i64 - (1i64 << width)
        } else {
            raw as i64
        };
        Ok(value)
    }

    /// Reads one value given the previous value's bits.
    fn read_value(&mut self, prev: u64, window: &mut Window) -> Result<u64, ReadError> {
        if !self.read_bit()? {
            return Ok(prev);
        }
        if self.read_bit()? {
            let leading = self.read_bits(5)? as u8;
            let significant = match self.read_bits(6)? as u8 {
                0 => 64,
                n => n,
            };
            if u32::from(leading) + u32::from(significant) > 64 {
                return Err(ReadError::InvalidValueWidth {
                    leading,
                    significant,
                });
            }
            window.leading = leading;
            window.trailing = 64 - leading - significant;
        }
        let significant = 64 - u32::from(window.leading) - u32::from(window.trailing);
        let delta = self.read_bits(significant)?;
        Ok(prev ^ (delta << window.trailing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Prometheus' stale marker.
    const STALE: f64 = f64::from_bits(0x7ff0_0000_0000_0002);
    /// Go's `math.NaN()`, which differs from Rust's `f64::NAN` in its payload.
    const GO_NAN: f64 = f64::from_bits(0x7ff8_0000_0000_0001);

    // Golden chunks produced by Prometheus' tsdb/chunkenc XORChunk
    // (github.com/prometheus/prometheus v0.305.0, `NewXORChunk`, `Append`,
    // `Bytes`) from the sample sets built by the functions of the same names
    // below.
    const GOLDEN_EMPTY: &str = "0000";
    const GOLDEN_ONE: &str = "0001d00f3ff8000000000000";
    const GOLDEN_TWO: &str = "0002d00f3ff80000000000009875c26fffc0";
    const GOLDEN_CONST: &str = "000414401c0000000000000a00";
    const GOLDEN_BUCKETS: &str = concat!(
        "001480c0a8ca9a3a3ff0000000000000c0843d3097ffe00057fff7fea000c087ffed",
        "000e0faf8ab90f22001d67c20018071f90f22001d67de000a000000000000000d000",
        "0c1fc000000000000001d0001d9a4000000000001f08000e1ffffc000000000000f7",
        "80006007d000018008000000000000001e800018000000000000000bc00000000002",
        "0000640fe240c9fbe76caffffffffffff800007800000012a05f200582b69426ba8d",
        "0b21ffffffffbcf1dcc0160f0370fe17c79aca0000400000000000",
    );
    const GOLDEN_NAN_INF: &str = concat!(
        "0007007ff80000000000019875d9a4000000000001b0fd000000000000000a800000",
        "00000000050000000000000002c00d80080080000000000010",
    );
    const GOLDEN_EXTREME: &str = concat!(
        "0006ffffffffffffffffff013ff000000000000001c25ffff7ffffffffffffffdd80",
        "fe000000000000000f585fbffffffffffffffeed07f0000000000000007b02c0",
    );

    fn one() -> Vec<(i64, f64)> {
        vec![(1000, 1.5)]
    }

    fn two() -> Vec<(i64, f64)> {
        vec![(1000, 1.5), (16000, 2.5)]
    }

    fn constant() -> Vec<(i64, f64)> {
        vec![(10, 7.0), (20, 7.0), (30, 7.0), (40, 7.0)]
    }

    /// Delta-of-deltas on both edges of every bucket, both signs.
    const BUCKET_DODS: [i64; 18] = [
        0,
        1,
        -1,
        8192,
        -8191,
        8193,
        -8192,
        65536,
        -65535,
        65537,
        -65536,
        524288,
        -524287,
        524289,
        -524288,
        10_000_000_000,
        -9_000_000_000,
        0,
    ];

    fn buckets() -> Vec<(i64, f64)> {
        let values = [
            1.0,
            1.0,
            2.0,
            2.0,
            0.5,
            -7.25,
            1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            STALE,
            GO_NAN,
            0.0,
            -0.0,
            f64::from_bits(1),
            f64::from_bits(3),
            123456.789,
            123456.789,
            -1e-300,
            42.0,
            42.5,
        ];
        let mut t = 1_000_000_000_000i64;
        let mut delta = 1_000_000i64;
        let mut out = vec![(t, values[0])];
        t += delta;
        out.push((t, values[1]));
        for (dod, v) in BUCKET_DODS.iter().zip(&values[2..]) {
            delta += dod;
            t += delta;
            out.push((t, *v));
        }
        out
    }

    fn nan_inf() -> Vec<(i64, f64)> {
        vec![
            (0, GO_NAN),
            (15000, STALE),
            (30000, 1.0),
            (45000, STALE),
            (60000, f64::INFINITY),
            (75000, f64::NEG_INFINITY),
            (90000, GO_NAN),
        ]
    }

    fn extreme() -> Vec<(i64, f64)> {
        vec![
            (i64::MIN, 1.0),
            (i64::MIN + 1, 2.0),
            (-1, 3.0),
            (0, 4.0),
            (i64::MAX - 1, 5.0),
            (i64::MAX, 6.0),
        ]
    }

    fn ramp(n: i64) -> Vec<(i64, f64)> {
        (0..n)
            .map(|i| {
                (
                    1_700_000_000_000 + i * 15_000 + (i % 7) * 13,
                    i as f64 * 0.1,
                )
            })
            .collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn bits_of(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
        samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
    }

    fn assert_round_trip(samples: &[(i64, f64)]) {
        let data = encode_xor(samples).unwrap();
        let decoded = decode_xor(&data).unwrap();
        assert_eq!(bits_of(&decoded), bits_of(samples));
    }

    #[test]
    fn matches_prometheus_bytes() {
        let cases = [
            ("empty", vec![], GOLDEN_EMPTY),
            ("one", one(), GOLDEN_ONE),
            ("two", two(), GOLDEN_TWO),
            ("const", constant(), GOLDEN_CONST),
            ("buckets", buckets(), GOLDEN_BUCKETS),
            ("nan_inf", nan_inf(), GOLDEN_NAN_INF),
            ("extreme", extreme(), GOLDEN_EXTREME),
        ];
        for (name, samples, golden) in cases {
            let golden = unhex(golden);
            assert_eq!(encode_xor(&samples).unwrap(), golden, "encoding {name}");
            let decoded = decode_xor(&golden).unwrap();
            assert_eq!(bits_of(&decoded), bits_of(&samples), "decoding {name}");
        }
    }

    #[test]
    fn bucket_dods_sit_on_every_bucket_edge() {
        for (n, inside, outside) in [
            (14, [8192, -8191], [8193, -8192]),
            (17, [65536, -65535], [65537, -65536]),
            (20, [524288, -524287], [524289, -524288]),
        ] {
            for dod in inside {
                assert!(bit_range(dod, n), "{dod} fits {n} bits");
                assert!(BUCKET_DODS.contains(&dod));
            }
            for dod in outside {
                assert!(!bit_range(dod, n), "{dod} does not fit {n} bits");
                assert!(BUCKET_DODS.contains(&dod));
            }
        }
        assert!(!bit_range(10_000_000_000, 20) && !bit_range(-9_000_000_000, 20));
        assert!(BUCKET_DODS.contains(&0));
    }

    #[test]
    fn round_trips_edge_cases() {
        assert_round_trip(&[]);
        assert_round_trip(&one());
        assert_round_trip(&two());
        assert_round_trip(&constant());
        assert_round_trip(&buckets());
        assert_round_trip(&nan_inf());
        assert_round_trip(&extreme());
        assert_round_trip(&[(i64::MIN, 0.0), (i64::MAX, -0.0)]);
        assert_round_trip(&[(-5, f64::NAN), (-4, f64::MAX), (-3, f64::MIN_POSITIVE)]);
        assert_round_trip(&[(i64::MAX - 2, 1.0), (i64::MAX - 1, 1.0), (i64::MAX, 2.0)]);
        assert_round_trip(&ramp(SAMPLES_PER_CHUNK as i64));
    }

    #[test]
    fn stale_marker_survives_bit_exactly() {
        let samples = [(1, 1.0), (2, STALE), (3, STALE), (4, 2.0), (5, STALE)];
        let decoded = decode_xor(&encode_xor(&samples).unwrap()).unwrap();
        assert_eq!(decoded[1].1.to_bits(), 0x7ff0_0000_0000_0002);
        assert_eq!(bits_of(&decoded), bits_of(&samples));
    }

    #[test]
    fn encoder_tracks_count_and_range() {
        let mut enc = XorEncoder::default();
        assert_eq!(
            (enc.num_samples(), enc.min_time(), enc.max_time()),
            (0, None, None)
        );
        enc.append(10, 1.0).unwrap();
        enc.append(20, 2.0).unwrap();
        assert_eq!(
            (enc.num_samples(), enc.min_time(), enc.max_time()),
            (2, Some(10), Some(20))
        );
    }

    #[test]
    fn encoder_rejects_non_increasing_timestamps_and_stays_usable() {
        let mut enc = XorEncoder::new();
        enc.append(10, 1.0).unwrap();
        assert!(matches!(
            enc.append(10, 2.0),
            Err(ChunkError::NonIncreasingTimestamp { prev: 10, got: 10 })
        ));
        assert!(matches!(
            enc.append(9, 2.0),
            Err(ChunkError::NonIncreasingTimestamp { prev: 10, got: 9 })
        ));
        enc.append(11, 3.0).unwrap();
        assert_eq!(enc.num_samples(), 2);
        assert_eq!(
            decode_xor(&enc.finish()).unwrap(),
            vec![(10, 1.0), (11, 3.0)]
        );
        assert!(encode_xor(&[(5, 1.0), (6, 1.0), (6, 1.0)]).is_err());
    }

    #[test]
    fn encoder_rejects_more_than_u16_max_samples() {
        let samples: Vec<(i64, f64)> = (0..=MAX_SAMPLES as i64).map(|t| (t, 0.5)).collect();
        assert!(matches!(
            encode_xor(&samples),
            Err(ChunkError::TooManySamples)
        ));
        let full = encode_xor(&samples[..MAX_SAMPLES]).unwrap();
        assert_eq!(&full[..2], &[0xff, 0xff]);
        assert_eq!(decode_xor(&full).unwrap().len(), MAX_SAMPLES);

        let mut enc = XorEncoder::new();
        for &(t, v) in &samples[..MAX_SAMPLES] {
            enc.append(t, v).unwrap();
        }
        assert!(matches!(
            enc.append(i64::MAX, 0.5),
            Err(ChunkError::TooManySamples)
        ));
    }

    #[test]
    fn chunk_samples_cuts_like_prometheus() {
        let samples = ramp(250);
        let chunks = chunk_samples(&samples, SAMPLES_PER_CHUNK).unwrap();
        assert_eq!(chunks.len(), 3);
        let mut decoded = Vec::new();
        for (chunk, part) in chunks.iter().zip(samples.chunks(SAMPLES_PER_CHUNK)) {
            assert_eq!(chunk.min_time, part[0].0);
            assert_eq!(chunk.max_time, part[part.len() - 1].0);
            assert_eq!(chunk.data, encode_xor(part).unwrap());
            decoded.extend(decode_xor(&chunk.data).unwrap());
        }
        assert_eq!(bits_of(&decoded), bits_of(&samples));
        assert!(chunk_samples(&[], SAMPLES_PER_CHUNK).unwrap().is_empty());
    }

    #[test]
    fn chunk_samples_rejects_bad_input() {
        assert!(matches!(
            chunk_samples(&one(), 0),
            Err(ChunkError::InvalidChunkSize(0))
        ));
        assert!(matches!(
            chunk_samples(&one(), MAX_SAMPLES + 1),
            Err(ChunkError::InvalidChunkSize(_))
        ));
        // Out of order across a chunk boundary.
        assert!(matches!(
            chunk_samples(&[(1, 1.0), (2, 1.0), (2, 1.0)], 2),
            Err(ChunkError::NonIncreasingTimestamp { prev: 2, got: 2 })
        ));
        assert!(chunk_samples(&[(3, 1.0), (2, 1.0)], 5).is_err());
    }

    #[test]
    fn decode_rejects_missing_header() {
        assert!(matches!(decode_xor(&[]), Err(ChunkError::MissingHeader(0))));
        assert!(matches!(
            decode_xor(&[0]),
            Err(ChunkError::MissingHeader(1))
        ));
        assert!(decode_xor(&[0, 0]).unwrap().is_empty());
    }

    #[test]
    fn decode_rejects_every_truncation() {
        for samples in [one(), two(), buckets(), nan_inf(), extreme(), ramp(120)] {
            let data = encode_xor(&samples).unwrap();
            for len in 0..data.len() {
                assert!(decode_xor(&data[..len]).is_err(), "prefix of {len} bytes");
            }
        }
    }

    #[test]
    fn decode_rejects_count_beyond_data() {
        let mut data = unhex(GOLDEN_ONE);
        data[1] = 2;
        assert!(matches!(
            decode_xor(&data),
            Err(ChunkError::Truncated {
                sample: 1,
                count: 2
            })
        ));
        assert!(matches!(
            decode_xor(&[0, 1]),
            Err(ChunkError::Truncated {
                sample: 0,
                count: 1
            })
        ));
    }

    #[test]
    fn decode_rejects_overlong_varints() {
        let mut data = vec![0, 1];
        data.extend([0xff; 11]);
        assert!(matches!(
            decode_xor(&data),
            Err(ChunkError::VarintOverflow { sample: 0 })
        ));
        let mut data = vec![0, 1];
        data.extend([0x80; 9]);
        data.push(0x02);
        data.extend([0; 8]);
        assert!(matches!(
            decode_xor(&data),
            Err(ChunkError::VarintOverflow { sample: 0 })
        ));
    }

    #[test]
    fn decode_rejects_impossible_value_width() {
        let mut w = BitWriter::new();
        w.write_varint(0);
        w.write_bits(0, 64);
        w.write_uvarint(1);
        // Changed value, new window: 31 leading zeros and 63 significant bits.
        w.write_bits(0b11, 2);
        w.write_bits(31, 5);
        w.write_bits(63, 6);
        w.write_bits(0, 63);
        let mut data = w.into_bytes();
        data[1] = 2;
        assert!(matches!(
            decode_xor(&data),
            Err(ChunkError::InvalidValueWidth {
                sample: 1,
                leading: 31,
                significant: 63
            })
        ));
    }

    #[test]
    fn decode_ignores_bytes_after_the_last_sample() {
        let mut data = unhex(GOLDEN_TWO);
        data.extend([0xde, 0xad]);
        assert_eq!(bits_of(&decode_xor(&data).unwrap()), bits_of(&two()));
    }

    #[test]
    fn errors_read_well() {
        let err = ChunkError::Truncated {
            sample: 3,
            count: 120,
        };
        assert_eq!(
            err.to_string(),
            "XOR chunk data ends inside sample 3 of 120"
        );
        assert_eq!(
            ChunkError::TooManySamples.to_string(),
            "an XOR chunk holds at most 65535 samples"
        );
    }

    /// Strictly increasing timestamps from anywhere in the `i64` range, with
    /// values that repeat, change in a few bits, or are arbitrary bit
    /// patterns, so every encoding branch is taken.
    fn samples_strategy() -> impl Strategy<Value = Vec<(i64, f64)>> {
        let delta = prop_oneof![
            4 => 1u64..=120_000,
            2 => 1u64..=(1 << 24),
            1 => 1u64..=u64::MAX,
        ];
        let value = (0u8..4, any::<u64>());
        (any::<i64>(), prop::collection::vec((delta, value), 0..300)).prop_map(|(start, steps)| {
            let mut out = Vec::with_capacity(steps.len());
            let mut t = start;
            let mut bits = 0u64;
            for (i, (delta, (kind, raw))) in steps.into_iter().enumerate() {
                if i > 0 {
                    match t.checked_add_unsigned(delta) {
                        Some(next) => t = next,
                        None => break,
                    }
                }
                bits = match kind {
                    0 => bits,
                    1 => bits ^ (raw & 0x00ff_f000_0000_0000),
                    _ => raw,
                };
                out.push((t, f64::from_bits(bits)));
            }
            out
        })
    }

    proptest! {
        #[test]
        fn round_trips_any_samples(samples in samples_strategy()) {
            let data = encode_xor(&samples).unwrap();
            let decoded = decode_xor(&data).unwrap();
            prop_assert_eq!(bits_of(&decoded), bits_of(&samples));
        }

        #[test]
        fn chunked_round_trips_any_samples(
            samples in samples_strategy(),
            max in 1usize..=150,
        ) {
            let chunks = chunk_samples(&samples, max).unwrap();
            prop_assert_eq!(chunks.len(), samples.len().div_ceil(max));
            let mut decoded = Vec::new();
            for chunk in &chunks {
                let part = decode_xor(&chunk.data).unwrap();
                prop_assert!(!part.is_empty() && part.len() <= max);
                prop_assert_eq!(chunk.min_time, part[0].0);
                prop_assert_eq!(chunk.max_time, part[part.len() - 1].0);
                decoded.extend(part);
            }
            prop_assert_eq!(bits_of(&decoded), bits_of(&samples));
        }

        #[test]
        fn decoding_garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_xor(&data);
        }
    }
}

//! Series as the bytes they arrived in.
//!
//! Most series pass through unchanged: one remote sent them, in order, and
//! nothing local (replica-label stripping, sharding) applies. Those are
//! relayed as the encoded `thanos.Series` message the remote sent: sliced
//! out of the received frame without a copy, checked, their labels read in
//! place to merge and to check order, and written into the outgoing frame
//! as they are. Only a series that needs more (labels to sort or strip,
//! copies from several remotes to combine) is decoded and encoded again.
//!
//! Label names and values are checked to be UTF-8 on every series, relayed
//! or decoded: they are protobuf strings, which the querier's decoding (like
//! ours) refuses otherwise, so one bad series would fail the querier's whole
//! call. Here it is that remote's error instead.

use std::cmp::Ordering;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::proto::thanos::{AggrChunk, Label, Series};

/// Field numbers of `thanos.Series`.
const LABELS: u32 = 1;
const CHUNKS: u32 = 2;

/// One encoded `thanos.Series`, checked by [`RawSeries::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct RawSeries {
    bytes: Bytes,
    chunks: u32,
}

/// What [`RawSeries::parse`] found besides the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// Label names strictly increasing: ready to relay.
    Sorted,
    /// Label names out of order: decode and sort before relaying.
    Unsorted,
}

impl RawSeries {
    /// Checks that `bytes` is a well-formed `thanos.Series` (the fields we
    /// read have the right wire types, lengths fit) whose label names are
    /// not repeated back to back.
    pub fn parse(bytes: Bytes) -> Result<(Self, Labels), String> {
        let mut order = Labels::Sorted;
        let mut chunks = 0u32;
        let mut previous: Option<&[u8]> = None;
        let mut reader = Reader::new(&bytes);
        while let Some((field, value)) = reader.next().map_err(|e| format!("series: {e}"))? {
            match field {
                LABELS => {
                    let (name, value) = label(expect_len(value, "series label")?)
                        .map_err(|e| format!("series label: {e}"))?;
                    // Label names and values are strings: a querier (or our
                    // own decoding, for a series to merge) refuses others.
                    if std::str::from_utf8(name).is_err() || std::str::from_utf8(value).is_err() {
                        return Err(format!(
                            "label {}={:?} is not valid UTF-8",
                            crate::labelset::bounded(&String::from_utf8_lossy(name), 100),
                            crate::labelset::bounded(&String::from_utf8_lossy(value), 100),
                        ));
                    }
                    if let Some(previous) = previous {
                        match previous.cmp(name) {
                            Ordering::Less => {}
                            Ordering::Equal => {
                                return Err(format!(
                                    "duplicate label name {:?} in one series",
                                    String::from_utf8_lossy(name)
                                ));
                            }
                            Ordering::Greater => order = Labels::Unsorted,
                        }
                    }
                    previous = Some(name);
                }
                CHUNKS => {
                    check_aggr_chunk(expect_len(value, "series chunk")?)
                        .map_err(|e| format!("series chunk: {e}"))?;
                    chunks += 1;
                }
                _ => {}
            }
        }
        Ok((Self { bytes, chunks }, order))
    }

    /// Encodes a decoded series.
    pub fn encode(series: &Series) -> Self {
        Self {
            bytes: series.encode_to_vec().into(),
            chunks: u32::try_from(series.chunks.len()).unwrap_or(u32::MAX),
        }
    }

    /// Decodes the series, validating its text.
    pub fn decode(&self) -> Result<Series, String> {
        Series::decode(self.bytes.clone()).map_err(|e| format!("series: {e}"))
    }

    /// Its labels, name and value, in the order they were sent.
    pub fn labels(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        // Checked by `parse`: a malformed label cannot occur here.
        self.messages(LABELS).filter_map(|m| label(m).ok())
    }

    /// The encoded messages in field `number` (labels 1, chunks 2).
    fn messages(&self, number: u32) -> impl Iterator<Item = &[u8]> {
        messages(&self.bytes, number)
    }

    /// Its chunks, decoded.
    pub fn decode_chunks(&self) -> impl Iterator<Item = AggrChunk> {
        // Checked by `parse`, and an AggrChunk has no text to validate:
        // decoding cannot fail here. Decoded from a slice of the series'
        // own buffer, so chunk data is not copied.
        self.messages(CHUNKS)
            .filter_map(|m| AggrChunk::decode(self.bytes.slice_ref(m)).ok())
    }

    /// A series with this one's labels, as sent, and `chunks`.
    pub fn with_chunks(&self, chunks: &[AggrChunk]) -> Self {
        let labels: Vec<&[u8]> = self.messages(LABELS).collect();
        let len = labels
            .iter()
            .map(|l| len_field(LABELS, l.len()))
            .sum::<usize>()
            + chunks
                .iter()
                .map(|c| len_field(CHUNKS, c.encoded_len()))
                .sum::<usize>();
        let mut buf = BytesMut::with_capacity(len);
        for label in labels {
            put_len_field(LABELS, label, &mut buf);
        }
        for chunk in chunks {
            encoding::message::encode(CHUNKS, chunk, &mut buf);
        }
        Self {
            bytes: buf.freeze(),
            chunks: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
        }
    }

    /// Its labels, decoded for messages (invalid UTF-8 replaced).
    pub fn decode_labels(&self) -> Vec<Label> {
        self.labels()
            .map(|(name, value)| Label {
                name: String::from_utf8_lossy(name).into_owned(),
                value: String::from_utf8_lossy(value).into_owned(),
            })
            .collect()
    }

    /// Number of chunks.
    pub fn chunks(&self) -> usize {
        self.chunks as usize
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// Compares two series' label sets like Prometheus `labels.Compare`.
pub fn compare(a: &RawSeries, b: &RawSeries) -> Ordering {
    let (x, y) = (&a.bytes[..], &b.bytes[..]);
    // Series sorted next to each other share most of their labels, and
    // fields that are byte for byte the same are equal: parse labels only
    // from the field where the encodings first differ.
    let same = common_prefix(x, y);
    if same == x.len() && same == y.len() {
        return Ordering::Equal;
    }
    let start = field_start(x, same);
    let mut a = messages(&x[start..], LABELS).filter_map(|m| label(m).ok());
    let mut b = messages(&y[start..], LABELS).filter_map(|m| label(m).ok());
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) => match x.cmp(&y) {
                Ordering::Equal => {}
                other => return other,
            },
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
        }
    }
}

/// Length of the longest common prefix of `x` and `y`.
fn common_prefix(x: &[u8], y: &[u8]) -> usize {
    const WORD: usize = 8;
    let len = x.len().min(y.len());
    let mut i = 0;
    while i + WORD <= len {
        if x[i..i + WORD] != y[i..i + WORD] {
            break;
        }
        i += WORD;
    }
    i + x[i..len]
        .iter()
        .zip(&y[i..len])
        .take_while(|(a, b)| a == b)
        .count()
}

/// Offset of the top-level field of the encoded message `x` that contains
/// byte `at` (`x.len()` when `at` is past its last field).
fn field_start(x: &[u8], at: usize) -> usize {
    let mut reader = Reader::new(x);
    let mut start = 0;
    while let Ok(Some(_)) = reader.next() {
        let end = x.len() - reader.buf.len();
        if end > at {
            return start;
        }
        start = end;
    }
    start
}

/// The encoded messages in field `number` of the encoded message `x`.
fn messages(x: &[u8], number: u32) -> impl Iterator<Item = &[u8]> {
    let mut reader = Reader::new(x);
    std::iter::from_fn(move || {
        loop {
            match reader.next().ok()?? {
                (field, Value::Len(bytes)) if field == number => return Some(bytes),
                _ => continue,
            }
        }
    })
}

/// A `thanos.SeriesResponse` whose series stay encoded. One type for both
/// directions: what a remote sent, and what we send.
#[derive(Debug, Default, Clone, PartialEq)]
pub enum SeriesFrame {
    #[default]
    Empty,
    /// One series (field 1).
    Series(Bytes),
    /// A warning (field 2).
    Warning(String),
    /// Store-specific hints (field 3), which mean nothing past their store;
    /// dropped when decoded, never encoded.
    Hints,
    /// A batch of series (field 4).
    Batch(Vec<Bytes>),
}

const SERIES: u32 = 1;
const WARNING: u32 = 2;
const HINTS: u32 = 3;
const BATCH: u32 = 4;
const BATCH_SERIES: u32 = 1;

fn len_field(tag: u32, len: usize) -> usize {
    encoding::key_len(tag) + encoding::encoded_len_varint(len as u64) + len
}

fn batch_len(series: &[Bytes]) -> usize {
    series
        .iter()
        .map(|s| len_field(BATCH_SERIES, s.len()))
        .sum()
}

fn put_len_field(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

impl Message for SeriesFrame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            SeriesFrame::Empty | SeriesFrame::Hints => {}
            SeriesFrame::Series(series) => put_len_field(SERIES, series, buf),
            SeriesFrame::Warning(warning) => encoding::string::encode(WARNING, warning, buf),
            SeriesFrame::Batch(series) => {
                encoding::encode_key(BATCH, WireType::LengthDelimited, buf);
                encoding::encode_varint(batch_len(series) as u64, buf);
                for one in series {
                    put_len_field(BATCH_SERIES, one, buf);
                }
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            SERIES => {
                let mut series = Bytes::new();
                encoding::bytes::merge(wire_type, &mut series, buf, ctx)?;
                *self = SeriesFrame::Series(series);
            }
            WARNING => {
                let mut warning = String::new();
                encoding::string::merge(wire_type, &mut warning, buf, ctx)?;
                *self = SeriesFrame::Warning(warning);
            }
            HINTS => {
                encoding::skip_field(wire_type, tag, buf, ctx)?;
                *self = SeriesFrame::Hints;
            }
            BATCH => {
                let mut batch = Bytes::new();
                encoding::bytes::merge(wire_type, &mut batch, buf, ctx.clone())?;
                let mut series = Vec::new();
                while batch.has_remaining() {
                    let (tag, wire_type) = encoding::decode_key(&mut batch)?;
                    if tag == BATCH_SERIES {
                        let mut one = Bytes::new();
                        encoding::bytes::merge(wire_type, &mut one, &mut batch, ctx.clone())?;
                        series.push(one);
                    } else {
                        encoding::skip_field(wire_type, tag, &mut batch, ctx.clone())?;
                    }
                }
                *self = SeriesFrame::Batch(series);
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx)?,
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        match self {
            SeriesFrame::Empty | SeriesFrame::Hints => 0,
            SeriesFrame::Series(series) => len_field(SERIES, series.len()),
            SeriesFrame::Warning(warning) => encoding::string::encoded_len(WARNING, warning),
            SeriesFrame::Batch(series) => len_field(BATCH, batch_len(series)),
        }
    }

    fn clear(&mut self) {
        *self = SeriesFrame::Empty;
    }
}

/// One field's value as read from the wire.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint,
    Fixed,
    Len(&'a [u8]),
}

/// Reads the fields of one encoded message, in place.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for (i, &byte) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err("malformed varint")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.buf.len() {
            return Err("length beyond the end of the message");
        }
        let (taken, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(taken)
    }

    /// The next field number and value; `None` at the end.
    fn next(&mut self) -> Result<Option<(u32, Value<'a>)>, &'static str> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        // Protobuf keys are 32 bits: field numbers 1 to 2^29 - 1.
        let field = u32::try_from(key)
            .ok()
            .map(|key| key >> 3)
            .filter(|field| *field >= 1)
            .ok_or("field number out of range")?;
        let value = match key & 7 {
            0 => {
                self.varint()?;
                Value::Varint
            }
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| "length out of range")?;
                Value::Len(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return Err("unsupported wire type"),
        };
        Ok(Some((field, value)))
    }
}

fn expect_len<'a>(value: Value<'a>, what: &str) -> Result<&'a [u8], String> {
    match value {
        Value::Len(bytes) => Ok(bytes),
        _ => Err(format!("{what} is not length-delimited")),
    }
}

fn expect_varint(value: Value<'_>, what: &str) -> Result<(), String> {
    match value {
        Value::Varint => Ok(()),
        _ => Err(format!("{what} is not a varint")),
    }
}

/// A `thanos.Label`'s name and value (the last of each, as protobuf merges).
fn label(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
    let mut reader = Reader::new(bytes);
    while let Some((field, v)) = reader.next()? {
        match field {
            1 => name = expect_len(v, "name")?,
            2 => value = expect_len(v, "value")?,
            _ => {}
        }
    }
    Ok((name, value))
}

/// Checks the fields of a `thanos.AggrChunk` and of its chunks.
fn check_aggr_chunk(bytes: &[u8]) -> Result<(), String> {
    let mut reader = Reader::new(bytes);
    while let Some((field, value)) = reader.next()? {
        match field {
            1 | 2 => expect_varint(value, "time")?,
            3..=8 => check_chunk(expect_len(value, "chunk")?)?,
            _ => {}
        }
    }
    Ok(())
}

fn check_chunk(bytes: &[u8]) -> Result<(), String> {
    let mut reader = Reader::new(bytes);
    while let Some((field, value)) = reader.next()? {
        match field {
            1 => expect_varint(value, "chunk type")?,
            2 => {
                expect_len(value, "chunk data")?;
            }
            3 => expect_varint(value, "chunk hash")?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labelset::{self, from_pairs};
    use crate::proto::thanos::{Chunk, SeriesBatch, SeriesResponse, series_response};
    use proptest::prelude::*;

    fn series(pairs: &[(&str, &str)], chunks: usize) -> Series {
        Series {
            labels: from_pairs(pairs.iter().copied()),
            chunks: (0..chunks)
                .map(|i| AggrChunk {
                    min_time: i as i64 * 10,
                    max_time: i as i64 * 10 + 9,
                    raw: Some(Chunk {
                        r#type: 0,
                        data: vec![i as u8; 5].into(),
                        hash: 7,
                    }),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn parses_what_prost_encodes() {
        let s = series(&[("__name__", "up"), ("job", "a")], 3);
        let (raw, order) = RawSeries::parse(s.encode_to_vec().into()).unwrap();
        assert_eq!(order, Labels::Sorted);
        assert_eq!(raw.chunks(), 3);
        assert_eq!(raw.decode_labels(), s.labels);
        assert_eq!(raw.decode().unwrap(), s);
    }

    #[test]
    fn keys_beyond_32_bits_are_refused() {
        // Field 4027327949, varint: a key protobuf cannot have.
        let bytes = Bytes::from_static(&[232, 128, 128, 128, 16, 128, 0]);
        assert!(Series::decode(bytes.as_ref()).is_err());
        let err = RawSeries::parse(bytes).expect_err("a key over 32 bits");
        assert!(err.contains("field number out of range"), "{err}");
    }

    #[test]
    fn labels_that_are_not_utf8_are_refused() {
        let series = |name: &[u8], value: &[u8]| {
            let mut label = Vec::new();
            prost::encoding::bytes::encode(1, &name.to_vec(), &mut label);
            prost::encoding::bytes::encode(2, &value.to_vec(), &mut label);
            let mut out = Vec::new();
            prost::encoding::bytes::encode(LABELS, &label, &mut out);
            Bytes::from(out)
        };
        assert!(RawSeries::parse(series(b"job", b"api")).is_ok());
        for (name, value) in [(&b"j\xffob"[..], &b"api"[..]), (b"job", b"a\xc3")] {
            let err = RawSeries::parse(series(name, value)).expect_err("not UTF-8");
            assert!(err.contains("not valid UTF-8"), "{err}");
        }
    }

    #[test]
    fn unsorted_and_duplicate_labels_are_told_apart() {
        let mut s = series(&[("a", "1"), ("b", "2")], 1);
        s.labels.swap(0, 1);
        let (_, order) = RawSeries::parse(s.encode_to_vec().into()).unwrap();
        assert_eq!(order, Labels::Unsorted);
        s.labels[1].name = "b".into();
        let err = RawSeries::parse(s.encode_to_vec().into()).unwrap_err();
        assert!(err.contains("duplicate label name \"b\""), "{err}");
    }

    #[test]
    fn malformed_series_are_rejected() {
        let good = series(&[("a", "1")], 1).encode_to_vec();
        for (bytes, want) in [
            (good[..good.len() - 1].to_vec(), "beyond the end"),
            (vec![0x0a, 0x02, 0x08, 0x01], "name is not length-delimited"),
            (vec![0x10, 0x01], "chunk is not length-delimited"),
            (vec![0x12, 0x02, 0x1a, 0x00, 0xff], "malformed varint"),
            (vec![0x0b], "unsupported wire type"),
        ] {
            let err = RawSeries::parse(bytes.into()).unwrap_err();
            assert!(err.contains(want), "{err} should say {want}");
        }
    }

    #[test]
    fn frames_decode_and_encode_like_the_generated_type() {
        let a = series(&[("a", "1")], 2);
        let b = series(&[("b", "2")], 0);
        for response in [
            SeriesResponse {
                result: Some(series_response::Result::Series(a.clone())),
            },
            SeriesResponse {
                result: Some(series_response::Result::Warning("slow".into())),
            },
            SeriesResponse {
                result: Some(series_response::Result::Batch(SeriesBatch {
                    series: vec![a.clone(), b.clone()],
                })),
            },
            SeriesResponse { result: None },
        ] {
            let bytes = response.encode_to_vec();
            let frame = SeriesFrame::decode(bytes.as_slice()).unwrap();
            assert_eq!(frame.encode_to_vec(), bytes, "{response:?}");
            assert_eq!(frame.encoded_len(), bytes.len());
        }
        let hints = SeriesResponse {
            result: Some(series_response::Result::Hints(prost_types::Any::default())),
        };
        assert_eq!(
            SeriesFrame::decode(hints.encode_to_vec().as_slice()).unwrap(),
            SeriesFrame::Hints
        );
    }

    fn arb_labels() -> impl Strategy<Value = Vec<Label>> {
        // Short names and values that are prefixes of each other, and long
        // values whose lengths take two bytes on the wire.
        let value = prop_oneof!["[a-c]{0,3}", "[ab]{126,130}"];
        prop::collection::btree_map("[a-c_]{1,3}", value, 0..5).prop_map(|m| {
            m.into_iter()
                .map(|(name, value)| Label { name, value })
                .collect()
        })
    }

    fn arb_series() -> impl Strategy<Value = RawSeries> {
        (arb_labels(), 0usize..3).prop_map(|(labels, chunks)| {
            let mut s = series(&[], chunks);
            s.labels = labels;
            RawSeries::parse(s.encode_to_vec().into()).unwrap().0
        })
    }

    proptest! {
        #[test]
        fn compare_agrees_with_decoded_labels(a in arb_series(), b in arb_series()) {
            let decoded = labelset::compare(&a.decode_labels(), &b.decode_labels());
            prop_assert_eq!(compare(&a, &b), decoded);
            prop_assert_eq!(compare(&b, &a), decoded.reverse());
        }
    }
}

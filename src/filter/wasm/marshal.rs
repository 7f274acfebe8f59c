//! Lays a batch out in guest memory in the ABI v1 format: header, event table, node table
//! (projected or full index), data region.
//!
//! Cost per event: projected mode writes one 16-byte entry and one 24-byte node per declared
//! path, and copies only the values' bytes; raw bytes are copied only when the module asked
//! for them (or reads the full index). All buffers are reused across batches.

use sluicebox_abi as abi;

use crate::batch::Events;
use crate::parse::index;

/// The fields a module declared with `sluicebox_fields`.
#[derive(Clone, Debug)]
pub(crate) struct Projection {
    pub paths: Vec<Vec<u8>>,
    pub raw: bool,
}

impl Projection {
    /// Parses the `\n`-separated path list of a [`abi::FieldsDecl`].
    pub(crate) fn parse(list: &[u8], flags: u32) -> Result<Projection, String> {
        if flags & !abi::FIELDS_RAW != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let text = std::str::from_utf8(list).map_err(|e| format!("paths are not UTF-8: {e}"))?;
        let paths: Vec<Vec<u8>> = if text.is_empty() {
            Vec::new()
        } else {
            text.split('\n').map(|p| p.as_bytes().to_vec()).collect()
        };
        if paths.len() > abi::MAX_FIELDS {
            return Err(format!(
                "{} paths declared; at most {} are allowed",
                paths.len(),
                abi::MAX_FIELDS
            ));
        }
        if let Some(i) = paths.iter().position(|p| p.is_empty()) {
            return Err(format!("path {i} is empty"));
        }
        Ok(Projection {
            paths,
            raw: flags & abi::FIELDS_RAW != 0,
        })
    }
}

/// Reusable staging buffers for the parts that are built before the copy.
#[derive(Default)]
pub(crate) struct Scratch {
    entries: Vec<abi::EventEntry>,
    nodes: Vec<abi::Node>,
    values: Vec<u8>,
    stack: Vec<(usize, bool)>,
    /// For each declared path, its slot in the batch's parse-time projection, if any.
    slot_of: Vec<Option<usize>>,
}

/// Where each part goes, as offsets from the start of the guest batch buffer.
pub(crate) struct Layout {
    pub total: usize,
    events_off: usize,
    nodes_off: usize,
    data_off: usize,
    data_len: usize,
    flags: u32,
    field_count: u32,
    raw: bool,
}

impl Scratch {
    /// Builds the event and node tables for `events` and computes the layout.
    pub(crate) fn build(&mut self, events: &Events<'_>, projection: Option<&Projection>) -> Layout {
        self.entries.clear();
        self.nodes.clear();
        self.values.clear();
        let raw = projection.is_none_or(|p| p.raw);
        let mut raw_off = 0u32;
        let mut flags = if raw { abi::BATCH_RAW } else { 0 };
        let mut field_count = 0;
        self.slot_of.clear();
        if let Some(p) = projection {
            flags |= abi::BATCH_PROJECTED;
            field_count = p.paths.len() as u32;
            let parsed = events.projection();
            self.slot_of
                .extend(p.paths.iter().map(|path| parsed.position(path)));
        }
        // A module that reads nothing gets one empty entry per event.
        let reads_nothing = projection.is_some_and(|p| p.paths.is_empty() && !p.raw);
        if reads_nothing {
            self.entries
                .resize(events.len(), abi::EventEntry::default());
        }
        let per_event = if reads_nothing { 0 } else { events.len() };
        for e in events.iter().take(per_event) {
            let bytes = e.bytes();
            let s = e.structurals();
            let node_start = self.nodes.len() as u32;
            let (raw_start, raw_len) = if raw {
                (raw_off, bytes.len() as u32)
            } else {
                (0, 0)
            };
            match projection {
                Some(p) => {
                    for (path, slot) in p.paths.iter().zip(&self.slot_of) {
                        let mut node = abi::Node::default();
                        let found = match *slot {
                            Some(k) => e.slot(k),
                            None => index::lookup(bytes, s, path),
                        };
                        if let Some(f) = found {
                            node.kind = f.kind.abi();
                            node.flags = if f.escaped {
                                abi::FLAG_VALUE_ESCAPED
                            } else {
                                0
                            };
                            node.value_len = f.raw.len() as u32;
                            node.value_start = if raw {
                                raw_start + f.start
                            } else {
                                let at = self.values.len() as u32;
                                self.values.extend_from_slice(f.raw);
                                at
                            };
                        }
                        self.nodes.push(node);
                    }
                }
                None => index::full_index(bytes, s, raw_start, &mut self.nodes, &mut self.stack),
            }
            self.entries.push(abi::EventEntry {
                raw_start,
                raw_len,
                node_start,
                node_count: self.nodes.len() as u32 - node_start,
            });
            raw_off += raw_len;
        }
        let n = self.entries.len();
        let events_off = 64;
        let nodes_off = events_off + n * 16;
        let data_off = abi::pad4(nodes_off + self.nodes.len() * 24).next_multiple_of(8);
        let data_len = if raw {
            raw_off as usize
        } else {
            self.values.len()
        };
        Layout {
            total: data_off + data_len,
            events_off,
            nodes_off,
            data_off,
            data_len,
            flags,
            field_count,
            raw,
        }
    }
}

fn put(region: &mut [u8], at: usize, v: u32) {
    region[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes the batch into `region` (the guest buffer, `layout.total` bytes at guest address
/// `base`).
pub(crate) fn write(
    region: &mut [u8],
    base: u32,
    scratch: &Scratch,
    layout: &Layout,
    events: &Events<'_>,
) {
    let n = scratch.entries.len() as u32;
    let header = [
        abi::ABI_VERSION,
        n,
        base + layout.events_off as u32,
        base + layout.nodes_off as u32,
        scratch.nodes.len() as u32,
        base + layout.data_off as u32,
        layout.data_len as u32,
        layout.flags,
        layout.field_count,
    ];
    for (i, w) in header.iter().enumerate() {
        put(region, i * 4, *w);
    }
    region[36..64].fill(0);
    let mut at = layout.events_off;
    for e in &scratch.entries {
        for w in [e.raw_start, e.raw_len, e.node_start, e.node_count] {
            put(region, at, w);
            at += 4;
        }
    }
    let mut at = layout.nodes_off;
    for nd in &scratch.nodes {
        let chunk = &mut region[at..at + 24];
        chunk[0..4].copy_from_slice(&nd.key_start.to_le_bytes());
        chunk[4..8].copy_from_slice(&nd.key_len.to_le_bytes());
        chunk[8..12].copy_from_slice(&nd.value_start.to_le_bytes());
        chunk[12..16].copy_from_slice(&nd.value_len.to_le_bytes());
        chunk[16] = nd.kind;
        chunk[17] = nd.flags;
        chunk[18..20].copy_from_slice(&nd.depth.to_le_bytes());
        chunk[20..24].copy_from_slice(&nd.end.to_le_bytes());
        at += 24;
    }
    let data = &mut region[layout.data_off..layout.data_off + layout.data_len];
    if layout.raw {
        let mut at = 0;
        for e in events.iter() {
            let b = e.bytes();
            data[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        }
    } else {
        data.copy_from_slice(&scratch.values);
    }
}

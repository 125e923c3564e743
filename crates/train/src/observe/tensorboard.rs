//! TensorBoard event files (`train.report_to = ["tensorboard"]`), written without
//! TensorFlow: TFRecord framing (length, masked CRC-32C of the length, the
//! record, masked CRC-32C of the record) around `tensorflow.Event` protobufs
//! encoded by hand (the handful of fields TensorBoard reads: wall time, step,
//! file version, scalar `simple_value`s, and the config as a text summary).
//!
//! One file per run, `<run>/tensorboard/events.out.tfevents.<time>.<host>.<pid>`.
//! A resume keeps the records up to the checkpoint's step and cuts the rest, as
//! `metrics.jsonl` does, so the curves show the run that the checkpoints hold.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
use crate::observe::series;
use crate::observe::{Event, Observer};

/// CRC-32C (Castagnoli), bitwise-reflected, as TFRecord uses.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

/// TFRecord's masked CRC.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One TFRecord: the framing around `data`.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc(&len).to_le_bytes());
    r.extend_from_slice(data);
    r.extend_from_slice(&masked_crc(data).to_le_bytes());
    r
}

/// Protobuf wire encoding of the fields we write.
mod pb {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }

    pub fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
        key(out, field, 0);
        varint(out, v);
    }

    pub fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        key(out, field, 1);
        out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn float(out: &mut Vec<u8>, field: u32, v: f32) {
        key(out, field, 5);
        out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
        key(out, field, 2);
        varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }

    /// Reads a varint at `*at`, moving past it.
    fn read_varint(data: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *data.get(*at)?;
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// The varint field `field` of a message (the last one, as protobuf reads it).
    pub fn find_uint(data: &[u8], field: u32) -> Option<u64> {
        let mut at = 0;
        let mut found = None;
        while at < data.len() {
            let k = read_varint(data, &mut at)?;
            let skip = match k & 7 {
                0 => {
                    let v = read_varint(data, &mut at)?;
                    if k >> 3 == u64::from(field) {
                        found = Some(v);
                    }
                    0
                }
                1 => 8,
                2 => read_varint(data, &mut at)? as usize,
                5 => 4,
                _ => return None,
            };
            at = at.checked_add(skip)?;
        }
        (at == data.len()).then_some(found).flatten()
    }
}

/// `tensorflow.Event` with its wall time and step, and `what` (its oneof field,
/// already encoded).
fn event(step: u64, what: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut e = Vec::new();
    pb::double(&mut e, 1, wall);
    pb::uint(&mut e, 2, step);
    what(&mut e);
    e
}

/// `Summary { value: [Value { tag, simple_value }] }` for each scalar.
fn scalars(values: &[(&str, f64)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, v) in values {
        let mut value = Vec::new();
        pb::bytes(&mut value, 1, tag.as_bytes());
        pb::float(&mut value, 2, *v as f32);
        pb::bytes(&mut summary, 1, &value);
    }
    summary
}

/// A text summary (TensorBoard's text plugin: a scalar `DT_STRING` tensor of
/// Markdown).
fn text(tag: &str, markdown: &str) -> Vec<u8> {
    let mut plugin = Vec::new();
    pb::bytes(&mut plugin, 1, b"text");
    let mut metadata = Vec::new();
    pb::bytes(&mut metadata, 1, &plugin);
    let mut tensor = Vec::new();
    pb::uint(&mut tensor, 1, 7); // DT_STRING
    pb::bytes(&mut tensor, 2, &[]); // a scalar: no dimensions
    pb::bytes(&mut tensor, 8, markdown.as_bytes());
    let mut value = Vec::new();
    pb::bytes(&mut value, 1, tag.as_bytes());
    pb::bytes(&mut value, 9, &metadata);
    pb::bytes(&mut value, 8, &tensor);
    let mut summary = Vec::new();
    pb::bytes(&mut summary, 1, &value);
    summary
}

/// The records of an event file, in order, each with its end offset and its
/// event's step; reading stops at the first torn or damaged record.
fn records(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(head) = bytes.get(at..at + 12) {
        let (len, crc) = head.split_at(8);
        let Ok(len_bytes) = <[u8; 8]>::try_from(len) else {
            break;
        };
        if masked_crc(&len_bytes).to_le_bytes() != crc {
            break;
        }
        let n = u64::from_le_bytes(len_bytes) as usize;
        let Some(data) = at
            .checked_add(12)
            .and_then(|s| Some(s..s.checked_add(n)?))
            .and_then(|r| bytes.get(r))
        else {
            break;
        };
        let Some(crc) = bytes.get(at + 12 + n..at + 16 + n) else {
            break;
        };
        if masked_crc(data).to_le_bytes() != crc {
            break;
        }
        at += 16 + n;
        out.push((at as u64, pb::find_uint(data, 2).unwrap_or(0)));
    }
    out
}

/// Writes a run's TensorBoard events.
pub struct TensorBoard {
    path: PathBuf,
    file: BufWriter<File>,
    log_every: u64,
}

/// The folder the event file lives in.
pub fn tensorboard_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("tensorboard")
}

impl TensorBoard {
    /// Opens the run's event file: a new one for a fresh run (`keep_until` none,
    /// with the config as text at step 0), or the existing one cut after the last
    /// event at or before `keep_until` (the resumed checkpoint's step).
    pub fn open(
        run_dir: &Path,
        keep_until: Option<u64>,
        log_every: u64,
        config_toml: &str,
    ) -> Result<Self> {
        let dir = tensorboard_dir(run_dir);
        std::fs::create_dir_all(&dir).map_err(TrainError::io("cannot create", &dir))?;
        let existing = match keep_until {
            None => None,
            Some(_) => {
                let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .map_err(TrainError::io("cannot read", &dir))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("events.out.tfevents."))
                    })
                    .collect();
                files.sort();
                files.pop()
            }
        };
        let log_every = log_every.max(1);
        if let (Some(path), Some(step)) = (existing, keep_until) {
            let bytes = std::fs::read(&path).map_err(TrainError::io("cannot read", &path))?;
            let keep = records(&bytes)
                .into_iter()
                .take_while(|(_, s)| *s <= step)
                .last()
                .map_or(0, |(end, _)| end);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(TrainError::io("cannot write", &path))?;
            f.set_len(keep)
                .and_then(|()| f.seek(std::io::SeekFrom::End(0)).map(|_| ()))
                .map_err(TrainError::io("cannot write", &path))?;
            let mut me = Self {
                path,
                file: BufWriter::new(f),
                log_every,
            };
            if keep == 0 {
                me.header(config_toml)?;
            }
            return Ok(me);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{now:010}.{host}.{}",
            std::process::id()
        ));
        let f = File::create(&path).map_err(TrainError::io("cannot write", &path))?;
        let mut me = Self {
            path,
            file: BufWriter::new(f),
            log_every,
        };
        me.header(config_toml)?;
        Ok(me)
    }

    /// The event file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file version event (TensorBoard reads nothing before it) and the config.
    fn header(&mut self, config_toml: &str) -> Result<()> {
        self.write(&event(0, |e| pb::bytes(e, 3, b"brain.Event:2")))?;
        let markdown = format!("```toml\n{config_toml}```\n");
        self.write(&event(0, |e| pb::bytes(e, 5, &text("config", &markdown))))
    }

    fn write(&mut self, event: &[u8]) -> Result<()> {
        self.file
            .write_all(&record(event))
            .and_then(|()| self.file.flush())
            .map_err(TrainError::io("cannot write", &self.path))
    }

    fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let summary = scalars(values);
        self.write(&event(step, |e| pb::bytes(e, 5, &summary)))
    }
}

impl Observer for TensorBoard {
    fn event(&mut self, event: &Event) -> Result<()> {
        match series::scalars(event, self.log_every) {
            Some((step, v)) => {
                let v: Vec<(&str, f64)> = v.iter().map(|(k, x)| (k.as_str(), *x)).collect();
                self.scalars(step, &v)
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C check value of "123456789" (RFC 3720, B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn records_read_back_and_stop_at_a_torn_one() {
        let mut bytes = Vec::new();
        for step in [0u64, 5, 300] {
            bytes.extend(record(&event(step, |e| pb::bytes(e, 3, b"x"))));
        }
        let full = records(&bytes);
        assert_eq!(
            full.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            [0, 5, 300]
        );
        assert_eq!(full[2].0, bytes.len() as u64);
        bytes.truncate(bytes.len() - 3);
        assert_eq!(records(&bytes).len(), 2);
        // A flipped bit in the second record's data.
        bytes[full[0].0 as usize + 14] ^= 1;
        assert_eq!(records(&bytes).len(), 1);
    }
}

//! The on-disk blob format: a header, then blocks of data each followed by its
//! CRC32C.
//!
//! ```text
//! "NUAGEBL1" | block_bytes: u32 LE | reserved: u32 | block 0 | crc32c(block 0): u32 LE | block 1 | ...
//! ```
//! Every block but the last holds exactly `block_bytes` of data. The data length
//! follows from the file length, so a blob needs no trailer and a torn write
//! shows up as a bad checksum or a bad length.

pub const MAGIC: &[u8; 8] = b"NUAGEBL1";
pub const HEADER_BYTES: u64 = 16;
pub const CRC_BYTES: u64 = 4;

/// The header for blobs with this block size.
#[must_use]
pub fn header(block_bytes: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&block_bytes.to_le_bytes());
    out
}

/// Parses a header; returns the block size.
#[must_use]
pub fn parse_header(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return None;
    }
    let block = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    (block > 0).then_some(block)
}

/// Data length of a blob file of `file_bytes`, or None if no valid blob has that length.
#[must_use]
pub fn data_len(file_bytes: u64, block_bytes: u32) -> Option<u64> {
    let body = file_bytes.checked_sub(HEADER_BYTES)?;
    if body == 0 {
        return Some(0);
    }
    let stride = u64::from(block_bytes) + CRC_BYTES;
    let full = body / stride;
    let rest = body % stride;
    match rest {
        0 => Some(full * u64::from(block_bytes)),
        r if r > CRC_BYTES => Some(full * u64::from(block_bytes) + r - CRC_BYTES),
        _ => None,
    }
}

/// File offset of block `index`.
#[must_use]
pub fn block_offset(index: u64, block_bytes: u32) -> u64 {
    HEADER_BYTES + index * (u64::from(block_bytes) + CRC_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        let b = 8u32;
        assert_eq!(data_len(16, b), Some(0));
        assert_eq!(data_len(16 + 12, b), Some(8));
        assert_eq!(data_len(16 + 12 + 5, b), Some(9));
        assert_eq!(data_len(16 + 12 + 4, b), None);
        assert_eq!(data_len(15, b), None);
        assert_eq!(parse_header(&header(b)), Some(8));
        assert_eq!(parse_header(b"garbage garbage!"), None);
    }
}

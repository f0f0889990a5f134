//! C2SP tlog-tiles: tile paths, hash tiles and entry bundles.
//!
//! Paths are `tile/<L>/<N>[.p/<W>]` for hash tiles and `tile/entries/<N>[.p/<W>]`
//! for entry bundles (<https://c2sp.org/tlog-tiles>): tiles are 256 hashes wide
//! (height 8), `<N>` is written in 3-digit groups (`x001/x234/067`), and `<W>` of
//! a partial tile is 1 to 255. An entry bundle is its entries, each prefixed by
//! its length as a big-endian u16. This module owns the path syntax and the
//! bundle encoding; it never serves data the tree does not hold yet.

use tlog_tiles::{HASH_SIZE, Hash, Tile};

use crate::AuditError;
use crate::LogStore;
use crate::tree::StoreHashes;

/// Height of every tile: 8 levels, 256 hashes (C2SP tlog-tiles).
pub const TILE_HEIGHT: u8 = 8;
/// Hashes in a full tile, entries in a full bundle.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// Highest tile level a path may name (C2SP tlog-tiles: 0 to 63).
const LEVEL_MAX: u8 = 63;
/// Longest tile path: `tile/entries/` plus `x018/x446/x744/x073/x709/x551/615` plus `.p/255`.
const PATH_BYTES_MAX: usize = 64;

/// What a tile path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePath {
    /// Hash tile `tile/<level>/<index>[.p/<width>]`.
    Hashes { level: u8, index: u64, width: u32 },
    /// Entry bundle `tile/entries/<index>[.p/<width>]`.
    Entries { index: u64, width: u32 },
}

impl TilePath {
    /// Parses a path (without the log's prefix, without a leading slash).
    ///
    /// # Errors
    /// [`AuditError::BadTilePath`] for anything that is not exactly the C2SP
    /// syntax (leading zeros, width 0 or 256, missing `x`, ...).
    pub fn parse(path: &str) -> Result<Self, AuditError> {
        let bad = || AuditError::BadTilePath(path.chars().take(PATH_BYTES_MAX).collect());
        if path.len() > PATH_BYTES_MAX {
            return Err(bad());
        }
        let rest = path.strip_prefix("tile/").ok_or_else(bad)?;
        let (kind, rest) = rest.split_once('/').ok_or_else(bad)?;
        let (number, width) = match rest.split_once(".p/") {
            Some((number, width)) => {
                let width: u32 = parse_decimal(width).ok_or_else(bad)?;
                if width == 0 || u64::from(width) >= TILE_WIDTH {
                    return Err(bad());
                }
                (number, width)
            }
            None => (rest, u32::try_from(TILE_WIDTH).unwrap_or(u32::MAX)),
        };
        let mut index: u64 = 0;
        let groups: Vec<&str> = number.split('/').collect();
        for (position, group) in groups.iter().enumerate() {
            let last = position + 1 == groups.len();
            let digits = if last {
                *group
            } else {
                group.strip_prefix('x').ok_or_else(bad)?
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let value: u64 = digits.parse().map_err(|_| bad())?;
            index = index
                .checked_mul(1000)
                .and_then(|i| i.checked_add(value))
                .ok_or_else(bad)?;
        }
        let parsed = if kind == "entries" {
            Self::Entries { index, width }
        } else {
            let level: u8 = parse_decimal(kind).ok_or_else(bad)?;
            if level > LEVEL_MAX {
                return Err(bad());
            }
            Self::Hashes {
                level,
                index,
                width,
            }
        };
        // One path per tile: reject spellings (x000 groups) that format differently.
        if parsed.to_path() != path {
            return Err(bad());
        }
        Ok(parsed)
    }

    /// The path of this tile.
    #[must_use]
    pub fn to_path(&self) -> String {
        let (kind, index, width) = match *self {
            Self::Hashes {
                level,
                index,
                width,
            } => (level.to_string(), index, width),
            Self::Entries { index, width } => ("entries".to_string(), index, width),
        };
        let mut number = format!("{:03}", index % 1000);
        let mut rest = index / 1000;
        while rest > 0 {
            number = format!("x{:03}/{number}", rest % 1000);
            rest /= 1000;
        }
        if u64::from(width) == TILE_WIDTH {
            format!("tile/{kind}/{number}")
        } else {
            format!("tile/{kind}/{number}.p/{width}")
        }
    }

    /// Every tile and bundle a tree of `size` entries is published as (full
    /// tiles, then the partial ones `size` requires), level 0 and bundles first.
    #[must_use]
    pub fn all_for_size(size: u64) -> Vec<Self> {
        let mut out = Vec::new();
        let full = size / TILE_WIDTH;
        let partial = u32::try_from(size % TILE_WIDTH).unwrap_or(0);
        for index in 0..full {
            out.push(Self::Entries {
                index,
                width: TILE_WIDTH as u32,
            });
        }
        if partial > 0 {
            out.push(Self::Entries {
                index: full,
                width: partial,
            });
        }
        let mut level = 0u8;
        while level <= LEVEL_MAX {
            let Some(hashes_at_level) = size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
            else {
                break;
            };
            if hashes_at_level == 0 {
                break;
            }
            for index in 0..hashes_at_level / TILE_WIDTH {
                out.push(Self::Hashes {
                    level,
                    index,
                    width: TILE_WIDTH as u32,
                });
            }
            let width = u32::try_from(hashes_at_level % TILE_WIDTH).unwrap_or(0);
            if width > 0 {
                out.push(Self::Hashes {
                    level,
                    index: hashes_at_level / TILE_WIDTH,
                    width,
                });
            }
            level += 1;
        }
        out
    }
}

fn parse_decimal<T: std::str::FromStr>(text: &str) -> Option<T> {
    // No sign, no leading zeros (except "0" itself), digits only.
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

/// Reads the tile or bundle at `path` from a tree of `size` entries (blocking).
///
/// # Errors
/// A bad path, a tile beyond the tree, or a storage error.
pub fn read_tile(store: &dyn LogStore, size: u64, path: &str) -> Result<Vec<u8>, AuditError> {
    let tile = TilePath::parse(path)?;
    let beyond = || AuditError::TileBeyondTree {
        path: path.to_string(),
        size,
    };
    match tile {
        TilePath::Entries { index, width } => {
            let start = index.checked_mul(TILE_WIDTH).ok_or_else(beyond)?;
            let end = start + u64::from(width);
            if end > size {
                return Err(beyond());
            }
            Ok(encode_bundle(&store.read_entries(start, end)?))
        }
        TilePath::Hashes {
            level,
            index,
            width,
        } => {
            // Hashes at tile level L are tree nodes at level 8L; the tree has
            // size >> 8L complete ones.
            let node_level = u32::from(level) * u32::from(TILE_HEIGHT);
            let available = size.checked_shr(node_level).unwrap_or(0);
            let start = index.checked_mul(TILE_WIDTH).ok_or_else(beyond)?;
            if start + u64::from(width) > available {
                return Err(beyond());
            }
            let tile = Tile::new(TILE_HEIGHT, level, index, width, false);
            let reader = StoreHashes::new(store);
            reader.finish(tile.read_data(&reader))
        }
    }
}

/// Encodes entries as a C2SP entry bundle.
#[must_use]
pub fn encode_bundle(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.len() + 2).sum());
    for entry in entries {
        // Entries are bounded by AUDIT_ENTRY_BYTES_MAX (65,535) on append.
        let length = u16::try_from(entry.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(entry);
    }
    out
}

/// Decodes a C2SP entry bundle.
///
/// # Errors
/// [`AuditError::MalformedBundle`] when a length runs past the end.
pub fn decode_bundle(path: &str, mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, AuditError> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let malformed = || AuditError::MalformedBundle {
            path: path.to_string(),
            reason: format!("entry {} is cut short", entries.len()),
        };
        let [high, low, rest @ ..] = bytes else {
            return Err(malformed());
        };
        let length = usize::from(u16::from_be_bytes([*high, *low]));
        if rest.len() < length {
            return Err(malformed());
        }
        entries.push(rest[..length].to_vec());
        bytes = &rest[length..];
        if entries.len() as u64 > TILE_WIDTH {
            return Err(AuditError::MalformedBundle {
                path: path.to_string(),
                reason: format!("more than {TILE_WIDTH} entries"),
            });
        }
    }
    Ok(entries)
}

/// Splits a hash tile into its hashes.
///
/// # Errors
/// [`AuditError::MalformedBundle`] when the length is not a whole number of hashes.
pub fn decode_hash_tile(path: &str, bytes: &[u8]) -> Result<Vec<Hash>, AuditError> {
    if !bytes.len().is_multiple_of(HASH_SIZE) || bytes.len() as u64 > TILE_WIDTH * HASH_SIZE as u64
    {
        return Err(AuditError::MalformedBundle {
            path: path.to_string(),
            reason: format!("{} bytes is not a tile", bytes.len()),
        });
    }
    Ok(bytes
        .chunks_exact(HASH_SIZE)
        .map(|chunk| {
            let mut hash = [0u8; HASH_SIZE];
            hash.copy_from_slice(chunk);
            Hash(hash)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_in_c2sp_syntax() {
        let cases = [
            (
                TilePath::Hashes {
                    level: 0,
                    index: 1_234_067,
                    width: 256,
                },
                "tile/0/x001/x234/067",
            ),
            (
                TilePath::Hashes {
                    level: 1,
                    index: 5,
                    width: 17,
                },
                "tile/1/005.p/17",
            ),
            (
                TilePath::Entries {
                    index: 0,
                    width: 256,
                },
                "tile/entries/000",
            ),
            (
                TilePath::Entries {
                    index: 1000,
                    width: 3,
                },
                "tile/entries/x001/000.p/3",
            ),
        ];
        for (tile, path) in cases {
            assert_eq!(tile.to_path(), path);
            assert_eq!(TilePath::parse(path).expect("parse"), tile);
        }
    }

    #[test]
    fn bad_paths_are_refused() {
        for path in [
            "tile/0/1",
            "tile/0/001.p/0",
            "tile/0/001.p/256",
            "tile/0/001.p/07",
            "tile/00/001",
            "tile/64/001",
            "tile/0/001/002",
            "tile/0/x000/001",
            "tile/data/001",
            "tile/entries/001.p/",
            "tile/entries/-01",
            "tiles/0/001",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "",
        ] {
            assert!(
                matches!(TilePath::parse(path), Err(AuditError::BadTilePath(_))),
                "{path} was accepted"
            );
        }
    }

    #[test]
    fn tiles_for_size_follow_the_spec_example() {
        // C2SP: a tree of size 70,000 is 273 full level-0 tiles, one partial of
        // width 112, one full level-1 tile, one partial of width 17 and one
        // partial level-2 tile of width 1.
        let tiles = TilePath::all_for_size(70_000);
        let hashes: Vec<_> = tiles
            .iter()
            .filter_map(|t| match t {
                TilePath::Hashes {
                    level,
                    index,
                    width,
                } => Some((*level, *index, *width)),
                TilePath::Entries { .. } => None,
            })
            .collect();
        assert_eq!(
            hashes.iter().filter(|t| t.0 == 0 && t.2 == 256).count(),
            273
        );
        assert!(hashes.contains(&(0, 273, 112)));
        assert!(hashes.contains(&(1, 0, 256)));
        assert!(hashes.contains(&(1, 1, 17)));
        assert!(hashes.contains(&(2, 0, 1)));
        assert_eq!(hashes.len(), 273 + 1 + 1 + 1 + 1);
        assert_eq!(tiles.len() - hashes.len(), 274);
        // A tree of 256: one full level-0 tile and a level-1 tile of width 1.
        let tiles = TilePath::all_for_size(256);
        assert!(tiles.contains(&TilePath::Hashes {
            level: 1,
            index: 0,
            width: 1
        }));
    }

    #[test]
    fn bundle_round_trip_and_truncation() {
        let entries = vec![b"a".to_vec(), Vec::new(), vec![7u8; 300]];
        let bundle = encode_bundle(&entries);
        assert_eq!(&bundle[..3], &[0, 1, b'a']);
        assert_eq!(decode_bundle("p", &bundle).expect("decode"), entries);
        assert!(matches!(
            decode_bundle("p", &bundle[..bundle.len() - 1]),
            Err(AuditError::MalformedBundle { .. })
        ));
    }
}

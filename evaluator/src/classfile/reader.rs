//! A bounds-checked big-endian cursor over class-file bytes.

use super::{ClassFileError, Result};

/// A window `[pos, end)` over the whole class file. Offsets in errors are absolute,
/// also for windows over one attribute.
#[derive(Debug, Clone)]
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            pos: 0,
            end: bytes.len(),
        }
    }

    pub(super) fn offset(&self) -> usize {
        self.pos
    }

    pub(super) fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    pub(super) fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let truncated = ClassFileError::Truncated {
            offset: self.pos,
            needed: len,
        };
        let end = match self.pos.checked_add(len) {
            Some(end) if end <= self.end => end,
            _ => return Err(truncated),
        };
        let slice = self.bytes.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let offset = self.pos;
        self.take(N)?
            .first_chunk::<N>()
            .copied()
            .ok_or(ClassFileError::Truncated { offset, needed: N })
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub(super) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A reader over the next `len` bytes; this reader skips past them.
    pub(super) fn sub(&mut self, len: usize) -> Result<Reader<'a>> {
        let start = self.pos;
        self.take(len)?;
        Ok(Reader {
            bytes: self.bytes,
            pos: start,
            end: self.pos,
        })
    }

    /// Fails unless `count` items of at least `min_size` bytes each fit in what is
    /// left, so that a count read from the file never sizes an allocation by itself.
    pub(super) fn check_count(
        &self,
        what: &'static str,
        count: usize,
        min_size: usize,
    ) -> Result<()> {
        let remaining = self.remaining();
        match count.checked_mul(min_size) {
            Some(needed) if needed <= remaining => Ok(()),
            _ => Err(ClassFileError::CountTooLarge {
                what,
                count,
                offset: self.pos,
            }),
        }
    }
}

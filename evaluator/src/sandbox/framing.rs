//! The driver event channel as the supervisor reads it: lines within a [`Framing`],
//! a line over the bound skipped as it streams by, nothing past the channel's budget.
//! What the lines mean is `crate::events`'s business, above this module.

/// Bytes kept of a line over the bound, to tell what it was.
pub const PREFIX_BYTES: usize = 64;

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// How the supervisor frames the event channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// The longest line; a longer one is skipped to its newline, never buffered whole.
    pub line_bytes: usize,
    /// All bytes of the channel; past them everything is dropped and the sandbox stopped.
    pub channel_bytes: u64,
    /// All lines of the channel, likewise.
    pub lines: u64,
}

/// What the supervisor dropped from the event channel instead of forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// A line over the bound, skipped; its first bytes tell what it claimed to be.
    Overlong { prefix: Vec<u8> },
    /// The channel's budget ran out: everything after is dropped.
    OverBudget,
}

/// What the reader makes of the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete, non-empty line within the bound, without its newline.
    Line(Vec<u8>),
    Dropped(Dropped),
}

/// Frames the event channel within a [`Framing`]: holds one line at most, of at most
/// `line_bytes`; a longer line is skipped as it streams by. A line is complete with its
/// newline (the drivers end every one): what the end of the channel, or a kill, cuts
/// off is no event.
#[derive(Debug)]
pub struct LineReader {
    framing: Framing,
    line: Vec<u8>,
    /// Skipping the rest of a line over the bound.
    skipping: bool,
    bytes: u64,
    lines: u64,
    over: bool,
    over_reported: bool,
}

impl LineReader {
    pub fn new(framing: Framing) -> Self {
        LineReader {
            framing,
            line: Vec::new(),
            skipping: false,
            bytes: 0,
            lines: 0,
            over: false,
            over_reported: false,
        }
    }

    /// The next frame from `input`, consuming what it used; `None` once `input` is
    /// used up without completing one (the partial line is kept for the next call).
    pub fn next_frame(&mut self, input: &mut &[u8]) -> Option<Frame> {
        loop {
            if self.over {
                *input = &[];
                if self.over_reported {
                    return None;
                }
                self.over_reported = true;
                return Some(Frame::Dropped(Dropped::OverBudget));
            }
            if input.is_empty() {
                return None;
            }
            // The budget ends at a position of the channel, however it is cut.
            let room = to_usize(self.framing.channel_bytes.saturating_sub(self.bytes));
            if room == 0 {
                self.over = true;
                self.line = Vec::new();
                continue;
            }
            let window = &input[..input.len().min(room)];
            let (segment, newline) = match window.iter().position(|&b| b == b'\n') {
                Some(i) => (&window[..i], true),
                None => (window, false),
            };
            let used = segment.len() + usize::from(newline);
            self.bytes += used as u64;
            *input = &input[used..];
            if newline {
                self.lines += 1;
                if self.lines > self.framing.lines {
                    self.over = true;
                    self.line = Vec::new();
                    continue;
                }
            }
            if self.skipping {
                if newline {
                    self.skipping = false;
                }
                continue;
            }
            let len = self.line.len() + segment.len();
            if len > self.framing.line_bytes {
                let mut prefix = Vec::with_capacity(PREFIX_BYTES);
                prefix.extend_from_slice(&self.line[..self.line.len().min(PREFIX_BYTES)]);
                let more = PREFIX_BYTES - prefix.len();
                prefix.extend_from_slice(&segment[..segment.len().min(more)]);
                self.line = Vec::new();
                self.skipping = !newline;
                return Some(Frame::Dropped(Dropped::Overlong { prefix }));
            }
            if len > self.line.capacity() {
                // Doubling, but never past the bound.
                let want = len
                    .max(self.line.capacity() * 2)
                    .min(self.framing.line_bytes);
                self.line.reserve_exact(want - self.line.len());
            }
            self.line.extend_from_slice(segment);
            if newline && !self.line.is_empty() {
                return Some(Frame::Line(std::mem::take(&mut self.line)));
            }
        }
    }

    /// Bytes of the line held now, and the room held for it: never past the bound.
    pub fn held(&self) -> (usize, usize) {
        (self.line.len(), self.line.capacity())
    }

    /// Whether the channel's budget ran out.
    pub fn over_budget(&self) -> bool {
        self.over
    }
}

//! The supervisor's side of the driver event channel (`evaluator::events`) on arbitrary
//! bytes, which is what a snippet can write on it: framing, parsing and checking
//! against the request must return, never panic, and keep within the evaluation's
//! bounds (`check_channel` asserts them: outputs only for the request's components,
//! output and records within their limits, at most one line held, one report); and
//! framing must not depend on how the channel is cut into reads.

#![no_main]

use evaluator::snippet::Component;
use evaluator::events::{check_channel, Bounds, Framing};
use evaluator::sandbox::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the bounds and how the channel is cut; the rest is the channel.
    let Some((&mode, channel)) = data.split_first() else {
        return;
    };
    let components: Vec<Component> = ["a", "b", "c"]
        .iter()
        .map(|id| Component {
            id: (*id).into(),
            code: "x = 1\nx".into(),
        })
        .collect();
    let mut bounds = Bounds::for_request(&components, &Limits::default());
    if mode & 1 == 1 {
        // Tight enough for small inputs to go over every bound.
        bounds.framing = Framing {
            line_bytes: 512,
            channel_bytes: 8192,
            lines: 64,
        };
        bounds.output_bytes = 64;
        bounds.records = 8;
        bounds.record_bytes = 2048;
        bounds.class_batches = 2;
        bounds.classes_per_batch = 2;
        bounds.class_batch_bytes = 256;
    }
    let whole = check_channel(&components, bounds, channel, || usize::MAX);
    let step = [1, 2, 3, 7, 64, 4096][usize::from(mode >> 1) % 6];
    let cut = check_channel(&components, bounds, channel, || step);
    assert_eq!(whole, cut);
});

//! The event channel against what a sandbox can write: framing however the channel is
//! cut, translation, and every bound with its one report.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::sandbox::framing::PREFIX_BYTES;

fn components(ids: &[&str]) -> Vec<Component> {
    ids.iter()
        .map(|id| Component {
            id: (*id).into(),
            code: "x = 1\ny = 2".into(),
        })
        .collect()
}

fn framing(line_bytes: usize, channel_bytes: u64, lines: u64) -> Framing {
    Framing {
        line_bytes,
        channel_bytes,
        lines,
    }
}

/// All frames of `data` fed in chunks of `chunk` bytes, and the reader after.
fn frames(f: Framing, data: &[u8], chunk: usize) -> (Vec<Frame>, LineReader) {
    let mut reader = LineReader::new(f);
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        let mut rest = piece;
        while let Some(frame) = reader.next_frame(&mut rest) {
            out.push(frame);
        }
        assert!(rest.is_empty());
        assert!(reader.held().1 <= f.line_bytes);
    }
    (out, reader)
}

fn line(s: &str) -> Frame {
    Frame::Line(s.as_bytes().to_vec())
}

#[test]
fn lines_are_the_same_however_the_channel_is_cut() {
    // A line is complete with its newline: what the end (or the kill) cuts is not.
    let data = b"one\ntwo\n\n\nthree\nlast";
    for chunk in 1..data.len() + 1 {
        let (got, _) = frames(framing(100, 1000, 100), data, chunk);
        assert_eq!(
            got,
            [line("one"), line("two"), line("three")],
            "chunks of {chunk}"
        );
    }
}

#[test]
fn a_line_over_the_bound_is_skipped_without_being_buffered() {
    let mut data = b"before\n".to_vec();
    data.extend(std::iter::repeat_n(b'x', 10_000));
    data.extend(b"\nafter\n");
    for chunk in [1, 7, 64, 4096, data.len()] {
        let (got, _) = frames(framing(100, 1 << 20, 100), &data, chunk);
        assert_eq!(
            got,
            [
                line("before"),
                Frame::Dropped(Dropped::Overlong {
                    prefix: vec![b'x'; PREFIX_BYTES]
                }),
                line("after"),
            ],
            "chunks of {chunk}"
        );
    }
    // Exactly at the bound is a line; one more byte is not.
    let (got, _) = frames(framing(5, 1000, 100), b"12345\n123456\n", 3);
    assert_eq!(
        got,
        [
            line("12345"),
            Frame::Dropped(Dropped::Overlong {
                prefix: b"123456".to_vec()
            })
        ]
    );
    // An endless line never ends in a line.
    let (got, reader) = frames(framing(5, 1000, 100), &[b'y'; 100], 10);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(reader.held().0 == 0);
}

#[test]
fn past_the_budget_everything_is_dropped_and_said_once() {
    let data = b"aaaa\nbbbb\ncccc\ndddd\n".repeat(100);
    let (got, reader) = frames(framing(100, 12, 1000), &data, 3);
    assert_eq!(
        got,
        [
            line("aaaa"),
            line("bbbb"),
            Frame::Dropped(Dropped::OverBudget)
        ]
    );
    assert!(reader.over_budget());
    let (got, _) = frames(framing(100, 1 << 20, 3), &b"a\n\n\nb\nc\n".repeat(10), 2);
    assert_eq!(got, [line("a"), Frame::Dropped(Dropped::OverBudget)]);
}

fn ev(line: &str) -> Event {
    Event::Driver(line.as_bytes().to_vec())
}

fn outputs(t: &mut Translator<'_>, events: Vec<Event>) -> Vec<Output> {
    events
        .into_iter()
        .filter_map(|e| match t.event(e) {
            Some(Step::Output(o)) => Some(o),
            _ => None,
        })
        .collect()
}

#[test]
fn driver_events_are_translated() {
    let cs = components(&["a", "b"]);
    let mut t = Translator::new(&cs, Bounds::for_request(&cs, &Limits::default()), false);
    let got = outputs(
        &mut t,
        vec![
            ev(r#"{"event":"start","id":"a"}"#),
            ev(r#"{"event":"output","stream":"stdout","data":"aGk="}"#),
            ev(r#"{"event":"end","id":"a","ok":true}"#),
            ev(r#"{"event":"start","id":"b"}"#),
            Event::Stderr(b"raw".to_vec()),
            ev(r#"{"event":"value","id":"b","repr":"2","truncated":false}"#),
            ev(r#"{"event":"exit","id":"b","code":3}"#),
            ev(r#"{"event":"done"}"#),
        ],
    );
    assert_eq!(
        got,
        [
            Output::Started {
                component: "a".into()
            },
            Output::Stdout {
                component: "a".into(),
                data: b"hi".to_vec()
            },
            Output::Started {
                component: "b".into()
            },
            Output::Stderr {
                component: "b".into(),
                data: b"raw".to_vec()
            },
            Output::Value {
                component: "b".into(),
                text: "2".into()
            },
        ]
    );
    assert_eq!(t.finish(), None);
}

#[test]
fn ids_that_are_not_the_running_component_are_dropped_never_echoed() {
    let cs = components(&["a", "b", "c"]);
    let mut t = Translator::new(&cs, Bounds::for_request(&cs, &Limits::default()), false);
    let huge = "z".repeat(100_000);
    let got = outputs(
        &mut t,
        vec![
            // Before anything started, nothing is anyone's but output.
            ev(r#"{"event":"value","id":"a","repr":"early"}"#),
            Event::Stdout(b"pre".to_vec()),
            ev(r#"{"event":"start","id":"b"}"#),
            ev(r#"{"event":"start","id":"a"}"#),
            ev(&format!(r#"{{"event":"start","id":"{huge}"}}"#)),
            ev(&format!(r#"{{"event":"value","id":"{huge}","repr":"1"}}"#)),
            ev(r#"{"event":"value","id":"b","repr":"1"}"#),
            ev(r#"{"event":"start","id":"a"}"#),
            ev(
                r#"{"event":"exception","id":"c","type":"E","message":"m","traceback":"","line":1}"#,
            ),
            ev(r#"{"event":"internal","message":"driver trouble"}"#),
        ],
    );
    assert_eq!(
        got,
        [
            Output::Stdout {
                component: "a".into(),
                data: b"pre".to_vec()
            },
            Output::Started {
                component: "a".into()
            },
            Output::Internal {
                component: "a".into(),
                message: "driver trouble".into()
            },
        ]
    );
    assert_eq!(t.drops().foreign, 7);
    let Some(Output::Internal { component, message }) = t.finish() else {
        panic!("no report")
    };
    assert_eq!(component, "a");
    assert!(message.contains("7 naming a component"), "{message}");
    assert!(message.len() < 1000, "{message}");
}

#[test]
fn records_are_bounded_and_reported_once() {
    let cs = components(&["a"]);
    let limits = Limits {
        output_bytes: 1000,
        ..Limits::default()
    };
    let bounds = Bounds::for_request(&cs, &limits);
    let mut t = Translator::new(&cs, bounds, false);
    t.event(ev(r#"{"event":"start","id":"a"}"#));
    let mut kept = 0u64;
    for i in 0..10_000 {
        let value = format!(
            r#"{{"event":"value","id":"a","repr":"{}"}}"#,
            "v".repeat(i % 50)
        );
        let internal = r#"{"event":"internal","message":"m"}"#;
        for e in [
            ev(&value),
            ev(internal),
            ev("garbage"),
            ev(r#"{"event":"nope"}"#),
        ] {
            if let Some(Step::Output(_)) = t.event(e) {
                kept += 1;
            }
        }
    }
    assert_eq!(kept, bounds.records);
    assert!(t.record_bytes <= bounds.record_bytes);
    assert_eq!(t.drops().unreadable, 20_000);
    assert_eq!(t.drops().records, 20_000 - bounds.records);
    let report = t.finish().unwrap();
    assert!(matches!(report, Output::Internal { ref message, .. }
        if message.contains("20000 unreadable") && message.contains("results over the bound")));
}

#[test]
fn texts_are_cut_and_spans_kept_within_the_component() {
    let cs = vec![Component {
        id: "a".into(),
        code: "héllo\nworld".into(),
    }];
    let mut t = Translator::new(&cs, Bounds::for_request(&cs, &Limits::default()), false);
    t.event(ev(r#"{"event":"start","id":"a"}"#));
    let long = "é".repeat(VALUE_CHARS + 10);
    let Some(Step::Output(Output::Value { text, .. })) = t.event(ev(&format!(
        r#"{{"event":"value","id":"a","repr":"{long}"}}"#
    ))) else {
        panic!()
    };
    assert_eq!(text.chars().count(), VALUE_CHARS + TRUNCATED.len());
    assert!(text.ends_with(TRUNCATED));
    let Some(Step::Output(Output::Diagnostic {
        start, end, line, ..
    })) = t.event(ev(
        r#"{"event":"syntax_error","id":"a","type":"SyntaxError","message":"m","line":99999,"column":3,"start":5,"end":4000000000}"#,
    ))
    else {
        panic!()
    };
    assert_eq!((start, end, line), (5, 11, 3));
}

#[test]
fn output_is_held_to_its_limit_across_pipes_and_events() {
    let cs = components(&["a"]);
    let limits = Limits {
        output_bytes: 10,
        ..Limits::default()
    };
    let mut t = Translator::new(&cs, Bounds::for_request(&cs, &limits), false);
    let got = outputs(
        &mut t,
        vec![
            Event::Stdout(b"123456".to_vec()),
            ev(r#"{"event":"output","stream":"stdout","data":"YWJjZGVm"}"#),
            Event::Stdout(b"more".to_vec()),
            ev(r#"{"event":"output","stream":"stdin","data":"YWJj"}"#),
            ev(r#"{"event":"output","stream":"stderr","data":"!!"}"#),
        ],
    );
    let stdout: Vec<u8> = got
        .iter()
        .flat_map(|o| match o {
            Output::Stdout { data, .. } => data.clone(),
            _ => vec![],
        })
        .collect();
    assert_eq!(stdout, b"123456abcd");
    assert!(t.output_exceeded());
    assert_eq!(t.drops().unreadable, 2);
    // An output line longer than the bound is more than the whole limit.
    let mut t = Translator::new(&cs, Bounds::for_request(&cs, &limits), false);
    assert_eq!(
        t.event(Event::DriverDropped(Dropped::Overlong {
            prefix: br#"{"event":"output","stream":"stderr","data":"AAAA"#.to_vec()
        })),
        None
    );
    assert!(t.output_exceeded());
    assert_eq!(t.finish(), None);
}

#[test]
fn class_batches_are_vetted_within_their_bounds() {
    let cs = vec![Component {
        id: "a".into(),
        code: "class A {}".into(),
    }];
    let bounds = Bounds::for_request(&cs, &Limits::default());
    let mut t = Translator::new(&cs, bounds, true);
    t.event(ev(r#"{"event":"start","id":"a"}"#));
    assert_eq!(
        t.event(ev(
            r#"{"event":"classes","seq":1,"id":"a","classes":[{"name":"A","bytes":"yv66vg=="}]}"#
        )),
        Some(Step::Vet {
            seq: 1,
            classes: vec![ClassFile {
                name: "A".into(),
                bytes: vec![0xca, 0xfe, 0xba, 0xbe]
            }]
        })
    );
    // Another component's, undecodable, too big, too many: denied unread.
    let big = "A".repeat(usize::try_from(bounds.class_batch_bytes).unwrap() / 3 * 4 + 8);
    let many = vec![r#"{"name":"A","bytes":""}"#; 100].join(",");
    for (seq, batch) in [
        (
            2,
            r#"{"event":"classes","seq":2,"id":"b","classes":[]}"#.to_string(),
        ),
        (
            3,
            r#"{"event":"classes","seq":3,"id":"a","classes":[{"name":"A","bytes":"!"}]}"#.into(),
        ),
        (
            4,
            format!(
                r#"{{"event":"classes","seq":4,"id":"a","classes":[{{"name":"A","bytes":"{big}"}}]}}"#
            ),
        ),
        (
            5,
            format!(r#"{{"event":"classes","seq":5,"id":"a","classes":[{many}]}}"#),
        ),
    ] {
        assert_eq!(t.event(ev(&batch)), Some(Step::Deny { seq }), "{seq}");
    }
    for seq in 6..bounds.class_batches + 10 {
        let step = t.event(ev(&format!(
            r#"{{"event":"classes","seq":{seq},"id":"a","classes":[]}}"#
        )));
        assert_eq!(
            matches!(step, Some(Step::Deny { .. })),
            seq > bounds.class_batches + 1,
            "{seq}"
        );
    }
    // Without vetting, a batch is nobody's business.
    let mut t = Translator::new(&cs, bounds, false);
    t.event(ev(r#"{"event":"start","id":"a"}"#));
    assert_eq!(
        t.event(ev(r#"{"event":"classes","seq":1,"id":"a","classes":[]}"#)),
        None
    );
    assert_eq!(t.drops().class_batches, 1);
}

#[test]
fn bounds_follow_the_request() {
    let one = Bounds::for_request(&components(&["a"]), &Limits::default());
    // Python writes output in events of 64 KiB (87 424 bytes in base64).
    assert!(one.framing.line_bytes >= 87_424 + 100);
    assert!(one.framing.line_bytes as u64 >= base64_len(Limits::default().output_bytes));
    assert!(one.queue as u64 * one.framing.line_bytes as u64 <= QUEUE_BYTES);
    assert!(one.framing.channel_bytes < 128 << 20, "{one:?}");
    let many = Bounds::new(1 << 20, 64, 1 << 20, 100);
    assert!(many.records > one.records && many.class_bytes > one.class_bytes);
    assert!(many.framing.line_bytes > one.framing.line_bytes);
    let huge = Bounds::new(u64::MAX, usize::MAX, u64::MAX, u64::MAX);
    assert_eq!(huge.queue, 2);
}

/// xorshift64*, so that the generated inputs are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A channel as a hostile snippet might write it: valid events with real, forged and
/// huge ids, garbage, long lines, stray newlines, broken JSON, bad base64.
fn hostile_channel(rng: &mut Rng, ids: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    let events = rng.below(100);
    for _ in 0..events {
        let id = match rng.below(4) {
            0 => "x".repeat(rng.below(5000) as usize),
            1 => "forged".into(),
            _ => rng.pick(ids).into(),
        };
        let text = "t".repeat(rng.below(3000) as usize);
        let line = match rng.below(16) {
            0 => format!(r#"{{"event":"start","id":"{id}"}}"#),
            1 => format!(r#"{{"event":"value","id":"{id}","repr":"{text}"}}"#),
            2 => format!(
                r#"{{"event":"syntax_error","id":"{id}","type":"K","message":"{text}","line":{},"start":{},"end":{}}}"#,
                rng.next() as u32,
                rng.next(),
                rng.next()
            ),
            3 => format!(
                r#"{{"event":"exception","id":"{id}","type":"E","message":"{text}","traceback":"{text}","line":null}}"#
            ),
            4 => format!(r#"{{"event":"violation","id":"{id}","reference":"r","message":"{text}"}}"#),
            5 => format!(r#"{{"event":"internal","message":"{text}"}}"#),
            6 => format!(
                r#"{{"event":"output","stream":"{}","data":"{}"}}"#,
                rng.pick(&["stdout", "stderr", "other"]),
                rng.pick(&["aGVsbG8K", "", "!!!", "QUFBQQ=="]).repeat(rng.below(500) as usize)
            ),
            7 => format!(
                r#"{{"event":"classes","seq":{},"id":"{id}","classes":[{{"name":"{text}","bytes":"{}"}}]}}"#,
                rng.next(),
                rng.pick(&["yv66vg==", "", "%%"])
            ),
            8 => rng
                .pick(&[
                    r#"{"event":"done"}"#,
                    r#"{"event":"end","id":"a","ok":true}"#,
                    r#"{"event":"memory_limit"}"#,
                    r#"{"event":"ready"}"#,
                    r#"{"event":"exit"}"#,
                    "{",
                    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
                    r#"{"event":"value"}"#,
                    r#"{"event":"start","id":1}"#,
                    "\u{0}\u{1}\u{ff}",
                ])
                .into(),
            9 => String::from_utf8_lossy(
                &(0..rng.below(300)).map(|_| rng.next() as u8).collect::<Vec<_>>(),
            )
            .into_owned(),
            10 if rng.below(8) == 0 => "L".repeat(rng.below(2_000_000) as usize),
            10 => "L".repeat(rng.below(20_000) as usize),
            _ => format!(r#"{{"event":"start","id":"{}"}}"#, rng.pick(ids)),
        };
        out.extend(line.as_bytes());
        if rng.below(20) != 0 {
            out.push(b'\n');
        }
        if rng.below(30) == 0 {
            out.extend((0..rng.below(100)).map(|_| rng.next() as u8));
        }
    }
    out
}

/// Bounds tight enough that hostile channels go over every one of them.
fn tight(components: &[Component]) -> Bounds {
    let mut b = Bounds::for_request(components, &Limits::default());
    b.framing = framing(4000, 60_000, 80);
    b.output_bytes = 300;
    b.records = 12;
    b.record_bytes = 6000;
    b.class_batches = 3;
    b
}

#[test]
fn hostile_channels_stay_within_their_bounds() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let ids = ["a", "b", "c"];
    let cs = components(&ids);
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for round in 0..300 {
        let bounds = match round % 4 {
            0 => tight(&cs),
            r => Bounds::for_request(
                &cs,
                &Limits {
                    output_bytes: [10, 1000, 1 << 20][r - 1],
                    ..Limits::default()
                },
            ),
        };
        let data = hostile_channel(&mut rng, &ids);
        let whole = check_channel(&cs, bounds, &data, || usize::MAX);
        let mut cut_rng = Rng(round as u64 + 1);
        let cut = check_channel(&cs, bounds, &data, || cut_rng.below(70_000) as usize + 1);
        // Framing does not depend on how the channel is cut.
        assert_eq!(whole, cut, "round {round}");
        for o in &whole {
            let kind = match o {
                Output::Internal { message, .. }
                    if message.starts_with("the driver's events exceeded") =>
                {
                    if message.contains("everything after") {
                        *seen.entry("over budget").or_default() += 1;
                    }
                    if message.contains("longer than") {
                        *seen.entry("overlong").or_default() += 1;
                    }
                    "report"
                }
                Output::Started { .. } => "started",
                Output::Stdout { .. } | Output::Stderr { .. } => "output",
                Output::Value { .. } => "value",
                Output::Diagnostic { .. } => "diagnostic",
                Output::Exception { .. } => "exception",
                Output::Violation { .. } => "violation",
                Output::Internal { .. } => "internal",
            };
            *seen.entry(kind).or_default() += 1;
        }
    }
    // The generator reaches every path.
    for kind in [
        "report",
        "over budget",
        "overlong",
        "started",
        "output",
        "value",
        "diagnostic",
        "exception",
        "violation",
        "internal",
    ] {
        assert!(seen.get(kind).is_some_and(|&n| n > 3), "{kind}: {seen:?}");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    let cs = components(&["a"]);
    for round in 0..3000 {
        let len = rng.below(4096) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| match rng.below(8) {
                0 => b'\n',
                1 => b'"',
                2 => b'{',
                _ => rng.next() as u8,
            })
            .collect();
        let bounds = if round % 2 == 0 {
            tight(&cs)
        } else {
            Bounds::for_request(&cs, &Limits::default())
        };
        check_channel(&cs, bounds, &data, || rng.below(100) as usize + 1);
    }
}

/// The name of an event as the protocol spells it (exhaustive: a new event kind
/// does not compile until it is named here and specified in PROTOCOL.md).
fn protocol_name(e: &DriverEvent) -> &'static str {
    match e {
        DriverEvent::Start { .. } => "start",
        DriverEvent::Output { .. } => "output",
        DriverEvent::Value { .. } => "value",
        DriverEvent::SyntaxError { .. } => "syntax_error",
        DriverEvent::Exception { .. } => "exception",
        DriverEvent::Violation { .. } => "violation",
        DriverEvent::Classes { .. } => "classes",
        DriverEvent::Invoke { .. } => "invoke",
        DriverEvent::Lines { .. } => "lines",
        DriverEvent::MemoryLimit {} => "memory_limit",
        DriverEvent::Ready {} => "ready",
        DriverEvent::Exit {} => "exit",
        DriverEvent::End {} => "end",
        DriverEvent::Done {} => "done",
        DriverEvent::Internal { .. } => "internal",
    }
}

const PROTOCOL: &str = include_str!("../drivers/PROTOCOL.md");

/// The bodies of PROTOCOL.md's code blocks tagged `json TAG`.
fn protocol_examples(tag: &str) -> Vec<&'static str> {
    let open = format!("```json {tag}\n");
    let mut found = Vec::new();
    let mut rest = PROTOCOL;
    while let Some(at) = rest.find(&open) {
        let body = &rest[at + open.len()..];
        let end = body
            .find("\n```")
            .expect("an unclosed example in PROTOCOL.md");
        found.push(&body[..end]);
        rest = &body[end..];
    }
    found
}

#[test]
fn protocol_examples_parse() {
    // Every event example of the specification is read by the supervisor as the event
    // it names, and every event the supervisor reads has an example.
    let all = [
        "start",
        "output",
        "value",
        "syntax_error",
        "exception",
        "violation",
        "classes",
        "invoke",
        "lines",
        "memory_limit",
        "ready",
        "exit",
        "end",
        "done",
        "internal",
    ];
    let mut seen = std::collections::BTreeSet::new();
    for example in protocol_examples("event") {
        let event: DriverEvent = serde_json::from_str(example)
            .unwrap_or_else(|e| panic!("PROTOCOL.md example {example}: {e}"));
        let named: serde_json::Value = serde_json::from_str(example).unwrap();
        assert_eq!(named["event"], protocol_name(&event), "{example}");
        seen.insert(protocol_name(&event));
    }
    assert_eq!(seen, all.into_iter().collect(), "events without an example");
    // What the drivers write is specified.
    let java = include_str!("../drivers/JShellDriver.java");
    let python = include_str!("../drivers/python_driver.py");
    for (driver, source, marker) in [
        ("JShellDriver.java", java, "\\\"event\\\":\\\""),
        ("python_driver.py", python, "\"event\": \""),
        ("python_driver.py", python, "\"event\":\""),
    ] {
        for piece in source.split(marker).skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                all.contains(&name.as_str()),
                "{driver} writes event {name:?}, which PROTOCOL.md does not specify"
            );
        }
    }
}

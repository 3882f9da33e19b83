//! The jsheets SnippetRuntime protocol and its backwards-compatible extensions.
//!
//! The `.proto` sources live in `proto/proto/jsheets/api/`. Generated code is
//! in [`jsheets`]: messages, the `snippet_runtime_client` and the
//! `snippet_runtime_server` modules.

/// Generated messages and gRPC client/server for protobuf package `jsheets`.
#[allow(
    missing_debug_implementations,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used
)]
pub mod jsheets {
    tonic::include_proto!("jsheets");
}

/// Encoded `google.protobuf.FileDescriptorSet` of the jsheets protos and their
/// imports, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("jsheets_descriptor");

#[cfg(test)]
mod tests {
    use super::jsheets::{
        completion, evaluate_request, snippet, snippet_sources, Completion, EvaluateRequest,
        EvaluateResponse, EvaluatedSnippet, Limits, SnippetSources, StartEvaluationRequest,
    };
    use prost::Message;

    /// Reads a protobuf varint at `*pos`, advancing `*pos`.
    fn varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = buf[*pos];
            *pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }

    /// Splits an encoded message into its top-level `(field number, wire type,
    /// payload)` entries; the payload of a varint field is its encoding.
    fn fields(buf: &[u8]) -> Vec<(u64, u8, &[u8])> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let key = varint(buf, &mut pos);
            let (number, wire) = (key >> 3, (key & 7) as u8);
            let start = pos;
            let payload = match wire {
                0 => {
                    varint(buf, &mut pos);
                    &buf[start..pos]
                }
                2 => {
                    let len = usize::try_from(varint(buf, &mut pos)).unwrap();
                    let data = &buf[pos..pos + len];
                    pos += len;
                    data
                }
                other => panic!("unexpected wire type {other}"),
            };
            out.push((number, wire, payload));
        }
        out
    }

    fn reference() -> snippet::Reference {
        snippet::Reference {
            sheet_id: "sheet".into(),
            snippet_id: "snip".into(),
        }
    }

    /// A start request as a jsheets backend builds it (no extensions).
    fn jsheets_start() -> StartEvaluationRequest {
        StartEvaluationRequest {
            snippet: Some(EvaluatedSnippet {
                reference: Some(reference()),
                hash: "h".into(),
                dependencies: vec![],
            }),
            sources: vec![SnippetSources {
                reference: Some(reference()),
                hash: "h".into(),
                code_components: vec![snippet_sources::CodeComponent {
                    id: "c1".into(),
                    order: 7,
                    code: "1 + 1".into(),
                }],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn start_request_with_extensions_round_trips_with_jsheets_numbers() {
        let request = StartEvaluationRequest {
            runtime: "java-21".into(),
            limits: Some(Limits {
                wall_time_ms: 5_000,
                cpu_time_ms: 2_000,
                memory_bytes: 64 << 20,
                max_processes: 32,
                output_bytes: 1 << 20,
            }),
            stdin: b"input\n".to_vec(),
            ..jsheets_start()
        };
        let bytes = request.encode_to_vec();
        assert_eq!(StartEvaluationRequest::decode(&bytes[..]).unwrap(), request);

        // Top level: snippet = 1 (tag 0x0a), sources = 2 (tag 0x12), then the
        // extensions runtime = 3, limits = 4, stdin = 5.
        assert_eq!(bytes[0], 0x0a);
        let top = fields(&bytes);
        let numbers: Vec<_> = top.iter().map(|&(n, w, _)| (n, w)).collect();
        assert_eq!(numbers, [(1, 2), (2, 2), (3, 2), (4, 2), (5, 2)]);
        assert_eq!(top[2].2, b"java-21");
        assert_eq!(top[4].2, b"input\n");
        // The snippet is short, so its length is a single byte after tag 0x0a.
        assert_eq!(bytes[2 + top[0].2.len()], 0x12);

        // EvaluatedSnippet: reference = 1, hash = 2.
        let snippet: Vec<_> = fields(top[0].2).iter().map(|&(n, _, _)| n).collect();
        assert_eq!(snippet, [1, 2]);
        // Snippet.Reference: sheet_id = 1, snippet_id = 2.
        let reference = fields(fields(top[0].2)[0].2);
        assert_eq!((reference[0].0, reference[0].2), (1, &b"sheet"[..]));
        assert_eq!((reference[1].0, reference[1].2), (2, &b"snip"[..]));

        // SnippetSources: reference = 1, hash = 2, code_components = 3.
        let sources = fields(top[1].2);
        let numbers: Vec<_> = sources.iter().map(|&(n, _, _)| n).collect();
        assert_eq!(numbers, [1, 2, 3]);
        // CodeComponent: id = 1, order = 2 (varint, tag 0x10), code = 3.
        let component = sources[2].2;
        assert_eq!(component, b"\x0a\x02c1\x10\x07\x1a\x051 + 1");
        let component = fields(component);
        assert_eq!(
            (component[1].0, component[1].1, component[1].2),
            (2, 0, &[7u8][..])
        );

        // Limits: wall_time_ms = 1 .. output_bytes = 5, all varints.
        let limits: Vec<_> = fields(top[3].2).iter().map(|&(n, w, _)| (n, w)).collect();
        assert_eq!(limits, [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]);

        // EvaluateRequest: start = 1, stop = 2.
        let start = EvaluateRequest {
            message: Some(evaluate_request::Message::Start(request)),
        };
        assert_eq!(start.encode_to_vec()[0], 0x0a);
        let stop = EvaluateRequest {
            message: Some(evaluate_request::Message::Stop(Default::default())),
        };
        assert_eq!(stop.encode_to_vec(), [0x12, 0x00]);
    }

    #[test]
    fn completion_is_field_5_of_evaluate_response() {
        let response = EvaluateResponse {
            completion: Some(Completion {
                status: completion::Status::WallTimeout.into(),
                evaluation_id: "e1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = response.encode_to_vec();
        assert_eq!(bytes[0], 0x2a);
        let completion = fields(fields(&bytes)[0].2);
        // status = 1 (WALL_TIMEOUT = 4), evaluation_id = 10 (tag 0x52).
        assert_eq!((completion[0].0, completion[0].2), (1, &[4u8][..]));
        assert_eq!((completion[1].0, completion[1].2), (10, &b"e1"[..]));
        assert_eq!(EvaluateResponse::decode(&bytes[..]).unwrap(), response);
    }

    #[test]
    fn old_style_request_without_extensions_decodes() {
        // Bytes as a jsheets client writes them: only fields 1 and 2 exist.
        let component = b"\x0a\x02c1\x10\x07\x1a\x051 + 1";
        let reference = b"\x0a\x05sheet\x12\x04snip";
        let mut sources = vec![0x0a, reference.len() as u8];
        sources.extend_from_slice(reference);
        sources.extend_from_slice(b"\x12\x01h");
        sources.extend_from_slice(&[0x1a, component.len() as u8]);
        sources.extend_from_slice(component);
        let mut snippet = vec![0x0a, reference.len() as u8];
        snippet.extend_from_slice(reference);
        snippet.extend_from_slice(b"\x12\x01h");
        let mut start = vec![0x0a, snippet.len() as u8];
        start.extend_from_slice(&snippet);
        start.extend_from_slice(&[0x12, sources.len() as u8]);
        start.extend_from_slice(&sources);
        let mut request = vec![0x0a, start.len() as u8];
        request.extend_from_slice(&start);

        let decoded = EvaluateRequest::decode(&request[..]).unwrap();
        let Some(evaluate_request::Message::Start(start)) = decoded.message else {
            panic!("expected start, got {decoded:?}");
        };
        assert_eq!(start, jsheets_start());
        assert!(start.runtime.is_empty());
        assert!(start.limits.is_none());
        assert!(start.stdin.is_empty());
        // And the old shape encodes back to the same bytes.
        assert_eq!(
            EvaluateRequest {
                message: Some(evaluate_request::Message::Start(start)),
            }
            .encode_to_vec(),
            request
        );
    }

    #[test]
    fn descriptor_set_describes_the_service() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<_> = set.file.iter().map(|f| f.name()).collect();
        for name in [
            "google/protobuf/timestamp.proto",
            "jsheets/api/snippet.proto",
            "jsheets/api/sheet.proto",
            "jsheets/api/snippet_runtime.proto",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let runtime = set
            .file
            .iter()
            .find(|f| f.name() == "jsheets/api/snippet_runtime.proto")
            .unwrap();
        assert_eq!(runtime.package(), "jsheets");
        let service = &runtime.service[0];
        assert_eq!(service.name(), "SnippetRuntime");
        let methods: Vec<_> = service.method.iter().map(|m| m.name()).collect();
        assert_eq!(methods, ["Evaluate", "ListRuntimes"]);
    }
}

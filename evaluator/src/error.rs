//! An error and its causes on one line: the workspace's one formatting of an error chain.

/// `error: cause: cause's cause`, for a log line or an outcome's text; typed errors carry
/// their causes as `source()` until they are shown.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

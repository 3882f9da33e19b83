//! A runtime described for people (`runtime info`).
//!
//! This is the CLI's formatting, not the model's: it belongs in runtime-service's CLI
//! and moves there once that crate's restructuring is done.

use super::Runtime;

impl Runtime {
    /// Human-readable summary for `runtime info`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "name: {}\nversion: {}\nlanguage: {}\ndescription: {}\nevaluator: {} ({})\ndirectory: {}\n",
            self.name(),
            self.version(),
            self.language(),
            self.description(),
            self.evaluator().kind,
            self.evaluator().program,
            self.dir().display()
        );
        if let Some(list) = self.access_list() {
            s.push_str(&format!("access list: {list}\n"));
        }
        s.push_str("mounts (read-only):\n");
        for m in self.mounts() {
            s.push_str(&format!(
                "  {} -> {}\n",
                m.source.display(),
                m.target.display()
            ));
        }
        s.push_str("environment:\n");
        for (k, v) in self.environment() {
            s.push_str(&format!("  {k}={v}\n"));
        }
        if !self.packages().is_empty() {
            s.push_str(&format!("packages: {}\n", self.packages().join(", ")));
        }
        s
    }
}

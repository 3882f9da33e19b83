//! The sandbox helper as a standalone program (the service binary embeds the same
//! code behind a hidden subcommand). Started by the supervisor only.

fn main() {
    evaluator::sandbox::helper_main()
}

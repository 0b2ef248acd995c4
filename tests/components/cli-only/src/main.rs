//! A command component (`wasi:cli/run` only): a valid component with nothing Trellis can call,
//! used to test that hosts refuse it with a clear error.

fn main() {
    println!("this component only runs as a command");
}

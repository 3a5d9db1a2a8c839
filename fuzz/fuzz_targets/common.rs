//! Shared by the fuzz targets: the panic policy.
//!
//! libfuzzer-sys aborts on every panic, even one that is caught. The decoders in
//! `rust/decode.rs` run zune-jpeg, jpeg-decoder and zune-png under `catch_unwind` on
//! purpose (`guarded`), so a panic inside them is turned into an `Err` and never reaches
//! Python. The contract fuzzed here is therefore "no panic ESCAPES the public API":
//! `init` swaps libfuzzer's hook for one that only remembers the last panic, and `contract`
//! aborts (a crash for libFuzzer) when a panic gets out of the call, printing where it
//! came from.
//!
//! `FASTMASK_FUZZ_STRICT=1` keeps libfuzzer's abort-on-any-panic hook instead, to list
//! the panics that the guard swallows inside the third-party decoders.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

pub fn init() {
    if std::env::var_os("FASTMASK_FUZZ_STRICT").is_some_and(|v| v != "0") {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let bt = std::backtrace::Backtrace::capture();
        LAST_PANIC.with(|p| *p.borrow_mut() = format!("{info}\n{bt}"));
    }));
}

/// Run `f`; a panic that escapes it (from the library, or a failed invariant assert in the
/// target itself) is a bug: print it and abort, which libFuzzer reports as a crash.
pub fn contract<R>(what: &str, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            let msg = LAST_PANIC.with(|p| p.borrow().clone());
            eprintln!("\n=== fuzz target {what}: panic escaped the call or an invariant failed: {msg}");
            std::process::abort();
        }
    }
}
